"""Crash safety under injected faults, and hostile inputs in a real compress run.

Each fault is followed by a re-run; afterwards every input must appear exactly once (row or error) and the
committed rows must decode.
"""

from __future__ import annotations

import io
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from latentarc.codec.spec import CodecSpec
from latentarc.pipeline.compress import CompressOptions, run_compress
from latentarc.pipeline.faults import FaultPlan
from latentarc.pipeline.restore import run_restore
from latentarc.pipeline.table import BitstreamTable

from .conftest import MODELS, PHOTOS, REPO

pytestmark = [pytest.mark.usefixtures("ray_cluster"), pytest.mark.shared("models", "photos")]


def _opts(**kw) -> CompressOptions:
    kw.setdefault("batch_size", 1)
    return CompressOptions(CodecSpec(weights=str(MODELS)), quality=50, workers=2, ms_ssim=False, **kw)


def _photo_folder(folder: Path, n: int, size=(128, 96)) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, path in enumerate(sorted(PHOTOS.glob("*.png"))[:n]):
        im = Image.open(path)
        im.crop((0, 0, *size)).save(folder / f"{i:02d}.png")
        names.append(f"{i:02d}.png")
    return names


def _accounted(table: BitstreamTable) -> tuple[list[str], list[str]]:
    rows = table.read(columns=["key"])["key"].to_pylist()
    errors = table.errors()["key"].to_pylist()
    assert len(rows) == len(set(rows)) and not set(rows) & set(errors)
    return sorted(rows), sorted(errors)


def _decodes(table: BitstreamTable) -> None:
    from latentarc.codec.api import load_codec

    codec = load_codec(weights=str(MODELS), device="cpu")
    for r in table.read(columns=["key", "payload", "width", "height"]).to_pylist():
        assert codec.decode(r["payload"]).image.size == (r["width"], r["height"])


