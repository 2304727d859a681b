"""`latentarc report` on a tiny real table: numbers against the table, JSON, and the HTML page."""

from __future__ import annotations

import json
import math

import pytest

from latentarc.jobs.cli import main
from latentarc.codec.spec import DEFAULT_CODEC, CodecSpec
from latentarc.pipeline.compress import CompressOptions, run_compress
from latentarc.pipeline.report import build_report, prefix_of
from latentarc.pipeline.savings import GIB
from latentarc.pipeline.table import BitstreamTable

from .conftest import MODELS, photo_png

pytestmark = [pytest.mark.usefixtures("ray_cluster"), pytest.mark.shared("models", "photos")]


@pytest.fixture(scope="module")
def table_dir(tmp_path_factory, ray_cluster):
    """Three neural rows in two prefixes (a/, b/), then one AVIF row at the root, in a second run."""
    root = tmp_path_factory.mktemp("report")
    src1, src2, table = root / "src1", root / "src2", root / "table"
    for i, key in enumerate(["a/one.png", "a/two.png", "b/three.png"]):
        (src1 / key).parent.mkdir(parents=True, exist_ok=True)
        (src1 / key).write_bytes(photo_png(i, 72, 64))
    (src2).mkdir()
    (src2 / "root.png").write_bytes(photo_png(3, 72, 64))
    opts = dict(quality=60, batch_size=2, workers=1)
    r1 = run_compress(str(src1), str(table), CompressOptions(CodecSpec(weights=str(MODELS)), **opts))
    r2 = run_compress(str(src2), str(table), CompressOptions(codec="avif", **opts))
    assert r1["rows"] == 3 and r2["rows"] == 1 and r1["errors"] == r2["errors"] == 0
    return root, table


def test_report_numbers_match_the_table(table_dir, capsys):
    root, table_path = table_dir
    table = BitstreamTable(str(table_path))
    t = table.read(columns=["key", "codec", "source_size", "payload_size", "bpp", "psnr"])
    rows = t.to_pylist()
    price = 0.05
    r = build_report(table, price_per_gb_month=price)

    assert r["rows"] == 4 and r["errors"] == 0
    assert r["original_bytes"] == sum(x["source_size"] for x in rows)
    assert r["payload_bytes"] == sum(x["payload_size"] for x in rows)
    files = table.data_files()
    assert len(files) == r["data_files"] >= 2
    assert r["stored_bytes"] == sum((table_path / "data" / f.rsplit("/", 1)[1]).stat().st_size for f in files)
    assert r["stored_bytes"] > r["payload_bytes"]  # the files hold more than the payloads
    assert r["ratio"] == pytest.approx(r["original_bytes"] / r["stored_bytes"])
    assert r["usd_per_month_saved"] == pytest.approx(max(0, r["original_bytes"] - r["stored_bytes"]) / GIB * price)

    # per codec
    assert set(r["per_codec"]) == {DEFAULT_CODEC, "avif"}
    assert r["per_codec"][DEFAULT_CODEC]["rows"] == 3 and r["per_codec"]["avif"]["rows"] == 1
    for c, g in r["per_codec"].items():
        mine = [x for x in rows if x["codec"] == c]
        assert g["original_bytes"] == sum(x["source_size"] for x in mine)
        assert g["payload_bytes"] == sum(x["payload_size"] for x in mine)
        assert g["usd_per_month_saved"] == pytest.approx(
            max(0, g["original_bytes"] - g["stored_bytes_est"]) / GIB * price)
    assert sum(g["stored_bytes_est"] for g in r["per_codec"].values()) == pytest.approx(r["stored_bytes"])

    # per prefix
    assert prefix_of("a/b/c.png") == "a" and prefix_of("x.png") == "(root)"
    assert {k: g["rows"] for k, g in r["per_prefix"].items()} == {"a": 2, "b": 1, "(root)": 1}
    assert r["per_prefix"]["a"]["original_bytes"] == sum(x["source_size"] for x in rows if x["key"].startswith("a/"))

    # distributions
    assert r["bpp"]["n"] == 4 and r["bpp"]["mean"] == pytest.approx(sum(x["bpp"] for x in rows) / 4)
    assert r["bpp"]["min"] <= r["bpp"]["p50"] <= r["bpp"]["max"]
    assert sum(r["bpp"]["histogram"]["counts"]) == 4
    assert r["psnr"]["mean"] == pytest.approx(sum(x["psnr"] for x in rows) / 4)

    # terminal output and JSON through the CLI
    assert main(["report", str(table_path), "--price-per-gb-month", str(price)]) == 0
    out = capsys.readouterr().out
    assert "4 rows, 0 errors" in out and "tae-f2" in out and "avif" in out and "(root)" in out
    assert f"{r['original_bytes']} B" in out and f"{r['stored_bytes']} B" in out and "Parquet" in out

    assert main(["report", str(table_path), "--json", "--price-per-gb-month", str(price)]) == 0
    j = json.loads(capsys.readouterr().out)
    assert j["rows"] == 4 and j["stored_bytes"] == r["stored_bytes"]
    assert j["per_prefix"]["b"]["rows"] == 1
    assert math.isclose(j["usd_per_month_saved"], r["usd_per_month_saved"])


def test_report_html_has_plots_and_crops(table_dir, tmp_path, capsys):
    root, table_path = table_dir
    page = tmp_path / "report.html"
    assert main(["report", str(table_path), "--html", str(page)]) == 0
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and "<style>" in text
    assert text.count("data:image/png;base64,") >= 3 + 2 * 4  # bar + 2 histograms, 4 original/decoded pairs
    assert "alt='bytes per codec'" in text and "histogram" in text
    for key in ("a/one.png", "a/two.png", "b/three.png", "root.png"):
        assert f"alt='decoded {key}'" in text and f"alt='original {key}'" in text
    assert "http://" not in text and "https://" not in text  # self-contained


def test_report_html_when_the_original_is_gone(table_dir, tmp_path):
    root, table_path = table_dir
    gone = root / "src2" / "root.png"
    data = gone.read_bytes()
    gone.unlink()
    try:
        page = tmp_path / "r.html"
        assert main(["report", str(table_path), "--html", str(page)]) == 0
        text = page.read_text()
        assert "alt='decoded root.png'" in text and "alt='original root.png'" not in text
        assert "the original is gone" in text
    finally:
        gone.write_bytes(data)


def test_report_on_a_missing_table_is_a_usage_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "no committed table" in capsys.readouterr().err
