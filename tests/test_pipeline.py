"""The compress and restore jobs end to end: real Ray, a real S3 endpoint (moto on 127.0.0.1), real weights."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import s3fs
from PIL import Image

from latentarc.codec.metrics import psnr
from latentarc.jobs.cli import main
from latentarc.codec.spec import DEFAULT_CODEC, CodecSpec
from latentarc.pipeline.compress import CompressOptions, run_compress, watch
from latentarc.pipeline.restore import run_restore
from latentarc.pipeline.table.schema import TABLE_SCHEMA
from latentarc.pipeline.table import BitstreamTable

from .conftest import MODELS, photo_png

pytestmark = [pytest.mark.usefixtures("ray_cluster"), pytest.mark.shared("models", "photos")]


def _opts(verify_refine: bool = False, latent_search: int = 0, verify_realistic: bool = False,
          name: str = DEFAULT_CODEC, **kw) -> CompressOptions:
    spec = CodecSpec(name, weights=str(MODELS), verify_refine=verify_refine, latent_search=latent_search,
                     verify_realistic=verify_realistic)
    return CompressOptions(spec, quality=60, batch_size=2, workers=2, **kw)


@pytest.fixture
def s3_source(bucket, s3):
    """Five real photo crops in nested prefixes, plus a truncated PNG and a text file named .png."""
    fs = s3fs.S3FileSystem(**s3, use_listings_cache=False, skip_instance_cache=True)
    src = f"{bucket}/incoming"
    originals = {}
    for i, key in enumerate(["a/one.png", "a/two.png", "b/three.png", "b/c/four.png", "five.png"]):
        data = photo_png(i, 80, 56)
        fs.pipe(f"{src}/{key}", data)
        originals[key] = data
    fs.pipe(f"{src}/broken/truncated.png", photo_png(6, 80, 56)[:300])
    fs.pipe(f"{src}/broken/notes.png", b"shopping list: milk, eggs")
    return src, originals, fs


def test_s3_to_s3_compress_restore_and_rerun(s3_source, bucket, s3, tmp_path):
    src, originals, fs = s3_source
    table_uri = f"{bucket}/archive"
    report = run_compress(src, table_uri, _opts(), source_options=s3, table_options=s3)

    # every listed input ends as exactly one row or one error
    assert report["inputs_listed"] == 7 and report["rows"] == 5 and report["errors"] == 2
    table = BitstreamTable(table_uri, s3)
    rows = table.read()
    assert sorted(rows["key"].to_pylist()) == sorted(originals)
    assert rows.schema.equals(TABLE_SCHEMA, check_metadata=False)
    errs = table.errors()
    assert sorted(errs["key"].to_pylist()) == ["broken/notes.png", "broken/truncated.png"]
    assert set(errs["stage"].to_pylist()) == {"decode"}
    assert set(errs["error_type"].to_pylist()) == {"UnreadableImage"}
    for r in rows.to_pylist():
        assert r["payload_size"] == len(r["payload"]) and r["codec"] == DEFAULT_CODEC and r["psnr"] > 18
    # the savings report is on storage and counts real stored bytes
    saved = table.reports()[-1]
    assert saved["run_id"] == report["run_id"] and saved["stored_bytes"] > 0
    assert saved["original_bytes"] == sum(len(v) for v in originals.values())

    # restore everything to a local folder: pixels match what was recorded at encode time
    dst = tmp_path / "restored"
    res = run_restore(table_uri, str(dst), table_options=s3)
    assert res.restored == 5 and not res.failures
    recorded = dict(zip(rows["key"].to_pylist(), rows["psnr"].to_pylist()))
    for key, data in originals.items():
        out = np.asarray(Image.open(dst / key))  # same suffix (.png)
        assert psnr(np.asarray(Image.open(io.BytesIO(data))), out) == pytest.approx(recorded[key], abs=1e-6)

    # a re-run processes nothing new and commits nothing
    commits = len(table.committed())
    again = run_compress(src, table_uri, _opts(), source_options=s3, table_options=s3)
    assert again["inputs_processed"] == 0 and again["inputs_skipped_unchanged"] == 7
    assert len(table.committed()) == commits

    # a changed object is re-archived and supersedes its old row
    fs.pipe(f"{src}/five.png", photo_png(9, 80, 56))
    third = run_compress(src, table_uri, _opts(), source_options=s3, table_options=s3)
    assert third["rows"] == 1
    now = table.read(keys=["five.png"])
    assert now.num_rows == 1 and now["run_id"][0].as_py() == third["run_id"]


def test_crash_between_write_and_commit_then_rerun(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"{i}.png").write_bytes(photo_png(10 + i, 80, 56))
    table_uri = str(tmp_path / "table")

    def crash():
        raise SystemExit("killed between write and commit")

    with pytest.raises(SystemExit):
        run_compress(str(src), table_uri, _opts(before_commit=crash))
    table = BitstreamTable(table_uri)
    assert table.read().num_rows == 0 and not table.committed()
    assert table.orphans()  # the parts exist on disk but are invisible
    report = run_compress(str(src), table_uri, _opts())
    assert report["rows"] == 3
    assert sorted(table.read()["key"].to_pylist()) == ["0.png", "1.png", "2.png"]


def test_manifest_source_subset_restore_and_unsafe_keys(tmp_path, bucket, s3):
    fs = s3fs.S3FileSystem(**s3, use_listings_cache=False, skip_instance_cache=True)
    uris = []
    for i in range(3):
        fs.pipe(f"{bucket}/m/{i}.png", photo_png(20 + i, 80, 56))
        uris.append(f"{bucket}/m/{i}.png")
    manifest = tmp_path / "list.txt"
    manifest.write_text("# three objects\n" + "\n".join(uris) + "\n\n")
    table_uri = str(tmp_path / "t")
    # tae-f2: both refinement modes have a check to record (tae-f2-ft's faithful mode decodes unrefined)
    report = run_compress(str(manifest), table_uri, _opts(verify_refine=True, latent_search=2, verify_realistic=True,
                                                          name="tae-f2"), source_options=s3)
    assert report["rows"] == 3 and report["errors"] == 0
    rows = BitstreamTable(table_uri).read(columns=["key", "params", "payload"]).to_pylist()
    keys = [r["key"] for r in rows]
    assert len(keys) == 3
    # --verify-refine, --verify-realistic: every stream carries the encoder's checks, and the row records them
    from latentarc.codec import bitstream
    from latentarc.codec.verdicts import REALISTIC_SECTION, VERDICT_SECTION

    for r in rows:
        assert json.loads(r["params"])["refine_verified"]["steps"] in (0, 1, 2)
        assert json.loads(r["params"])["realistic_verified"]["steps"] in (0, 1, 2, 3)
        assert REALISTIC_SECTION in bitstream.parse(r["payload"]).sections
        # --latent-search reaches the actors: the row records what the encoder's search did
        search = json.loads(r["params"])["latent_search"]
        assert search["iterations"] == 2 and search["psnr_after"] >= search["psnr_before"]
        assert VERDICT_SECTION in bitstream.parse(r["payload"]).sections

    # restore only one key through the CLI (filter pushdown), and report a key that is not there
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text(keys[1] + "\nnot/there.png\n")
    dst = tmp_path / "out"
    rc = main(["restore", table_uri, str(dst), "--keys", str(keys_file), "--no-progress", "--refine", "faithful"])
    assert rc == 1  # one key missing from the table
    written = sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*.png"))
    assert written == [keys[1]]

    # a row whose key would escape the destination is refused, never written
    table = BitstreamTable(table_uri)
    row = table.read(keys=[keys[0]]).to_pylist()[0]
    row.update(key="../escape.png", run_id="20990101T000000000000Z-abcdef")
    part = table.write_part(row["run_id"], "data", __import__("pyarrow").Table.from_pylist([row], TABLE_SCHEMA))
    table.commit(row["run_id"], [part], [], rows=1, errors=0)
    res = run_restore(table_uri, str(tmp_path / "safe"), prefix="..")
    assert [f["error_type"] for f in res.failures] == ["UnsafeKey"] and res.restored == 0
    assert not (tmp_path / "escape.png").exists()


def test_watch_mode_archives_arrivals(tmp_path):
    src = tmp_path / "inbox"
    src.mkdir()
    (src / "first.png").write_bytes(photo_png(30, 80, 56))
    table_uri = str(tmp_path / "table")

    def arrive(report):
        (src / "second.png").write_bytes(photo_png(31, 80, 56))

    reports = watch(str(src), table_uri, _opts(), 0.1, iterations=2, on_report=arrive)
    assert [r["rows"] for r in reports] == [1, 1]
    assert sorted(BitstreamTable(table_uri).read()["key"].to_pylist()) == ["first.png", "second.png"]


def test_cli_compress_exit_code_and_summary(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.png").write_bytes(photo_png(40, 80, 56))
    (src / "empty.jpg").write_bytes(b"")
    table_uri = str(tmp_path / "t")
    rc = main(["compress", str(src), table_uri, "--quality", "50", "--no-progress", "--weights", str(MODELS)])
    out = capsys.readouterr().out
    assert rc == 1  # one input went to the errors table
    assert "1 archived, 1 errors" in out and "saving:" in out
    reports = list((tmp_path / "t" / "_reports").glob("*.json"))
    assert len(reports) == 1 and json.loads(reports[0].read_text())["errors"] == 1


def test_pool_never_has_more_actors_than_inputs():
    """A run of one image starts one model actor, not one per CPU (each would load a model for nothing)."""
    from latentarc.pipeline.runtime import actor_pool_args, plan_pool

    full, one = plan_pool(), plan_pool(inputs=1)
    assert full.size == 2 and one.size == one.initial == 1  # the suite's Ray has 2 CPUs
    assert plan_pool(workers=4, inputs=3).size == 3 and plan_pool(inputs=0).size == 1
    pool = actor_pool_args(one)["compute"]
    assert (pool.min_size, pool.max_size) == (1, 1)


def test_bench_pipeline_reports_where_the_time_went(tmp_path, capsys):
    """bench-pipeline runs the real compress job beside the plain loop and accounts for the pipeline's wall time:
    the model actors' CPU seconds per image and how busy they kept the pool (on CPUs: no per-GPU figures)."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(2):
        (src / f"p{i}.png").write_bytes(photo_png(i, 96, 80))
    out = tmp_path / "bench.json"
    assert main(["bench-pipeline", str(src), "--limit", "2", "--quality", "40", "--json-out", str(out)]) == 0
    pipe = json.loads(out.read_text())["pipeline"]
    assert pipe["images"] == 2 and pipe["errors"] == 0 and pipe["gpus"] == 0 and pipe["actors"] == 2
    assert pipe["cpu_s_per_image"] > 0 and pipe["gpu_s_per_image"] is None
    assert 0 < pipe["actors_busy"] <= 1.0 and "images_per_s_per_gpu" not in pipe
    assert abs(pipe["mp_per_s"] - pipe["megapixels"] / pipe["seconds"]) < 1e-9
    printed = capsys.readouterr().out
    assert "model actors busy" in printed and "per GPU" not in printed
