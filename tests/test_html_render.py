"""The bench and report HTML pages render in headless Chromium without errors (a screenshot is taken).

Chromium must be on PATH (``chromium``, ``chromium-browser`` or ``google-chrome``): the README's test command
installs it (``tests/install-chromium.sh``), so a missing browser FAILS here rather than skipping. What counts as an error: Chromium runs with ``--enable-logging=stderr``, which prints the page's
console messages as ``INFO:CONSOLE… "<message>", source: <url> (<line>)``. Our pages contain no JavaScript at
all, so *any* console message from the page (``CONSOLE`` lines, including failed resource loads) and any
``Uncaught`` exception is a failure, as is an ``ERROR:`` line that names the page's URL. Chromium's own startup
noise — dbus, GPU/VA-API, sandbox, screen-saver warnings, none of which name the page — is ignored.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .conftest import MODELS, PHOTOS, photo_png

pytestmark = pytest.mark.shared("models", "photos")

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
SIZE = (1200, 1600)


def screenshot(page: Path, tmp: Path) -> tuple[np.ndarray, list[str]]:
    """Render ``page`` headless; return the screenshot pixels and the stderr lines that are page errors."""
    if CHROMIUM is None:
        pytest.fail("no chromium on PATH: run tests/install-chromium.sh (the README's test command does)")
    shot = tmp / f"{page.stem}.png"
    url = page.resolve().as_uri()
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp / 'chromium-profile'}", "--enable-logging=stderr", "--v=0",
           f"--screenshot={shot}", f"--window-size={SIZE[0]},{SIZE[1]}", url]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, f"chromium exited {p.returncode}:\n{p.stderr[-3000:]}"
    errors = [line for line in p.stderr.splitlines()
              if "CONSOLE" in line or "Uncaught" in line or ("ERROR:" in line and url in line)]
    assert shot.exists(), f"no screenshot written:\n{p.stderr[-3000:]}"
    with Image.open(shot) as im:
        assert im.format == "PNG" and im.size == SIZE, (im.format, im.size)
        px = np.asarray(im.convert("RGB"))
    return px, errors


def _check(page: Path, tmp: Path) -> np.ndarray:
    px, errors = screenshot(page, tmp)
    assert not errors, "page errors in Chromium:\n" + "\n".join(errors)
    assert px.astype(np.float64).var() > 0, "blank screenshot"
    # more than a sliver of the page is drawn (text, tables, plots), not just a background
    assert (px.min(axis=2) < 200).mean() > 0.01
    return px


def test_error_detection_catches_a_broken_page(tmp_path):
    """The checker is not vacuous: a page with a console error and an uncaught exception is caught."""
    page = tmp_path / "broken.html"
    page.write_text("<html><body>x<script>console.error('boom'); notDefined();</script></body></html>")
    _, errors = screenshot(page, tmp_path)
    assert any("Uncaught" in e for e in errors) and any("boom" in e for e in errors)


def test_rd_bench_html_renders(tmp_path):
    from latentarc.jobs.rd_bench import run_rd_bench

    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in sorted(PHOTOS.glob("*.png"))[:2]:
        shutil.copy(p, folder / p.name)
    out = tmp_path / "rd"
    r = run_rd_bench(folder, "tae-f2,tae-f2@tae-f2-ctx:0,avif,webp", [30, 70], out, crop=48, weights=str(MODELS),
                     device="cpu")
    for name in ("rd.json", "rd_psnr.png", "rd_msssim.png", "rd_lpips.png", "rd_dists.png", "speed.png", "index.html"):
        assert (out / name).exists(), name
    assert set(r["bd"]) == {"tae-f2", "tae-f2@tae-f2-ctx:0", "webp"} and r["reference"] == "avif"
    assert set(r["bd_pairs"]) == {"tae-f2", "tae-f2@tae-f2-ctx:0"} and set(r["bd_pairs"]["tae-f2"]) == {"avif", "webp"}
    # NAME@ENTROPY:0: the same quantized latent (plain rounding), coded by another entropy model — same pixels,
    # other bytes
    per = {(x["codec"], x["image"], x["quality"]): x for x in r["rows"]}
    for (c, img, q), x in per.items():
        if c == "tae-f2":
            ctx = per[("tae-f2@tae-f2-ctx:0", img, q)]
            assert ctx["psnr"] == x["psnr"] and ctx["bytes"] != x["bytes"]
    text = (out / "index.html").read_text()
    assert text.count("data:image/png;base64,") == 5 and "BD-rate" in text and "bpp needed at equal quality" in text
    shutil.copy(out / "index.html", tmp_path / "rd_index.html")
    _check(tmp_path / "rd_index.html", tmp_path)


def test_report_html_renders(tmp_path, ray_cluster):
    from latentarc.jobs.cli import main
    from latentarc.codec.spec import CodecSpec
    from latentarc.pipeline.compress import CompressOptions, run_compress

    src = tmp_path / "src"
    for i, key in enumerate(["x/one.png", "two.png"]):
        (src / key).parent.mkdir(parents=True, exist_ok=True)
        (src / key).write_bytes(photo_png(i, 64, 56))
    table = tmp_path / "table"
    rep = run_compress(str(src), str(table), CompressOptions(CodecSpec(weights=str(MODELS)), quality=60, batch_size=2, workers=1))
    assert rep["rows"] == 2
    page = tmp_path / "report.html"
    assert main(["report", str(table), "--html", str(page)]) == 0
    assert re.search(r"alt='decoded x/one.png'", page.read_text())
    _check(page, tmp_path)
