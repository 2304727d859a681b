"""``latentarc verify``: a real table (Ray compress of tiny photo crops), then damaged copies of it."""

from __future__ import annotations

import json
import os
import shutil

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import s3fs

from latentarc.codec import bitstream
from latentarc.jobs.cli import main
from latentarc.pipeline.compress import run_compress
from latentarc.pipeline.table import BitstreamTable
from latentarc.pipeline.verify import _sampled, print_report, verify_table

from .conftest import MODELS, photo_png
from .test_pipeline import _opts

pytestmark = pytest.mark.shared("models", "photos")

KEYS = ["a/one.png", "a/two.png", "b/three.png", "four.png"]
W = str(MODELS)


@pytest.fixture(scope="module")
def clean_table(ray_cluster, tmp_path_factory):
    """A committed table of four 64x48 photo crops (sources kept, so PSNR can be re-measured)."""
    root = tmp_path_factory.mktemp("verify")
    src = root / "src"
    for i, key in enumerate(KEYS):
        (src / key).parent.mkdir(parents=True, exist_ok=True)
        (src / key).write_bytes(photo_png(i, 64, 48))
    (src / "notes.png").write_bytes(b"not an image")  # one row in the errors table
    table = root / "table"
    # stock tae-f2: its weights resolve from outside the repository, so verify can also meet them missing
    report = run_compress(str(src), str(table), _opts(ms_ssim=False, name="tae-f2"))
    assert report["rows"] == 4 and report["errors"] == 1
    return table


def _copy(clean_table, tmp_path) -> str:
    dst = tmp_path / "table"
    shutil.copytree(clean_table, dst)
    return str(dst)


def _file_of(uri: str, key: str) -> tuple[str, str]:
    """(full path, path relative to the root) of the committed data file holding ``key``."""
    t = BitstreamTable(uri)
    for p in t.data_files():
        if key in pq.read_table(p, columns=["key"])["key"].to_pylist():
            return p, os.path.relpath(p, uri)
    raise AssertionError(key)


def _rewrite(path: str, fn) -> None:
    t = pq.read_table(path)
    pq.write_table(fn(t), path)


def _set(t: pa.Table, key: str, column: str, fn) -> pa.Table:
    i = t.schema.get_field_index(column)
    vals = [fn(v) if k == key else v for k, v in zip(t["key"].to_pylist(), t[column].to_pylist())]
    return t.set_column(i, t.schema.field(i), pa.array(vals, t.schema.field(i).type))


def _where(report, check):
    return [p for p in report.problems if p["check"] == check]


def test_clean_table_verifies_with_and_without_decode(clean_table, capsys):
    r = verify_table(str(clean_table), weights=W)
    assert r.ok and not r.problems, r.problems
    t = BitstreamTable(str(clean_table))
    assert r.checked_files == len(t.data_files()) + len(t.error_files()) and len(t.error_files()) == 1
    assert r.checked_rows == 4 and r.commits == 1 and r.decoded_rows == 0

    r = verify_table(str(clean_table), weights=W, decode=True)
    assert r.ok, r.problems
    assert r.decoded_rows == 4 and r.decoded_with_reference == 4 and r.decoded_without_reference == 0

    # a deterministic sample decodes exactly the keys the seeded draw picks
    want = sum(_sampled(k, 0.5, 7) for k in KEYS)
    r = verify_table(str(clean_table), weights=W, decode=True, sample=0.5, seed=7)
    assert r.ok and r.decoded_rows == want
    print_report(r)
    assert "OK" in capsys.readouterr().out


