"""Storage layer (listing, manifests, safe keys) and the committed Parquet bitstream table, locally and on S3.

S3 is moto's server on 127.0.0.1 (fixtures ``s3`` / ``bucket`` in conftest). Table rows carry small synthetic
payloads: no model is needed here.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from latentarc.codec.errors import LatentarcError
from latentarc.pipeline.errors import PipelineError, SourceNotFound, TableError, UnsafeKey
from latentarc.pipeline.table.schema import ERRORS_SCHEMA, TABLE_SCHEMA, rows_to_table
from latentarc.pipeline.storage import (
    MISSING_SIZE,
    list_source,
    open_fs,
    read_bytes,
    safe_join,
    write_bytes_atomic,
)
from latentarc.pipeline.table import ROW_GROUP_BYTES, BitstreamTable

from .conftest import PHOTOS

pytestmark = pytest.mark.shared("photos")

PNGS = sorted(PHOTOS.glob("*.png"))[:3]


# --- helpers --------------------------------------------------------------------------------------------------
def _tree(root):
    """A source folder: 3 real photos (one nested), a non-image, hidden/underscore files and folders."""
    (root / "sub").mkdir(parents=True)
    (root / ".hidden").mkdir()
    (root / "_tmp").mkdir()
    shutil.copy(PNGS[0], root / "a.png")
    shutil.copy(PNGS[1], root / "sub" / "b.PNG")
    shutil.copy(PNGS[2], root / "sub" / "c.png")
    (root / "notes.txt").write_text("not an image")
    (root / ".DS_Store").write_bytes(b"junk")
    (root / "_SUCCESS").write_bytes(b"")
    (root / ".hidden" / "x.png").write_bytes(b"x")
    (root / "_tmp" / "y.png").write_bytes(b"y")
    return root


def _upload(fs, local_root, dest):
    for folder, _, files in os.walk(local_root):
        for name in files:
            full = os.path.join(folder, name)
            rel = os.path.relpath(full, local_root).replace(os.sep, "/")
            fs.pipe_file(f"{dest}/{rel}", open(full, "rb").read())
    fs.invalidate_cache()


EXPECTED_KEYS = ["a.png", "notes.txt", "sub/b.PNG", "sub/c.png"]


def _row(key, payload=b"\x01\x02", run_id="run-a", size=10, etag=None):
    return dict(
        key=key, source_uri=f"/src/{key}", source_size=size, source_sha256="00" * 32, width=8, height=8,
        mode="RGB", codec="tae-f2", format_version=1, model_sha256=None, params='{"q": 75}', payload=payload,
        payload_size=len(payload), payload_crc32c=123, bpp=len(payload) * 8 / 64, psnr=31.5, metadata=None,
        encoded_at=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), source_etag=etag or f"etag-{key}",
        ms_ssim=0.95, run_id=run_id,
    )


def _err(key, run_id, stage="decode"):
    return dict(key=key, source_uri=f"/src/{key}", stage=stage, error_type="UnreadableImage", message="nope",
                at=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), source_size=3, source_etag=None, run_id=run_id)


def _data(rows):
    return rows_to_table(rows, TABLE_SCHEMA)


def _errs(rows):
    return rows_to_table(rows, ERRORS_SCHEMA)


@pytest.fixture(params=["local", "s3"])
def table(request, tmp_path):
    if request.param == "local":
        return BitstreamTable(str(tmp_path / "table"))
    bucket, s3 = request.getfixturevalue("bucket"), request.getfixturevalue("s3")
    return BitstreamTable(f"{bucket}/archive/table", storage_options=s3)


# --- errors ---------------------------------------------------------------------------------------------------
def test_error_hierarchy():
    for cls in (SourceNotFound, TableError, UnsafeKey):
        assert issubclass(cls, PipelineError) and issubclass(cls, LatentarcError)


# --- listing --------------------------------------------------------------------------------------------------
def test_list_local_dir(tmp_path):
    root = _tree(tmp_path / "src")
    objs = list_source(str(root))
    assert [o.key for o in objs] == EXPECTED_KEYS
    a = objs[0]
    st = os.stat(root / "a.png")
    assert a.uri == str(root / "a.png") and a.size == st.st_size == PNGS[0].stat().st_size
    assert a.etag == f"{st.st_mtime_ns}-{st.st_size}"
    assert [o.key for o in list_source(f"file://{root}")] == EXPECTED_KEYS
    assert [o.key for o in list_source(str(root), extensions={".png"})] == ["a.png", "sub/b.PNG", "sub/c.png"]
    assert [o.key for o in list_source(str(root), extensions={"jpg"})] == []
    # a single file is a source of one object keyed by its name
    assert [(o.key, o.size) for o in list_source(str(root / "sub" / "c.png"))] == [("c.png", PNGS[2].stat().st_size)]


def test_list_s3_prefix(tmp_path, bucket, s3):
    fs, _ = open_fs(bucket, s3)
    _upload(fs, _tree(tmp_path / "src"), f"{bucket[5:]}/photos/2024")
    objs = list_source(f"{bucket}/photos/2024", s3)
    assert [o.key for o in objs] == EXPECTED_KEYS
    assert objs[0].uri == f"{bucket}/photos/2024/a.png"
    assert objs[0].size == PNGS[0].stat().st_size
    assert objs[0].etag and '"' not in objs[0].etag
    assert read_bytes(objs[0].uri, s3) == PNGS[0].read_bytes()
    assert [o.key for o in list_source(f"{bucket}/photos/2024/", s3, extensions={".PNG"})] == [
        "a.png", "sub/b.PNG", "sub/c.png"]
    assert [o.key for o in list_source(f"{bucket}/photos", s3)] == [f"2024/{k}" for k in EXPECTED_KEYS]


def test_manifest_mixing_s3_and_local(tmp_path, bucket, s3):
    fs, _ = open_fs(bucket, s3)
    fs.pipe_file(f"{bucket[5:]}/set/x/one.png", PNGS[0].read_bytes())
    fs.pipe_file(f"{bucket[5:]}/set/y/two.png", PNGS[1].read_bytes())
    local = tmp_path / "local"
    local.mkdir()
    shutil.copy(PNGS[2], local / "three.png")
    manifest = tmp_path / "inputs.txt"
    manifest.write_text(
        "# inputs\n\n"
        f"{bucket}/set/x/one.png\n"
        f"{bucket}/set/y/two.png\n"
        f"  {bucket}/set/x/one.png  \n"  # duplicate
        "local/three.png\n"  # relative to the manifest's folder
        f"{bucket}/set/missing.png\n"
    )
    objs = list_source(str(manifest), s3)
    bucket_name = bucket[5:]
    assert [o.key for o in objs] == sorted(o.key for o in objs) and len(objs) == 4
    by_uri = {o.uri: o for o in objs}
    assert set(by_uri) == {str(local / "three.png"), f"{bucket}/set/x/one.png", f"{bucket}/set/y/two.png",
                           f"{bucket}/set/missing.png"}
    assert by_uri[str(local / "three.png")].key == "file" + str(local / "three.png")
    assert by_uri[f"{bucket}/set/x/one.png"].key == f"s3/{bucket_name}/set/x/one.png"
    assert by_uri[f"{bucket}/set/x/one.png"].size == PNGS[0].stat().st_size
    assert by_uri[f"{bucket}/set/missing.png"].size == MISSING_SIZE
    with pytest.raises(SourceNotFound):
        read_bytes(f"{bucket}/set/missing.png", s3)

    # same-protocol manifest: keys relative to the longest common folder
    m2 = tmp_path / "s3only.lst"
    m2.write_text(f"{bucket}/set/x/one.png\n{bucket}/set/y/two.png\n")
    assert [o.key for o in list_source(str(m2), s3)] == ["x/one.png", "y/two.png"]
    # a manifest stored on S3, with a relative entry
    fs.pipe_file(f"{bucket_name}/set/list.manifest", b"x/one.png\ny/two.png\n")
    objs = list_source(f"{bucket}/set/list.manifest", s3)
    assert [(o.key, o.uri) for o in objs] == [("x/one.png", f"{bucket}/set/x/one.png"),
                                              ("y/two.png", f"{bucket}/set/y/two.png")]
    # one entry: keyed by its path
    m3 = tmp_path / "one.txt"
    m3.write_text(f"{bucket}/set/x/one.png\n")
    assert [o.key for o in list_source(str(m3), s3)] == [f"{bucket_name}/set/x/one.png"]


def test_source_not_found(tmp_path, bucket, s3):
    with pytest.raises(SourceNotFound):
        list_source(str(tmp_path / "nope"))
    with pytest.raises(SourceNotFound):
        list_source(str(tmp_path / "nope.txt"))
    with pytest.raises(SourceNotFound):
        list_source(f"{bucket}/no/such/prefix", s3)
    with pytest.raises(SourceNotFound):
        read_bytes(str(tmp_path / "nope.png"))


# --- keys and atomic writes -----------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["../x", "/etc/passwd", "a/../../b", "", "a\\..\\..\\b", "a/./b", "a//b",
                                 "C:\\x", "a\x00b", "s3://other/x", ".."])
def test_safe_join_refuses(tmp_path, key):
    with pytest.raises(UnsafeKey):
        safe_join(str(tmp_path), key)
    with pytest.raises(UnsafeKey):
        safe_join("s3://bucket/restore", key)


def test_safe_join_accepts_and_follows_symlinks(tmp_path):
    assert safe_join(str(tmp_path), "a/b.png") == str(tmp_path / "a" / "b.png")
    assert safe_join(f"file://{tmp_path}/", "a/b.png") == str(tmp_path / "a" / "b.png")
    assert safe_join("s3://bucket/restore/", "a/b.png") == "s3://bucket/restore/a/b.png"
    s3fs_like, root = open_fs("s3://bucket/restore", {"anon": True})
    assert safe_join(root, "a/b.png", fs=s3fs_like) == "bucket/restore/a/b.png"
    (tmp_path / "out").mkdir()
    os.symlink("/tmp", tmp_path / "out" / "link")
    with pytest.raises(UnsafeKey):
        safe_join(str(tmp_path / "out"), "link/x.png")


def test_write_bytes_atomic(tmp_path, bucket, s3):
    fs, path = open_fs(str(tmp_path / "d" / "f.bin"))
    write_bytes_atomic(fs, path, b"one")
    write_bytes_atomic(fs, path, b"two")
    assert open(path, "rb").read() == b"two" and os.listdir(tmp_path / "d") == ["f.bin"]
    fs, path = open_fs(f"{bucket}/d/f.bin", s3)
    write_bytes_atomic(fs, path, b"three")
    assert read_bytes(f"{bucket}/d/f.bin", s3) == b"three"


# --- schema ---------------------------------------------------------------------------------------------------
def test_rows_to_table_names_the_column():
    t = _data([_row("a.png")])
    assert t.schema.equals(TABLE_SCHEMA) and t.num_rows == 1
    bad = _row("a.png")
    del bad["payload"]
    with pytest.raises(TableError, match="payload"):
        _data([bad])
    with pytest.raises(TableError, match="width"):
        _data([{**_row("a.png"), "width": "wide"}])
    assert _data([{**_row("a.png"), "colour": 1}]).column_names == TABLE_SCHEMA.names  # extra keys ignored
    with pytest.raises(TableError, match="colour"):
        rows_to_table([{**_row("a.png"), "colour": 1}], TABLE_SCHEMA, strict=True)
    assert _errs([]).num_rows == 0
    assert TABLE_SCHEMA.field("payload").type == pa.large_binary()
    assert TABLE_SCHEMA.field("encoded_at").type == pa.timestamp("us", tz="UTC")
    assert TABLE_SCHEMA.field("metadata").nullable and not TABLE_SCHEMA.field("key").nullable


# --- bitstream table ------------------------------------------------------------------------------------------
def test_uncommitted_parts_are_invisible_then_commit(table):
    assert not table.exists() and table.read().num_rows == 0 and table.index() == {}
    run = table.new_run_id()
    part = table.write_part(run, "data", _data([_row("b.png", run_id=run), _row("a.png", run_id=run)]))
    assert part.startswith("data/") and part.endswith(".parquet")
    assert table.read().num_rows == 0 and table.data_files() == []
    assert table.orphans() == [table.path(part)]
    assert not table.exists()

    done = table.commit(run, [part], [], rows=2, errors=0, report={"saved_bytes": 5})
    assert done.path == "_commits/00000000000000000001.json" and done.seq == 1 and done.attempts == 1
    assert table.exists() and table.orphans() == []
    t = table.read()
    assert t.schema.equals(TABLE_SCHEMA)
    assert t["key"].to_pylist() == ["a.png", "b.png"]
    assert t["payload"].to_pylist() == [b"\x01\x02"] * 2
    (rec,) = table.committed()
    assert rec["run_id"] == run and rec["data_files"] == [part] and rec["rows"] == 2 and rec["errors"] == 0
    assert rec["seq"] == 1
    assert rec["report"] == {"saved_bytes": 5}
    assert table.data_files() == [table.path(part)]
    assert table.stored_bytes([part, table.path(part)]) > 0
    with pytest.raises(TableError):
        table.commit(run, [part], [], rows=2, errors=0)  # once per run


def test_commit_refuses_missing_or_foreign_files(table):
    run = table.new_run_id()
    with pytest.raises(TableError):
        table.commit(run, ["data/nope.parquet"], [], rows=0, errors=0)
    with pytest.raises(TableError):
        table.commit(run, ["../elsewhere/x.parquet"], [], rows=0, errors=0)
    with pytest.raises(TableError):
        table.write_part(run, "bogus", _data([_row("a.png")]))
    assert table.committed() == []


def test_latest_commit_wins_filters_index_errors(table):
    r1 = table.new_run_id()
    keys1 = ["a/1.png", "a/2.png", "b/1.png", "c.png"]
    d1 = table.write_part(r1, "data", _data([_row(k, b"old", r1) for k in keys1]))
    e1 = table.write_part(r1, "errors", _errs([_err("broken.png", r1), _err("notes.txt", r1)]))
    table.commit(r1, [d1], [e1], rows=4, errors=2)

    r2 = table.new_run_id()
    assert r2 > r1
    # a changed source re-archived, a previously broken one now fixed, a new failure; split over two parts
    d2a = table.write_part(r2, "data", _data([_row("a/2.png", b"new", r2, size=99, etag="changed")]), part=0)
    d2b = table.write_part(r2, "data", _data([_row("broken.png", b"fixed", r2)]), part=1)
    e2 = table.write_part(r2, "errors", _errs([_err("notes.txt", r2), _err("c.png", r2, stage="read")]))
    table.commit(r2, [table.path(d2a), d2b], [e2], rows=2, errors=2)

    # an uncommitted run later on must not change anything
    r3 = table.new_run_id()
    table.write_part(r3, "data", _data([_row("a/1.png", b"ghost", r3)]))

    t = table.read()
    assert t["key"].to_pylist() == ["a/1.png", "a/2.png", "b/1.png", "broken.png", "c.png"]
    got = dict(zip(t["key"].to_pylist(), t["payload"].to_pylist()))
    assert got == {"a/1.png": b"old", "a/2.png": b"new", "b/1.png": b"old", "broken.png": b"fixed", "c.png": b"old"}

    assert table.read(["key", "payload"], keys=["a/2.png", "c.png", "zzz"]).to_pydict() == {
        "key": ["a/2.png", "c.png"], "payload": [b"new", b"old"]}
    assert table.read(["key"], prefix="a/")["key"].to_pylist() == ["a/1.png", "a/2.png"]
    assert table.read(["payload"], prefix="a/", keys=["a/2.png", "b/1.png"]).column_names == ["payload"]
    assert table.read(["key"], prefix="a/", keys=["a/2.png", "b/1.png"])["key"].to_pylist() == ["a/2.png"]
    assert table.read(keys=[]).num_rows == 0
    assert table.read(prefix="zz").num_rows == 0
    with pytest.raises(TableError):
        table.read(["nope"])

    idx = table.index()
    assert idx["a/2.png"] == (99, "changed") and idx["a/1.png"] == (10, "etag-a/1.png") and len(idx) == 5

    err = table.errors()
    # broken.png succeeded later; c.png failed in a later run than its row; notes.txt latest failure only
    assert err["key"].to_pylist() == ["c.png", "notes.txt"]
    assert err["run_id"].to_pylist() == [r2, r2]
    assert err.schema.equals(ERRORS_SCHEMA)
    hist = table.errors(latest_only=False)
    assert hist["key"].to_pylist() == ["c.png", "notes.txt", "notes.txt"]
    assert hist["run_id"].to_pylist() == [r2, r1, r2]

    assert len(table.orphans()) == 1 and "/data/" in table.orphans()[0]
    assert [c["run_id"] for c in table.committed()] == [r1, r2]
    plan = dict(table.plan())
    assert plan[table.path(d1)] == ["a/1.png", "b/1.png", "c.png"] and plan[table.path(d2a)] is None
    # an explicit plan: the same files, every key listed, exactly the keys read() returns, for every filter
    for kw in ({}, {"prefix": "a/"}, {"keys": ["a/2.png", "c.png", "zzz"]}, {"keys": []}):
        explicit = table.plan(**kw, explicit=True)
        assert [p for p, _ in explicit] == [p for p, _ in table.plan(**kw)]
        assert all(ks for _, ks in explicit)
        assert sorted(k for _, ks in explicit for k in ks) == table.read(["key"], **kw)["key"].to_pylist()


def test_reports_round_trip(table):
    assert table.reports() == []
    r1, r2 = table.new_run_id(), table.new_run_id()
    table.write_report(r2, {"images": 3, "ratio": 12.5, "codecs": {"tae-f2": 3}})
    table.write_report(r1, {"images": 1})
    reps = table.reports()
    assert [r["run_id"] for r in reps] == [r1, r2]
    assert reps[1]["codecs"] == {"tae-f2": 3} and reps[1]["ratio"] == 12.5


def test_data_file_layout(tmp_path, monkeypatch):
    """Payload stored plain (no compression, no dictionary), key statistics, row groups cut by bytes."""
    import latentarc.pipeline.table.store as tbl

    monkeypatch.setattr(tbl, "ROW_GROUP_BYTES", 3000)
    table = BitstreamTable(str(tmp_path / "t"))
    run = table.new_run_id()
    rows = [_row(f"k{i:03d}.png", bytes([i]) * 1000, run) for i in range(10)]
    part = table.write_part(run, "data", _data(rows[::-1]))
    meta = pq.ParquetFile(table.path(part)).metadata
    assert meta.num_row_groups == 4  # 3 rows of ~1.3 kB per 3000-byte group
    names = [meta.schema.column(i).name for i in range(meta.num_columns)]
    pi, ki = names.index("payload"), names.index("key")
    for g in range(meta.num_row_groups):
        col = meta.row_group(g).column(pi)
        assert col.compression == "UNCOMPRESSED" and not col.has_dictionary_page
        assert meta.row_group(g).column(ki).statistics.has_min_max
    assert meta.row_group(0).column(ki).statistics.min == "k000.png"  # sorted by key
    assert ROW_GROUP_BYTES == 32 * 2**20
    assert table.stored_bytes([part]) == os.path.getsize(table.path(part)) > 10_000
    table.commit(run, [part], [], rows=10, errors=0)
    assert table.read(["key"], keys=["k007.png"])["key"].to_pylist() == ["k007.png"]
