"""Concurrent writers of one table: optimistic commits with an exclusive create of the numbered commit record.

Real races, locally and on S3 (moto on 127.0.0.1): many writers committing at once through the table API, and
two real compress runs (threads of this process on the session Ray cluster) that both plan before either
commits (a barrier in ``before_commit``), over disjoint and over overlapping sources, while a reader polls.
Afterwards: no committed row lost, no key with two current rows, every reader snapshot a whole prefix of the log.
"""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from latentarc.pipeline.compress import CompressOptions, pending, run_compress
from latentarc.pipeline.table.schema import TABLE_SCHEMA, rows_to_table
from latentarc.pipeline.storage import list_source, open_fs, write_bytes_exclusive
from latentarc.pipeline.table import BitstreamTable

from .conftest import photo_png

pytestmark = [pytest.mark.usefixtures("ray_cluster"), pytest.mark.shared("models", "photos")]


@pytest.fixture(params=["local", "s3"])
def where(request, tmp_path):
    """``(table uri, storage options)`` on a local folder or on a fresh moto bucket."""
    if request.param == "local":
        return str(tmp_path / "table"), None
    bucket, s3 = request.getfixturevalue("bucket"), request.getfixturevalue("s3")
    return f"{bucket}/table", s3


def _row(key: str, run_id: str) -> dict:
    return dict(key=key, source_uri=f"/src/{key}", source_size=10, source_sha256="00" * 32, width=8, height=8,
                mode="RGB", codec="jxl", format_version=1, model_sha256=None, params="{}", payload=b"\x01",
                payload_size=1, payload_crc32c=0, bpp=0.1, psnr=40.0, metadata=None,
                encoded_at=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), source_etag=f"etag-{key}",
                ms_ssim=None, run_id=run_id)


class Reader(threading.Thread):
    """Reads ``(key, run_id)`` of the current rows in a loop until stopped; keeps every snapshot."""

    def __init__(self, uri: str, options: dict | None, pause: float = 0.1):
        super().__init__(daemon=True)
        self.pause = pause
        self.table = BitstreamTable(uri, options)
        self.stop = threading.Event()
        self.snapshots: list[dict[str, str]] = []
        self.failure: BaseException | None = None

    def run(self):
        try:
            while not self.stop.is_set():
                t = self.table.read(columns=["key", "run_id"])
                self.snapshots.append(dict(zip(t["key"].to_pylist(), t["run_id"].to_pylist())))
                self.stop.wait(self.pause)
        except BaseException as e:  # noqa: BLE001 - reported by check()
            self.failure = e

    def check(self, table: BitstreamTable) -> None:
        """Every snapshot equals the final rows of the first n commits, for some n (no half commit seen)."""
        assert self.failure is None, self.failure
        final = dict(zip(*table.read(columns=["key", "run_id"]).to_pydict().values()))
        order = [rec["run_id"] for rec in table.committed()]
        prefixes = [{k: r for k, r in final.items() if r in order[:n]} for n in range(len(order) + 1)]
        for snap in self.snapshots:
            assert snap in prefixes, f"a reader saw a state that is no prefix of the commit log: {snap}"


def _accounting(table: BitstreamTable, inputs: set[str]) -> dict:
    rows = table.read(columns=["key"])["key"].to_pylist()
    errors = table.errors()["key"].to_pylist()
    got = rows + errors
    return {"inputs": len(inputs), "rows": len(rows), "errors": len(errors),
            "lost": len(inputs - set(got)), "duplicated": len(got) - len(set(got)), "foreign": len(set(got) - inputs)}


# --- the primitive --------------------------------------------------------------------------------------------
def test_exclusive_create_refuses_an_existing_record(where):
    uri, options = where
    fs, root = open_fs(uri, options)
    path = f"{root}/_commits/00000000000000000001.json"
    write_bytes_exclusive(fs, path, b"first")
    with pytest.raises(FileExistsError):
        write_bytes_exclusive(fs, path, b"second")
    assert fs.cat_file(path) == b"first"
    assert [p.rsplit("/", 1)[1] for p in fs.ls(f"{root}/_commits", detail=False)] == ["00000000000000000001.json"]