def test_driver_sigkill_mid_run_then_rerun(tmp_path):
    import ray

    names = _photo_folder(tmp_path / "src", 10, size=(160, 128))
    table_uri = tmp_path / "table"
    cmd = [sys.executable, "-m", "latentarc.jobs.cli", "compress", str(tmp_path / "src"), str(table_uri),
           "--ray-address", ray.get_runtime_context().gcs_address, "--batch-size", "1", "--workers", "2",
           "--rows-per-part", "1",  # parts appear as the run goes, so there is a window before the commit
           "--no-progress", "--no-ms-ssim", "--weights", str(MODELS)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    try:
        while time.time() < deadline:  # kill the driver once parts exist but before anything is committed
            if list((table_uri / "data").glob("*.parquet")) and not list((table_uri / "_commits").glob("*")):
                proc.send_signal(signal.SIGKILL)
                break
            assert proc.poll() is None, "the run finished before it could be killed: make it longer"
            time.sleep(0.05)
        else:
            pytest.fail("no part was written within the deadline")
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    table = BitstreamTable(str(table_uri))
    assert not table.committed() and table.read().num_rows == 0 and table.orphans()
    report = run_compress(str(tmp_path / "src"), str(table_uri), _opts())
    rows, errors = _accounted(table)
    assert rows == names and not errors and report["rows"] == len(names)
    _decodes(table)


def test_actor_process_killed_mid_run(tmp_path):
    names = _photo_folder(tmp_path / "src", 6)
    table = BitstreamTable(str(tmp_path / "table"))
    plan = FaultPlan(crash_actor_on="03.png", marker_dir=str(tmp_path))
    report = run_compress(str(tmp_path / "src"), table.uri, _opts(faults=plan))
    assert any(p.name.startswith("latentarc-crashed") for p in tmp_path.iterdir())  # it really died
    rows, errors = _accounted(table)
    assert rows == names and not errors and report["rows"] == len(names)  # restarted actor redid the batch
    _decodes(table)


def test_exception_in_one_batch_is_recorded_not_fatal(tmp_path):
    """A batch that fails in every attempt: the run's retry pass takes its inputs one per batch, so only the input
    that fails it is recorded (BatchFailed); its batch-mates are archived. The same for a restore, where without a
    retry pass the whole batch is reported."""
    names = _photo_folder(tmp_path / "src", 6)
    table = BitstreamTable(str(tmp_path / "table"))
    plan = FaultPlan(raise_in_batch_with="02.png")
    report = run_compress(str(tmp_path / "src"), table.uri, _opts(faults=plan, batch_size=3))
    rows, errors = _accounted(table)
    assert errors == ["02.png"] and sorted(rows + errors) == names
    assert report["errors"] == 1 and table.errors()["error_type"].to_pylist() == ["BatchFailed"]
    # a restore batch that fails in every attempt: without a retry pass its every key is reported
    out, bad = tmp_path / "out", FaultPlan(raise_in_batch_with="03.png")
    res = run_restore(table.uri, str(out), batch_size=3, faults=bad, retry_passes=0)
    failed = sorted(f["key"] for f in res.failures)
    assert "03.png" in failed and len(failed) > 1 and res.restored == len(rows) - len(failed)
    assert {f["error_type"] for f in res.failures} == {"BatchFailed"}
    # with it, the batch-mates are restored and the one key is reported
    res = run_restore(table.uri, str(out), batch_size=3, faults=bad)
    assert res.restored == len(rows) - 1 and res.requested == len(rows)
    assert [(f["key"], f["error_type"]) for f in res.failures] == [("03.png", "BatchFailed")]
    assert sorted(p.name for p in out.iterdir()) == [k for k in rows if k != "03.png"]
    # the fault is gone: a re-run with --retry-errors archives exactly the input that failed
    again = run_compress(str(tmp_path / "src"), table.uri, _opts(retry_errors=True))
    assert again["rows"] == 1
    rows, errors = _accounted(table)
    assert rows == names and not errors
    _decodes(table)


def _bomb_png(w: int, h: int) -> bytes:
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 4096)) + chunk(b"IEND", b""))


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_hostile_and_odd_inputs(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    photo = Image.open(sorted(PHOTOS.glob("*.png"))[5]).crop((0, 0, 96, 64))
    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 90° counter-clockwise on display
    pal = Image.new("P", (40, 30), 1)
    pal.putpalette([0, 0, 0, 250, 120, 10] + [0] * 762)
    pal.paste(0, (0, 0, 20, 30))  # index 0 is the transparent one: the left half is see-through
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255))]
    grey16 = Image.fromarray((np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 21).astype(np.uint16))
    files = {
        "zero.png": b"",
        "truncated.png": _save(photo, "PNG")[:500],
        "truncated.jpg": _save(photo, "JPEG")[:700],
        "text.jpg": b"Dear diary, today I pretended to be a JPEG.",
        "bomb.png": _bomb_png(50_000, 50_000),
        "animated.gif": _save(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "animated.webp": _save(frames[0], "WEBP", save_all=True, append_images=frames[1:]),
        "tiny.png": _save(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG"),
        "strip.png": _save(Image.new("RGB", (4000, 8), (120, 120, 200)), "PNG"),  # 500:1
        "grey16.png": _save(grey16, "PNG"),
        "cmyk.jpg": _save(photo.convert("CMYK"), "JPEG", quality=92),
        "palette-transparent.png": _save(pal, "PNG", transparency=0),
        "rotated.jpg": _save(photo, "JPEG", quality=92, exif=exif.tobytes()),
    }
    for name, data in files.items():
        (src / name).write_bytes(data)
    table = BitstreamTable(str(tmp_path / "table"))
    report = run_compress(str(src), table.uri, _opts(max_pixels=50_000_000))
    rows, errors = _accounted(table)
    assert sorted(rows + errors) == sorted(files)  # every input exactly once, and the run finished
    assert rows == sorted(["tiny.png", "strip.png", "grey16.png", "cmyk.jpg", "palette-transparent.png", "rotated.jpg"])
    kinds = dict(zip(table.errors()["key"].to_pylist(), table.errors()["error_type"].to_pylist()))
    assert kinds == {"zero.png": "UnreadableImage", "truncated.png": "UnreadableImage",
                     "truncated.jpg": "UnreadableImage", "text.jpg": "UnreadableImage", "bomb.png": "ImageTooLarge",
                     "animated.gif": "UnsupportedImage", "animated.webp": "UnsupportedImage"}
    assert report["rows"] == 6 and report["errors"] == 7
    modes = dict(zip(table.read()["key"].to_pylist(), table.read()["mode"].to_pylist()))
    assert modes["grey16.png"] in ("I;16", "I") and modes["cmyk.jpg"] == "CMYK"

    out = tmp_path / "out"
    res = run_restore(table.uri, str(out))
    assert res.restored == 6 and not res.failures
    assert Image.open(out / "rotated.png").size == (64, 96)  # upright
    assert Image.open(out / "grey16.png").mode == "I;16"
    assert Image.open(out / "palette-transparent.png").mode == "RGBA"
    assert Image.open(out / "strip.png").size == (4000, 8)


def test_slow_runs_are_not_aborted_by_ray_datas_stall_timeout():
    """Ray Data aborts a dataset that moves no block for 30 minutes, losing the whole run; a real --codec auto
    run over 6 MP images hit it. Runs are created with the timeout off, and the global setting is restored."""
    import ray.data
    from ray.data import DataContext

    from latentarc.pipeline.runtime import patient_execution

    before = DataContext.get_current().execution_no_progress_timeout_s
    assert before > 0  # the default this guards against
    with patient_execution():
        ds = ray.data.from_items([{"x": 1}])
    assert ds.context.execution_no_progress_timeout_s == -1
    assert DataContext.get_current().execution_no_progress_timeout_s == before
    assert ds.take_all() == [{"x": 1}]
