"""Run by ``tests/test_multinode.py`` in a process of its own (it must not share the suite's Ray): a two-node Ray
cluster on loopback — a head and a worker node, one CPU each — and ``latentarc compress`` as a separate driver
joining it by its 127.0.0.1 address. Once the first parts are written the worker node is removed without grace
(its raylet and actors are killed); the run must still end. Then the same command with ``--retry-errors`` on the
cluster that is left. Prints one JSON line: both exit codes, how many parts existed at the kill, and the keys of
the rows and errors after the first run.

    python tests/multinode_scenario.py SRC TABLE WEIGHTS
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from ray.cluster_utils import Cluster

KILL_AT_PARTS = 3


def _accounting(table: str) -> dict:
    from latentarc.pipeline.table import BitstreamTable

    t = BitstreamTable(table)
    return {"rows": t.read(columns=["key"])["key"].to_pylist(), "errors": t.errors()["key"].to_pylist()}


def main(src: str, table: str, weights: str) -> int:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1",
                                                           "include_dashboard": False})
    try:
        worker = cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
        cluster.wait_for_nodes()
        address = cluster.address
        cmd = [sys.executable, "-m", "latentarc.jobs.cli", "compress", src, table, "--ray-address", address,
               "--weights", weights, "--rows-per-part", "1", "--no-progress"]
        first = subprocess.Popen(cmd)
        parts, deadline = 0, time.monotonic() + 300
        while parts < KILL_AT_PARTS and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
            parts = len(list((Path(table) / "data").glob("*.parquet")))
        cluster.remove_node(worker, allow_graceful=False)
        rc_first = first.wait(timeout=600)
        after_first = _accounting(table)
        rc_retry = subprocess.run(cmd + ["--retry-errors"], timeout=600).returncode
    finally:
        cluster.shutdown()
    print(json.dumps({"address": address, "parts_at_kill": parts, "rc_first": rc_first,
                      "rc_retry": rc_retry, "after_first": after_first}))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
