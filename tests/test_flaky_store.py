"""Compress and restore through a flaky object store (tests/faulty_s3.py in front of moto, all on 127.0.0.1).

The product's default S3 retries (pipeline/storage.py: botocore "standard" mode, backoff with jitter, plus
s3fs's own) must carry a run through throttling, 5xx answers, connection resets (also after the store acted)
and slow answers on reads, writes and listings. Whatever still fails must become an error row for its object:
every input ends as exactly one row or one error, nothing lost, nothing duplicated.
"""

from __future__ import annotations


import pytest
import s3fs
from PIL import Image

from latentarc.pipeline.compress import CompressOptions, run_compress
from latentarc.pipeline.restore import run_restore
from latentarc.pipeline.storage import S3_RETRIES, open_fs
from latentarc.pipeline.table import BitstreamTable

from .conftest import photo_png
from .faulty_s3 import FaultyS3

pytestmark = [pytest.mark.usefixtures("ray_cluster"), pytest.mark.shared("models", "photos")]

_READS = {"slowdown": 0.04, "error500": 0.04, "reset": 0.03, "reset_after": 0.02, "slow": 0.03}
RATES = {"read": _READS, "list": _READS,
         "write": {"slowdown": 0.08, "error500": 0.08, "reset": 0.06, "reset_after": 0.06, "slow": 0.04}}


@pytest.fixture
def flaky(s3):
    """``(proxy, storage options through it)``; the proxy fronts the session's moto server."""
    with FaultyS3(s3["endpoint_url"], RATES, seed=23) as proxy:
        yield proxy, {**s3, "endpoint_url": proxy.endpoint_url}


def _retries(fs) -> tuple[str, int]:
    """(mode, retries after the first try); botocore rewrites max_attempts as total_max_attempts in place."""
    r = fs.config_kwargs["retries"]
    return r["mode"], r["max_attempts"] if "max_attempts" in r else r["total_max_attempts"] - 1


def test_s3_retry_defaults_and_overrides(s3):
    fs, _ = open_fs("s3://any", s3)
    fs.ls("")  # the client exists: botocore has seen the config
    assert _retries(fs) == (S3_RETRIES["mode"], S3_RETRIES["max_attempts"]) == ("standard", 10)
    mine = {"retries": {"mode": "adaptive", "max_attempts": 3}, "connect_timeout": 7}
    fs, _ = open_fs("s3://any", {**s3, "config_kwargs": mine})
    fs.ls("")
    assert _retries(fs) == ("adaptive", 3) and fs.config_kwargs["connect_timeout"] == 7
    assert mine == {"retries": {"mode": "adaptive", "max_attempts": 3}, "connect_timeout": 7}  # left as given
    assert S3_RETRIES == {"mode": "standard", "max_attempts": 10}


def test_commit_whose_answer_was_lost_counts_once(bucket, flaky):
    """The store takes the commit record's conditional PUT but the answer is lost: the retried PUT meets the
    record it created (412), and the commit recognises it as its own instead of claiming a second number."""
    from latentarc.pipeline.table.schema import TABLE_SCHEMA, rows_to_table

    from .test_concurrency import _row

    proxy, options = flaky
    proxy.enabled = False  # only the planned fault
    table = BitstreamTable(f"{bucket}/lost", options)
    run = table.new_run_id()
    part = table.write_part(run, "data", rows_to_table([_row("k.png", run)], TABLE_SCHEMA))
    proxy.lose_answer_once.add("/lost/_commits/00000000000000000001.json")
    done = table.commit(run, [part], [], rows=1, errors=0)
    assert proxy.stats[("write", "reset_after")] == 1 and not proxy.lose_answer_once
    assert done.seq == 1 and [r["run_id"] for r in table.committed()] == [run]
    assert table.read(columns=["key"])["key"].to_pylist() == ["k.png"]


def test_compress_and_restore_through_a_flaky_store(bucket, s3, flaky, tmp_path):
    proxy, options = flaky
    direct = s3fs.S3FileSystem(**s3, use_listings_cache=False, skip_instance_cache=True)
    src = f"{bucket}/incoming"
    sources = {f"p{i}.png": photo_png(i, 64) for i in range(4)}
    sources["broken.png"] = photo_png(5, 64)[:200]  # fails on its own: must end as an error row, not vanish
    sources["denied.png"] = photo_png(6, 64)  # the store refuses it every time (403): no retry helps
    proxy.denied.add("/incoming/denied.png")
    # beside the random draw: every fault and request class at least once, and the commit's answer lost
    proxy.first = {"list": ["slowdown", "slow"], "read": ["reset", "error500", "slow"], "write": ["error500", "reset"]}
    proxy.lose_answer_once.add("/archive/_commits/00000000000000000001.json")
    for key, data in sources.items():
        direct.pipe_file(f"{direct._strip_protocol(src)}/{key}", data)
    table_uri = f"{bucket}/archive"
    opts = CompressOptions(codec="jxl", quality=80, workers=1, ms_ssim=False, rows_per_part=2)

    report = run_compress(src, table_uri, opts, source_options=options, table_options=options)
    restored = run_restore(table_uri, str(tmp_path / "out"), table_options=options, workers=1)
    proxy.enabled = False  # judge the outcome through a clean connection

    table = BitstreamTable(table_uri, options)
    rows = table.read(columns=["key"])["key"].to_pylist()
    errors = table.errors()["key"].to_pylist()
    got = rows + errors
    counts = {"inputs": len(sources), "rows": len(rows), "errors": len(errors),
              "lost": len(set(sources) - set(got)), "duplicated": len(got) - len(set(got))}
    faults = {f: proxy.faults(f) for f in ("slowdown", "error500", "reset", "reset_after", "slow")}
    ops = ("read", "write", "list")
    by_op = {op: sum(n for (o, f), n in proxy.stats.items() if o == op and f != "ok") for op in ops}
    requests = {op: sum(n for (o, _), n in proxy.stats.items() if o == op) for op in ops}
    print("flaky store:", counts, "faults:", faults, "by operation:", by_op,
          "requests:", requests, "restored:", restored.restored, "restore failures:",
          len(restored.failures))
    assert counts["lost"] == 0 and counts["duplicated"] == 0 and set(got) == set(sources)
    assert report["rows"] == len(rows) and report["errors"] == len(errors)
    stages = dict(zip(table.errors()["key"].to_pylist(), table.errors()["stage"].to_pylist()))
    assert stages["broken.png"] == "decode" and stages["denied.png"] == "read"
    assert len(table.committed()) == 1  # one commit, however many times its PUT was retried
    # the faults were real and hit every kind of request
    assert all(faults.values()), faults
    assert all(by_op.values()), by_op
    # restore: every current row restored or reported, none lost
    assert restored.restored + len(restored.failures) == len(rows)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        k for k in rows if k not in {f["key"] for f in restored.failures})
    for key in rows:
        if key not in {f["key"] for f in restored.failures}:
            assert Image.open(tmp_path / "out" / key).size == (64, 64)
