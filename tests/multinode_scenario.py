"""Run by ``tests/test_multinode.py`` in a process of its own (it must not share the suite's Ray): a two-node Ray
cluster on loopback — a head and a worker node, one CPU each — with ``latentarc compress`` and then
``latentarc restore`` as separate drivers joining it by its 127.0.0.1 address. In each, once the first outputs
exist, the worker node is removed without grace (its raylet and actors are killed) and the run must still end;
a fresh worker node joins between the two. Prints one JSON line: exit codes, how many outputs existed at each
kill, the table's row and error keys after the compress, and the restore's own summary.

    python tests/multinode_scenario.py SRC TABLE DST WEIGHTS
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from latentarc.pipeline.runtime import loopback_only

loopback_only()  # before ray is imported: the cluster's nodes name themselves 127.0.0.1

from ray.cluster_utils import Cluster  # noqa: E402

KILL_AT_PARTS = 3  # compress: committed-to-be parts written (one row each)
KILL_AT_FILES = 1  # restore: images written


def _accounting(table: str) -> dict:
    from latentarc.pipeline.table import BitstreamTable

    t = BitstreamTable(table)
    return {"rows": t.read(columns=["key"])["key"].to_pylist(), "errors": t.errors()["key"].to_pylist()}


def _run_and_kill(cluster: Cluster, node, cmd: list[str], outputs, at: int) -> tuple[int, int, str, list[str]]:
    """Start ``cmd``; once ``outputs()`` counts ``at`` files, remove ``node`` without grace. Returns the exit code,
    the count at the kill, the command's standard output and its retry-pass notices (standard error is passed on)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen, deadline = 0, time.monotonic() + 300
    while seen < at and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
        seen = outputs()
    t1 = time.monotonic()
    cluster.remove_node(node, allow_graceful=False)
    t2 = time.monotonic()
    out, err = proc.communicate(timeout=600)
    print(f"timing: to kill {t1 - t0:.1f} s, kill {t2 - t1:.1f} s, after {time.monotonic() - t2:.1f} s", file=sys.stderr)
    sys.stderr.write(err)
    return proc.returncode, seen, out, [line for line in err.splitlines() if "came back from no batch" in line]


def main(src: str, table: str, dst: str, weights: str) -> int:
    # the GCS declares a silent node dead after 3 missed 0.5 s health checks (Ray's default: 5 × 3 s), so the
    # scenario spends its time on the jobs, not on waiting for the verdict
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False,
        "_system_config": {"health_check_period_ms": 500, "health_check_timeout_ms": 500,
                           "health_check_failure_threshold": 3}})
    try:
        worker = cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
        cluster.wait_for_nodes()
        address = cluster.address
        cli = [sys.executable, "-m", "latentarc.jobs.cli"]
        common = ["--ray-address", address, "--weights", weights, "--no-progress"]
        rc_compress, parts, _, compress_retries = _run_and_kill(
            cluster, worker, [*cli, "compress", src, table, "--rows-per-part", "1", *common],
            lambda: len(list((Path(table) / "data").glob("*.parquet"))), KILL_AT_PARTS)
        after_compress = _accounting(table)
        worker = cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")  # a fresh node for the restore
        cluster.wait_for_nodes()
        rc_restore, files, restore_out, restore_retries = _run_and_kill(
            cluster, worker, [*cli, "restore", table, dst, *common],
            lambda: sum(1 for p in Path(dst).rglob("*.png")), KILL_AT_FILES)
    finally:
        cluster.shutdown()
    print(json.dumps({"address": address, "parts_at_kill": parts, "rc_compress": rc_compress,
                      "after_compress": after_compress, "files_at_kill": files, "rc_restore": rc_restore,
                      "restore_summary": [line for line in restore_out.splitlines() if line.startswith("restored ")],
                      "compress_retry_notices": compress_retries, "restore_retry_notices": restore_retries}))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