# --- many writers through the table API -----------------------------------------------------------------------
def test_racing_commits_get_distinct_numbers_and_first_committer_wins(where):
    """6 writers plan against the same snapshot and commit at once, 2 rounds. Each writes 3 keys of its own and
    one key every writer of the round shares."""
    uri, options = where
    reader = Reader(uri, options)
    reader.start()
    inputs: set[str] = set()
    retries = 0
    try:
        for rnd in range(2):
            n = 6
            barrier = threading.Barrier(n, timeout=60)
            results, failures = {}, []
            base = len(BitstreamTable(uri, options).committed())

            def writer(i: int):
                try:
                    t = BitstreamTable(uri, options)
                    run = t.new_run_id()
                    keys = [f"r{rnd}/w{i}/{j}.png" for j in range(3)] + [f"r{rnd}/shared.png"]
                    part = t.write_part(run, "data", rows_to_table([_row(k, run) for k in keys], TABLE_SCHEMA))
                    barrier.wait()
                    results[run] = t.commit(run, [part], [], rows=len(keys), errors=0, base=base)
                except BaseException as e:  # noqa: BLE001 - asserted below
                    failures.append(e)
                    barrier.abort()

            threads = [threading.Thread(target=writer, args=(i,)) for i in range(n)]
            for th in threads:
                th.start()
            for th in threads:
                th.join(60)
            assert not failures, failures
            inputs |= {f"r{rnd}/w{i}/{j}.png" for i in range(n) for j in range(3)} | {f"r{rnd}/shared.png"}
            seqs = sorted(r.seq for r in results.values())
            assert seqs == list(range(base + 1, base + n + 1))  # no number claimed twice, none skipped
            first = min(results, key=lambda run: results[run].seq)
            assert results[first].dropped_rows == []
            assert all(r.dropped_rows == [f"r{rnd}/shared.png"] for run, r in results.items() if run != first)
            table = BitstreamTable(uri, options)
            assert table.read(keys=[f"r{rnd}/shared.png"], columns=["run_id"])["run_id"].to_pylist() == [first]
            retries += sum(r.attempts - 1 for r in results.values())
    finally:
        reader.stop.set()
        reader.join(30)
    table = BitstreamTable(uri, options)
    counts = _accounting(table, inputs)
    print("racing commits:", counts, "lost races retried:", retries, "reader snapshots:", len(reader.snapshots))
    assert counts == {"inputs": 2 * 19, "rows": 2 * 19, "errors": 0, "lost": 0, "duplicated": 0, "foreign": 0}
    assert sum(rec["rows"] for rec in table.committed()) == 2 * 19  # records count what they made current
    assert table.orphans() == []  # rewritten parts replaced their originals
    assert retries > 0, "no writer ever lost the race for a number: the test did not race"
    reader.check(table)


# --- two real compress runs at once ----------------------------------------------------------------------------
def _sources(tmp_path, where, overlap: bool) -> tuple[str, str, dict | None, set[str], set[str]]:
    """Two manifests over one pool of 6 images: 3 each, or 4 each sharing two objects with ``overlap``."""
    uri, options = where
    names = [f"x{i}.png" for i in range(6)]
    keys_a, keys_b = (names[:4], names[2:]) if overlap else (names[:3], names[3:])
    if options is None:
        pool = tmp_path / "pool"
        pool.mkdir()
        for i, k in enumerate(names):
            (pool / k).write_bytes(photo_png(i, 64))
        manifests = (tmp_path / "a.txt", tmp_path / "b.txt")
        for m, keys in zip(manifests, (keys_a, keys_b)):
            m.write_text("".join(f"{pool / k}\n" for k in keys))
        return str(manifests[0]), str(manifests[1]), None, set(keys_a), set(keys_b)
    fs, _ = open_fs(uri, options)
    bucket = uri.rsplit("/", 1)[0]
    root = fs._strip_protocol(bucket)
    for i, k in enumerate(names):
        fs.pipe_file(f"{root}/pool/{k}", photo_png(i, 64))
    for name, keys in (("a", keys_a), ("b", keys_b)):
        fs.pipe_file(f"{root}/{name}.txt", "".join(f"{bucket}/pool/{k}\n" for k in keys).encode())
    return f"{bucket}/a.txt", f"{bucket}/b.txt", options, set(keys_a), set(keys_b)


@pytest.mark.parametrize("overlap", [False, True], ids=["disjoint", "overlapping"])
def test_two_compress_runs_at_once(tmp_path, where, overlap):
    uri, options = where
    src_a, src_b, src_opts, keys_a, keys_b = _sources(tmp_path, where, overlap)
    barrier = threading.Barrier(2, timeout=120)  # both runs have planned before either commits
    reports, failures = {}, []

    def run(name: str, src: str):
        opts = CompressOptions(codec="jxl", quality=80, workers=1, ms_ssim=False,
                               before_commit=barrier.wait)
        try:
            reports[name] = run_compress(src, uri, opts, source_options=src_opts, table_options=options)
        except BaseException as e:  # noqa: BLE001 - asserted below
            failures.append(e)
            barrier.abort()

    reader = Reader(uri, options)
    reader.start()
    threads = [threading.Thread(target=run, args=("a", src_a)), threading.Thread(target=run, args=("b", src_b))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    reader.stop.set()
    reader.join(30)
    assert not failures, failures

    table = BitstreamTable(uri, options)
    inputs = keys_a | keys_b
    counts = _accounting(table, inputs)
    print(f"two compress runs ({'overlapping' if overlap else 'disjoint'}):", counts,
          "reader snapshots:", len(reader.snapshots),
          "run seconds:", [round(r["seconds"], 1) for r in reports.values()])
    assert counts == {"inputs": len(inputs), "rows": len(inputs), "errors": 0, "lost": 0, "duplicated": 0,
                      "foreign": 0}
    records = table.committed()
    assert [r["seq"] for r in records] == [1, 2]
    assert reports["a"]["rows"] + reports["b"]["rows"] == len(inputs)  # no row counted by both runs
    winner, loser = (reports[n] for n in sorted(reports, key=lambda n: [r["run_id"] for r in records]
                                                .index(reports[n]["run_id"])))
    shared = keys_a & keys_b
    assert winner.get("concurrent") is None
    if overlap:
        assert loser["concurrent"]["dropped_rows"] == len(shared) == 2
        current = dict(zip(*table.read(keys=sorted(shared), columns=["key", "run_id"]).to_pydict().values()))
        assert set(current.values()) == {winner["run_id"]}  # the first committed rows stay current
    else:
        assert loser.get("concurrent") is None
    assert table.orphans() == []
    reader.check(table)
    # a next run of either source would find nothing to do
    for src in (src_a, src_b):
        assert pending(list_source(src, src_opts), table, retry_errors=False)[0] == []
