"""Golden files: streams and a table written by an earlier release must still decode, verify and restore.

``tests/golden/`` was written once by ``tests/golden/make_golden.py`` (synthesised sources, no third-party
pixels). A change that breaks one of these breaks archives users already hold: fix the change, never the files.
Lossy decodes are compared by PSNR against the source (float decoders may differ in the last bit across CPUs);
the exact tier is compared to the byte.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from latentarc.codec.api import codec_for_stream
from latentarc.jobs.cli import main

GOLDEN = Path(__file__).resolve().parent / "golden"
MANIFEST = json.loads((GOLDEN / "manifest.json").read_text())
NEURAL = {k for k, v in MANIFEST["streams"].items() if v["codec"].startswith("tae-f2")}


def _rgb(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), np.float64)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255 ** 2 / mse)


def test_sources_are_the_recorded_ones():
    for name, sha in MANIFEST["sources"].items():
        assert hashlib.sha256((GOLDEN / "src" / name).read_bytes()).hexdigest() == sha, name


@pytest.mark.parametrize("fname", [pytest.param(f, marks=[pytest.mark.shared("models")] if f in NEURAL else [])
                                   for f in sorted(MANIFEST["streams"])])
def test_golden_stream_decodes_as_recorded(fname):
    entry = MANIFEST["streams"][fname]
    data = (GOLDEN / fname).read_bytes()
    codec = codec_for_stream(data)
    assert codec.info(data)["codec"] == entry["codec"]
    dec = codec.decode(data)
    src = Image.open(GOLDEN / "src" / entry["source"])
    assert dec.image.size == src.size and dec.mode == src.mode
    if entry["psnr"] >= 99:  # the exact tier: the same pixels, and for jpeg-exact the same file
        assert hashlib.sha256(np.asarray(dec.image.convert("RGB")).tobytes()).hexdigest() == entry["decoded_sha256"]
        if entry["codec"] == "jpeg-exact":
            assert dec.original == (GOLDEN / "src" / entry["source"]).read_bytes()
    else:
        assert abs(_psnr(_rgb(src), _rgb(dec.image)) - entry["psnr"]) < 0.05


@pytest.mark.shared("models")
def test_golden_table_verifies_and_restores(ray_cluster, tmp_path):
    table = tmp_path / "table"
    shutil.copytree(GOLDEN / "table", table)
    assert main(["verify", str(table), "--decode"]) == 0
    out = tmp_path / "out"
    assert main(["restore", str(table), str(out), "--no-progress"]) == 0
    restored = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert restored == ["a/photo.png", "a/scene.png"]
    for key, src in (("a/scene.png", "scene.png"), ("a/photo.png", "photo.jpg")):
        got = _psnr(_rgb(Image.open(GOLDEN / "src" / src)), _rgb(Image.open(out / key)))
        assert got > 20.0, (key, got)


def test_golden_run_report_reads_in_todays_vocabulary():
    """The golden run report was written with the old key names (bytes_in, bytes_stored, tiers)."""
    from latentarc.pipeline.table import BitstreamTable

    (rep,) = BitstreamTable(str(GOLDEN / "table")).reports()
    originals = sum((GOLDEN / "src" / n).stat().st_size for n in ("scene.png", "photo.jpg"))
    assert not {"bytes_in", "bytes_stored", "tiers"} & set(rep)
    assert rep["original_bytes"] == originals and rep["stored_bytes"] > 0 and rep["rows"] == 2
    assert rep["per_guarantee"]["lossy"] == {"rows": 2, "original_bytes": originals,
                                             "payload_bytes": rep["payload_bytes"]}
