"""Driver cost at archive scale: synthesise N source objects and a committed table of N rows, then measure the
driver's wall time and peak RSS for listing, ``pending``, a commit, and planning/reading a 1,000-key restore.

Only metadata is at scale (files of 0 bytes, 16-byte payloads): what grows with N on the driver is the listing,
the commit log and the table's key index, not the pixels. Each phase runs in a fresh Python process so its peak
RSS (``ru_maxrss``) is its own; ``baseline`` is that of a process that only imports the pipeline.

    python -m latentarc.jobs.bench_scale --objects 100000 1000000 --dir /tmp/scale [--rows-per-part 64]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

PHASES = ("baseline", "listing", "pending", "commit", "commit_replan", "restore_plan_1000", "restore_read_1000")


def _key(i: int) -> str:
    return f"d{i // 1000:04d}/f{i % 1000:04d}.png"


def synthesise(root: Path, n: int, rows_per_part: int, commits: int) -> None:
    """``root/src``: n empty files in folders of 1,000; ``root/table``: n rows over ``commits`` commits."""
    import pyarrow as pa

    from latentarc.pipeline.table.schema import TABLE_SCHEMA
    from latentarc.pipeline.table import BitstreamTable

    src = root / "src"
    for d in range((n + 999) // 1000):
        (src / f"d{d:04d}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        os.close(os.open(src / _key(i), os.O_CREAT | os.O_WRONLY, 0o644))
    table = BitstreamTable(str(root / "table"))
    per_commit = (n + commits - 1) // commits
    for c in range(commits):
        run = table.new_run_id()
        lo, hi = c * per_commit, min(n, (c + 1) * per_commit)
        parts = []
        for start in range(lo, hi, rows_per_part):
            idx = range(start, min(hi, start + rows_per_part))
            parts.append(table.write_part(run, "data", _rows(idx, src, run, pa, TABLE_SCHEMA)))
        table.commit(run, parts, [], rows=hi - lo, errors=0)


def _rows(idx: range, src: Path | None, run: str, pa, schema):
    """Rows of TABLE_SCHEMA for keys ``idx`` (ETags of the files under ``src`` when given, as a run records)."""
    import datetime as dt

    m = len(idx)
    keys = [_key(i) for i in idx]
    etags = [f"{os.stat(src / k).st_mtime_ns}-0" for k in keys] if src is not None else ["new"] * m
    cols = {
        "key": keys, "source_uri": [f"/src/{k}" for k in keys], "source_size": [0] * m,
        "source_sha256": ["0" * 64] * m, "width": [8] * m, "height": [8] * m, "mode": ["RGB"] * m,
        "codec": ["jxl"] * m, "format_version": [1] * m, "model_sha256": [None] * m, "params": ["{}"] * m,
        "payload": [os.urandom(16) for _ in range(m)], "payload_size": [16] * m, "payload_crc32c": [0] * m,
        "bpp": [2.0] * m, "psnr": [40.0] * m, "metadata": [None] * m,
        "encoded_at": [dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)] * m, "source_etag": etags,
        "ms_ssim": [None] * m, "run_id": [run] * m, "guarantee": ["lossy"] * m, "lpips": [None] * m,
        "dists": [None] * m,
    }
    # nullable columns not named here (newer schema versions) stay null
    return pa.table({f.name: pa.array(cols[f.name], f.type) if f.name in cols else pa.nulls(m, f.type)
                     for f in schema}, schema=schema)


def _phase(name: str, root: Path, n: int) -> dict:
    """Run one phase in this process; returns its wall seconds and what it produced."""
    from latentarc.pipeline.compress import pending
    from latentarc.pipeline.storage import list_source
    from latentarc.pipeline.table import BitstreamTable

    table = BitstreamTable(str(root / "table"))
    rng = random.Random(1)
    out: dict = {}
    if name == "listing":
        t = time.perf_counter()
        out["objects"] = len(list_source(str(root / "src")))
    elif name == "pending":
        listing = list_source(str(root / "src"))
        t = time.perf_counter()
        records = table.committed()
        todo, skipped = pending(listing, table, retry_errors=False, records=records)
        out.update(todo=len(todo), skipped=skipped)
    elif name in ("commit", "commit_replan"):
        import pyarrow as pa

        from latentarc.pipeline.table.schema import TABLE_SCHEMA

        run = table.new_run_id()
        replan = name == "commit_replan"
        # 1,000 new keys; the re-plan (run after "commit") writes the same keys again from a snapshot that
        # predates that commit, so it must find and drop all of them
        last = table.committed()[-1]
        base = last["seq"] - 1 if replan else last["seq"]
        idx = range(n + 10_000_000, n + 10_001_000)
        part = table.write_part(run, "data", _rows(idx, None, run, pa, TABLE_SCHEMA))
        t = time.perf_counter()
        done = table.commit(run, [part], [], rows=1000, errors=0, base=base)
        out.update(seq=done.seq, dropped=len(done.dropped_rows))
    elif name in ("restore_plan_1000", "restore_read_1000"):
        keys = [_key(i) for i in rng.sample(range(n), 1000)]
        t = time.perf_counter()
        if name == "restore_plan_1000":
            plan = table.plan(keys=keys)
            out.update(files=len(plan))
        else:
            out.update(rows=table.read(columns=["key", "payload"], keys=keys).num_rows)
    else:
        t = time.perf_counter()
    out["seconds"] = round(time.perf_counter() - t, 3)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--objects", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--dir", default="/tmp/latentarc-scale")
    ap.add_argument("--rows-per-part", type=int, default=64, help="rows per data file (the compress default: 64)")
    ap.add_argument("--commits", type=int, default=10, help="runs the synthetic table is committed in")
    ap.add_argument("--phase", nargs=3, metavar=("NAME", "ROOT", "N"), help=argparse.SUPPRESS)
    ap.add_argument("--json-out", metavar="FILE", help="also write the results as JSON here")


def run(args: argparse.Namespace) -> int:
    if args.phase:
        name, root, n = args.phase
        print(json.dumps(_phase(name, Path(root), int(n))))
        return 0
    results = []
    for n in args.objects:
        root = Path(args.dir) / f"n{n}"
        if not (root / "table" / "_commits").exists():
            t = time.perf_counter()
            synthesise(root, n, args.rows_per_part, args.commits)
            print(f"n={n}: synthesised in {time.perf_counter() - t:.0f} s", flush=True)
        for name in PHASES:
            cmd = [sys.executable, "-m", "latentarc.jobs.bench_scale", "--phase", name, str(root), str(n)]
            got = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            got.update(objects=n, phase=name)
            results.append(got)
            print(json.dumps(got), flush=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="latentarc bench-scale", description=__doc__.split("\n")[0])
    add_arguments(ap)
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
