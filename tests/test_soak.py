"""``latentarc bench-soak``: a compress run watched over time (throughput and per-process memory)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from latentarc.jobs import soak_bench
from latentarc.jobs.cli import build_parser

from .conftest import MODELS, PHOTOS


def test_rates_and_growth_from_samples():
    samples = [{"t": float(t), "done": 3 * t} for t in range(0, 101)]  # a steady 3 images/s
    r = soak_bench.rates(samples, window=10)
    assert all(v == pytest.approx(3.0) for _, v in r)
    mb = 2**20
    flat = soak_bench.growth([(float(t), 500 * mb) for t in range(101)], 100)
    assert flat["growth_mb"] == 0
    leak = soak_bench.growth([(float(t), (500 + t) * mb) for t in range(101)], 100)
    assert leak["early_mb"] == pytest.approx(529.5) and leak["growth_mb"] == pytest.approx(60.5)
    assert soak_bench.growth([(0.0, mb)], 100) is None  # too short to tell


@pytest.mark.shared("photos")
def test_synthesised_images_are_distinct_and_resumable(tmp_path):
    photos = sorted(PHOTOS.glob("*.png"))[:2]
    keys = soak_bench.synthesise(photos, tmp_path, 5, 32, seed=1)
    assert keys == [f"000/{i:03d}.png" for i in range(5)]
    arrays = [np.asarray(Image.open(tmp_path / k)) for k in keys]
    assert all(a.shape == (32, 32, 3) for a in arrays)
    assert len({a.tobytes() for a in arrays}) == 5
    before = (tmp_path / keys[3]).read_bytes()
    (tmp_path / keys[4]).unlink()
    assert soak_bench.synthesise(photos, tmp_path, 5, 32, seed=1) == keys  # a resumed synthesis draws the same
    assert (tmp_path / keys[3]).read_bytes() == before
    assert np.array_equal(np.asarray(Image.open(tmp_path / keys[4])), arrays[4])


@pytest.mark.usefixtures("ray_cluster")
@pytest.mark.shared("models", "photos")
def test_bench_soak_end_to_end(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LATENTARC_MODEL_DIR", str(MODELS))
    out = tmp_path / "soak"
    args = build_parser().parse_args(["bench-soak", str(PHOTOS), "--images", "16", "--size", "48", "--out", str(out),
                                      "--interval", "0.2", "--rows-per-part", "4", "--quality", "40"])
    assert soak_bench.run(args) == 0
    data = json.loads((out / "soak.json").read_text())
    s = data["summary"]
    assert s["images"] == s["rows"] == 16 and s["errors"] == 0
    done = [x["done"] for x in data["samples"]]
    assert done == sorted(done) and done[-1] == 16  # progress counted from the parts, never backwards
    assert all(x["driver"] > 50 * 2**20 for x in data["samples"])  # this process, really measured
    # the model actors were found among the driver's descendants by their process title
    assert any(x["actors"] for x in data["samples"]) and s["actor_processes"] >= 1
    assert all(rss > 50 * 2**20 for x in data["samples"] for rss in x["actors"].values())
    assert (out / "soak.png").stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "16 → 16 rows, 0 errors" in printed and "driver RSS" in printed
    assert os.path.isdir(out / "table" / "_commits")
