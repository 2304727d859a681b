"""``latentarc demo`` runs the archive job end to end: a generated collection is compressed into a table (the
damaged file lands in the errors table), restored, and reported."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from latentarc.codec.metrics import psnr
from latentarc.jobs.cli import main
from latentarc.jobs.demo import BROKEN_KEY, run_demo
from latentarc.pipeline.table import BitstreamTable

pytestmark = [pytest.mark.usefixtures("ray_cluster"), pytest.mark.shared("models")]


def test_demo_compresses_restores_and_reports(tmp_path, capsys):
    assert run_demo(tmp_path, main) == 0
    out = capsys.readouterr().out
    table = BitstreamTable(str(tmp_path / "table"))
    keys = table.index()
    assert sorted(keys) == ["2024/05/sample-0.png", "2024/05/sample-1.png", "2024/05/sample-2.png",
                            "inbox/camera.jpg"]
    errors = table.errors().to_pylist()
    assert [e["key"] for e in errors] == [BROKEN_KEY] and errors[0]["error_type"] == "UnreadableImage"
    assert f"error  {BROKEN_KEY}" in out  # the run summary names what failed
    for key in keys:
        restored = tmp_path / "restored" / key.rsplit(".", 1)[0]
        restored = restored.with_suffix(".png")
        with Image.open(tmp_path / "collection" / key) as a, Image.open(restored) as b:
            assert a.size == b.size
            assert psnr(np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB"))) > 25
    html = (tmp_path / "report.html").read_text()
    assert "tae-f2" in html and f"HTML report: {tmp_path / 'report.html'}" in out
