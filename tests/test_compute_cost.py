"""Cost beside savings: rows record compute_s, the run summary and `latentarc report` price it and give the payback
per codec; older tables without the column still report; `bench --codecs` gives MP/s per core.

Tiny crops and the classical codecs (AVIF, JPEG XL): the neural codec is not the point here.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import pyarrow.parquet as pq
import pytest

from latentarc.jobs.cli import main
from latentarc.pipeline.compress import CompressOptions, run_compress
from latentarc.pipeline.report import build_report, format_report
from latentarc.pipeline.savings import (DEFAULT_PRICE_PER_CPU_HOUR, compute_cost, cost_lines, payback_text,
                                        summary_lines)
from latentarc.pipeline.table import BitstreamTable

from .conftest import photo_png

pytestmark = [pytest.mark.usefixtures("ray_cluster"), pytest.mark.shared("models", "photos")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, ray_cluster):
    """Two AVIF rows (run_compress), then one JPEG XL row through the CLI with its own CPU price."""
    root = tmp_path_factory.mktemp("cost")
    src1, src2, table = root / "src1", root / "src2", root / "table"
    src1.mkdir()
    src2.mkdir()
    for i in (0, 1):
        (src1 / f"a{i}.png").write_bytes(photo_png(i, 80, 64))
    (src2 / "b.png").write_bytes(photo_png(2, 80, 64))
    r1 = run_compress(str(src1), str(table), CompressOptions(codec="avif", quality=50, batch_size=2, workers=1))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["compress", str(src2), str(table), "--codec", "jxl", "--quality", "50", "--workers", "1",
                   "--no-progress", "--price-per-cpu-hour", "2.5"])
    assert rc == 0 and r1["rows"] == 2
    reports = sorted((table / "_reports").glob("*.json"))
    r2 = next(json.loads(p.read_text()) for p in reports if json.loads(p.read_text())["run_id"] != r1["run_id"])
    return table, r1, r2, out.getvalue()


def test_rows_record_compute_seconds(runs):
    table, *_ = runs
    rows = BitstreamTable(str(table)).read(columns=["key", "codec", "compute_s", "gpu_s"]).to_pylist()
    assert [r["codec"] for r in rows] == ["avif", "avif", "jxl"]
    assert all(r["compute_s"] > 0 and r["gpu_s"] is None for r in rows)  # on CPU: no GPU seconds


def test_run_summary_prices_compute_and_payback(runs):
    table, r1, r2, printed = runs
    rows = BitstreamTable(str(table)).read(columns=["key", "codec", "compute_s"]).to_pylist()
    cpu1 = sum(r["compute_s"] for r in rows if r["codec"] == "avif")
    assert r1["compute_s"] == pytest.approx(cpu1) and r1["compute_rows"] == 2
    assert r1["price_per_cpu_hour"] == DEFAULT_PRICE_PER_CPU_HOUR
    assert r1["usd_compute"] == pytest.approx(cpu1 / 3600 * DEFAULT_PRICE_PER_CPU_HOUR)
    assert r1["usd_per_month_saved"] > 0
    assert r1["payback_months"] == pytest.approx(r1["usd_compute"] / r1["usd_per_month_saved"])
    assert set(r1["per_codec"]) == {"avif"}
    assert r1["per_codec"]["avif"]["usd_compute"] == pytest.approx(r1["usd_compute"])
    # the CLI run: its own price, in the JSON and on screen
    cpu2 = next(r["compute_s"] for r in rows if r["codec"] == "jxl")
    assert r2["price_per_cpu_hour"] == 2.5 and r2["usd_compute"] == pytest.approx(cpu2 / 3600 * 2.5)
    assert r2["payback_months"] == pytest.approx(r2["usd_compute"] / r2["usd_per_month_saved"])
    assert "$2.5/CPU-hour" in printed and "payback" in printed and "jxl" in printed
    assert all(line in printed.splitlines() for line in summary_lines(r2))


def test_report_compute_cost_and_payback_per_codec(runs, capsys):
    table, *_ = runs
    t = BitstreamTable(str(table))
    rows = t.read(columns=["codec", "compute_s"]).to_pylist()
    price = 0.5
    r = build_report(t, price_per_cpu_hour=price)
    total = sum(x["compute_s"] for x in rows)
    assert r["compute_s"] == pytest.approx(total) and r["gpu_s"] is None and r["compute_rows"] == 3
    assert r["usd_compute"] == pytest.approx(total / 3600 * price)
    assert r["payback_months"] == pytest.approx(r["usd_compute"] / r["usd_per_month_saved"])
    assert set(r["per_codec"]) == {"avif", "jxl"}
    for name, g in r["per_codec"].items():
        cpu = sum(x["compute_s"] for x in rows if x["codec"] == name)
        assert g["usd_compute"] == pytest.approx(cpu / 3600 * price)
        assert g["payback_months"] == pytest.approx(g["usd_compute"] / g["usd_per_month_saved"])
    text = format_report(r)
    assert "$0.5/CPU-hour" in text and all(line in text for line in cost_lines(r))
    assert main(["report", str(table), "--price-per-cpu-hour", "0.5", "--json"]) == 0
    js = json.loads(capsys.readouterr().out)
    assert js["usd_compute"] == pytest.approx(r["usd_compute"])
    assert js["per_codec"]["jxl"]["payback_months"] == pytest.approx(r["per_codec"]["jxl"]["payback_months"])


def test_payback_never_when_nothing_is_saved():
    g = {"rows": 2, **compute_cost(compute_s=4.0, gpu_s=1.0, compute_rows=2, rows=2, usd_per_month_saved=0.0,
                                   price_per_cpu_hour=0.036, price_per_gpu_hour=3.6)}
    assert g["usd_compute"] == pytest.approx(4.0 / 3600 * 0.036 + 1.0 / 3600 * 3.6)
    assert g["payback_months"] is None and payback_text(g).startswith("never")
    part = {"rows": 3, **compute_cost(compute_s=4.0, gpu_s=None, compute_rows=2, rows=3, usd_per_month_saved=1.0,
                                      price_per_cpu_hour=1.0, price_per_gpu_hour=1.0)}
    assert part["payback_months"] is None and "2 of 3" in payback_text(part)


def test_older_tables_without_the_columns_still_report(runs, tmp_path):
    table, *_ = runs
    old = tmp_path / "old"
    shutil.copytree(table, old)
    for part in old.rglob("data/*.parquet"):
        pq.write_table(pq.read_table(part).drop_columns(["compute_s", "gpu_s"]), part)
    t = BitstreamTable(str(old))
    assert all(x["compute_s"] is None for x in t.read(columns=["key", "compute_s"]).to_pylist())
    r = build_report(t)
    assert r["rows"] == 3 and r["usd_per_month_saved"] > 0
    assert r["usd_compute"] is None and r["payback_months"] is None and r["compute_rows"] == 0
    assert all(g["usd_compute"] is None for g in r["per_codec"].values())
    assert "compute: not recorded" in format_report(r)


def test_rd_bench_speed_per_core(tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.png").write_bytes(photo_png(3, 64, 64))
    out = tmp_path / "rd"
    assert main(["bench", str(folder), "--codecs", "avif,jxl", "--qualities", "40,70", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "speed per core" in printed and "MP/s/core" in printed
    r = json.loads((out / "rd.json").read_text())
    for c in ("avif", "jxl"):
        s = r["speed"][c]
        for side in ("encode", "decode"):
            assert s[f"{side}_mp_s_per_core"] == pytest.approx(s[f"{side}_mp_s"] / s[f"{side}_cores"])
            assert s[f"{side}_cores"] > 0
    assert r["threads"] >= 1