def test_flipped_payload_byte_is_caught_by_key(clean_table, tmp_path):
    uri = _copy(clean_table, tmp_path)
    key = "a/two.png"
    path, _ = _file_of(uri, key)

    def flip(b: bytes) -> bytes:
        b = bytearray(b)
        b[len(b) // 2] ^= 0x01
        return bytes(b)

    _rewrite(path, lambda t: _set(t, key, "payload", flip))  # payload_crc32c kept as stored
    r = verify_table(uri, weights=W)
    assert not r.ok
    assert {p["key"] for p in _where(r, "payload_crc32c")} == {key}
    assert {p["key"] for p in _where(r, "envelope")} == {key}  # the container's own CRC too
    assert r.checked_rows == 4


def test_truncated_file_is_named_and_the_rest_still_checked(clean_table, tmp_path):
    uri = _copy(clean_table, tmp_path)
    path, rel = _file_of(uri, "b/three.png")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    r = verify_table(uri, weights=W)
    assert not r.ok
    assert [p["file"] for p in _where(r, "file")] == [rel]
    others = len(BitstreamTable(uri).data_files()) - 1
    assert r.checked_files >= others
    # a missing committed file is named too
    os.remove(path)
    r = verify_table(uri, weights=W)
    assert [p["file"] for p in _where(r, "file")] == [rel] and "missing" in _where(r, "file")[0]["message"]
    # and so is a damaged errors file
    err = BitstreamTable(uri).error_files()[0]
    with open(err, "r+b") as f:
        f.truncate(os.path.getsize(err) // 2)
    r = verify_table(uri, weights=W)
    assert {p["file"] for p in _where(r, "file")} == {rel, os.path.relpath(err, uri)}


def test_key_duplicated_within_a_commit(clean_table, tmp_path):
    uri = _copy(clean_table, tmp_path)
    key = "four.png"
    path, rel = _file_of(uri, key)
    _rewrite(path, lambda t: pa.concat_tables([t, t.filter(pc.equal(t["key"], key))]).sort_by("key"))
    r = verify_table(uri, weights=W)
    assert not r.ok
    dup = _where(r, "unique_key")
    assert [p["key"] for p in dup] == [key] and dup[0]["file"] == rel
    assert _where(r, "commit_rows")  # the record counted 4 rows, its files now hold 5

    # the same key in two files of one commit
    uri = _copy(clean_table, tmp_path / "two-files")
    path, rel = _file_of(uri, key)
    shutil.copy(path, os.path.join(uri, "data", "copy-0001.parquet"))
    commit = os.path.join(uri, "_commits", os.listdir(os.path.join(uri, "_commits"))[0])
    rec = json.load(open(commit))
    rec["data_files"].append("data/copy-0001.parquet")
    json.dump(rec, open(commit, "w"))
    r = verify_table(uri, weights=W)
    dup = _where(r, "unique_key")
    assert not r.ok and key in {p["key"] for p in dup}
    assert all(p["file"] is None and rel in p["message"] and "copy-0001" in p["message"] for p in dup)

    # across commits a key may repeat (latest wins): not a problem
    uri = _copy(clean_table, tmp_path / "two-commits")
    path, rel = _file_of(uri, key)
    shutil.copy(path, os.path.join(uri, "data", "later-0001.parquet"))
    t = BitstreamTable(uri)
    n = pq.read_metadata(path).num_rows
    t.commit("later", ["data/later-0001.parquet"], [], rows=n, errors=0)
    r = verify_table(uri, weights=W)
    assert r.ok and r.commits == 2, r.problems


def test_stream_for_another_model_is_a_model_problem(clean_table, tmp_path):
    uri = _copy(clean_table, tmp_path)
    key = "a/one.png"
    path, _ = _file_of(uri, key)
    holder = {}

    def other_model(b: bytes) -> bytes:
        s = bitstream.parse(b)
        s.model_fingerprint = bytes(reversed(s.model_fingerprint))
        holder["data"] = bitstream.pack(s)
        return holder["data"]

    def edit(t):
        t = _set(t, key, "payload", other_model)
        return _set(t, key, "payload_crc32c", lambda _: bitstream.crc32c(holder["data"]))

    _rewrite(path, edit)
    r = verify_table(uri, weights=W, decode=True)
    assert not r.ok
    assert {(p["key"], p["check"]) for p in r.problems} == {(key, "model")}, r.problems
    assert r.decoded_rows == 3  # the other rows still decode

    # weights that cannot be found: one problem naming the affected keys, no crash
    r = verify_table(uri, weights=str(tmp_path / "no-weights-here"))
    model = _where(r, "model")
    assert not r.ok and any("cannot be loaded" in p["message"] and "'four.png'" in p["message"] for p in model)


def test_orphan_is_a_warning_and_damaged_commit_a_problem(clean_table, tmp_path):
    uri = _copy(clean_table, tmp_path)
    path, _ = _file_of(uri, "a/one.png")
    shutil.copy(path, os.path.join(uri, "data", "crashedrun-0001.parquet"))
    r = verify_table(uri, weights=W)
    assert r.ok and not r.problems
    assert [(w["check"], w["file"]) for w in r.warnings] == [("orphan", "data/crashedrun-0001.parquet")]

    commit = sorted(os.listdir(os.path.join(uri, "_commits")))[0]
    with open(os.path.join(uri, "_commits", commit), "w") as f:
        f.write('{"run_id": "x", "data_files": [')
    r = verify_table(uri, weights=W)
    assert not r.ok and [p["file"] for p in _where(r, "commit")] == [f"_commits/{commit}"]


def test_decode_psnr_check_and_missing_source(clean_table, tmp_path):
    uri = _copy(clean_table, tmp_path)
    for key in ("a/one.png", "a/two.png"):
        path, _ = _file_of(uri, key)
        if key == "a/one.png":
            _rewrite(path, lambda t: _set(t, key, "source_uri", lambda _: str(tmp_path / "gone.png")))
        else:
            _rewrite(path, lambda t: _set(t, key, "psnr", lambda v: v + 1.0))
    r = verify_table(uri, weights=W, decode=True)
    assert [(p["key"], p["check"]) for p in r.problems] == [("a/two.png", "psnr")]
    assert r.decoded_rows == 4 and r.decoded_without_reference == 1 and r.decoded_with_reference == 3
    assert verify_table(uri, weights=W).ok  # without --decode the stored PSNR is not re-measured


def test_cli_exit_codes_and_json(clean_table, tmp_path, capsys):
    assert main(["verify", str(clean_table), "--weights", W]) == 0
    assert "OK" in capsys.readouterr().out
    uri = _copy(clean_table, tmp_path)
    path, rel = _file_of(uri, "a/one.png")
    with open(path, "r+b") as f:
        f.truncate(100)
    assert main(["verify", uri, "--weights", W]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and rel in out and "[file]" in out
    assert main(["verify", uri, "--json", "--weights", W]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False and doc["problems"][0]["file"] == rel
    assert main(["verify", uri, "--decode", "--sample", "2"]) == 2  # usage error


def test_verify_on_s3(clean_table, bucket, s3):
    fs = s3fs.S3FileSystem(**s3, use_listings_cache=False, skip_instance_cache=True)
    uri = f"{bucket}/archive"
    fs.put(str(clean_table) + "/", uri + "/", recursive=True)
    r = verify_table(uri, s3, weights=W, decode=True)
    assert r.ok, r.problems
    assert r.checked_rows == 4 and r.decoded_with_reference == 4
    t = BitstreamTable(uri, s3)
    victim = t.data_files()[0]
    fs.pipe(victim, fs.cat(victim)[:50])
    r = verify_table(uri, s3, weights=W)
    assert not r.ok and [p["file"] for p in _where(r, "file")] == [victim.split("/archive/", 1)[1]]
