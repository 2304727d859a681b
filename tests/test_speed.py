"""What makes the CPU path fast — balanced tiles with the networks' exact reach, bfloat16 encoder-side passes —
keeps every result it promises, and ``bench-speed`` compares variants (a source tree against another) in one run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from latentarc.codec.api import load_codec
from latentarc.codec.images import read_image
from latentarc.codec.metrics import psnr
from latentarc.codec.precision import encoder_dtype, native_bfloat16
from latentarc.codec.tiling import spans, tile_grid
from latentarc.jobs import speed_bench

from .conftest import REPO, photo_crop, photo_png

needs_shared = pytest.mark.shared("models", "photos")


@pytest.mark.parametrize("n,tile", [(1, 128), (128, 128), (129, 128), (159, 128), (500, 128), (375, 64)])
def test_spans_are_balanced_and_cover_the_axis(n, tile):
    s = spans(n, tile)
    assert s[0][0] == 0 and s[-1][1] == n and all(a[1] == b[0] for a, b in zip(s, s[1:]))
    sizes = [b - a for a, b in s]
    assert max(sizes) <= tile and max(sizes) - min(sizes) <= 1
    assert len(s) == -(-n // tile)


def test_tile_grid_halo_stays_inside_the_image():
    tiles = list(tile_grid(106, 159, 128, 9))  # rows, columns
    assert len(tiles) == 2  # a 1 MP photo's latent: two tiles across, one down
    for t in tiles:
        assert 0 <= t.ya <= t.y0 < t.y1 <= t.yb <= 106 and 0 <= t.xa <= t.x0 < t.x1 <= t.xb <= 159
        assert t.x0 - t.xa in (0, 9) and t.xb - t.x1 in (0, 9)


@needs_shared
def test_encoder_precision_choices(codec):
    model = codec.model
    assert codec.encoder_dtype is torch.float32  # the default
    assert encoder_dtype("float32", model) is torch.float32
    if native_bfloat16(model.device):
        assert encoder_dtype("bfloat16", model) is torch.bfloat16
    else:
        with pytest.raises(ValueError, match="native bfloat16"):
            encoder_dtype("bfloat16", model)
    with pytest.raises(ValueError, match="encoder precision"):
        encoder_dtype("float16", model)


def test_bfloat16_needs_a_model_that_supports_it():
    from latentarc.codec.autoencoder import LatentAutoencoder

    class Plain(LatentAutoencoder):  # a family without a lower-precision encoder (fast_dtypes empty)
        name, latent_channels = "plain", 4

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        fingerprint = "0" * 64

        def encode(self, images, *, dtype=torch.float32):
            return images[:, :1]

        def decode(self, latents):
            return latents

    with pytest.raises(ValueError, match="cannot run its encoder in bfloat16"):
        encoder_dtype("bfloat16", Plain())


@needs_shared
@pytest.mark.skipif(not native_bfloat16(torch.device("cpu")), reason="this CPU has no native bfloat16")
def test_bfloat16_encoder_streams_are_deterministic_and_as_good_as_float32():
    """The encoder-side passes in bfloat16 write other (valid) streams of about the same quality and size, the
    same stream every time; decoding stays float32 either way."""
    pic = photo_crop(7, 128)
    fast, exact = load_codec(encoder_precision="bfloat16"), load_codec(encoder_precision="float32")
    a, b = fast.encode(pic, quality=50), fast.encode(pic, quality=50)
    ref = exact.encode(pic, quality=50)
    assert a.data == b.data
    assert a.data != ref.data  # it really ran in another precision
    assert abs(a.psnr - ref.psnr) < 0.15
    assert abs(len(a.data) - len(ref.data)) <= 0.01 * len(ref.data)
    got = exact.decode(a.data).rgb
    assert np.array_equal(got, fast.decode(a.data).rgb)  # the decoder ignores how the stream was written
    assert psnr(pic.rgb, got) == pytest.approx(a.psnr, abs=1e-9)


def test_variant_parsing():
    v = speed_bench.Variant.parse("fp32:encoder_precision=float32,probes=1,latent_search=0.5")
    assert v.name == "fp32" and v.options == {"encoder_precision": "float32", "probes": 1, "latent_search": 0.5}
    for bad in ("fp32", "fp32:encoder_precision", ":a=b"):
        with pytest.raises(ValueError):
            speed_bench.Variant.parse(bad)


@needs_shared
def test_bench_speed_compares_a_source_tree_with_a_variant(tmp_path, monkeypatch):
    """A source tree run as the baseline codes like this package; a variant with other codec options is measured
    against it in the same run; every (image, variant, entropy model) is a row with its parts."""
    from .conftest import MODELS

    monkeypatch.setenv("LATENTARC_MODEL_DIR", str(MODELS))
    images = tmp_path / "images"
    images.mkdir()
    for i in (2, 9):
        (images / f"{i:03d}.png").write_bytes(photo_png(i, 64, 64))
    variants = [speed_bench.Variant("baseline", REPO), speed_bench.Variant.parse("global:adaptive=false")]
    result = speed_bench.run(sorted(images.iterdir()), variants, entropies=["per-channel"], quality=40, threads=1,
                             out=tmp_path / "out", progress=lambda m: None)
    rows = [json.loads(line) for line in (tmp_path / "out" / "rows.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 2
    s = result["summary"]
    assert set(s) == {"baseline/per-channel", "global/per-channel"}
    assert s["global/per-channel"]["d_psnr"] != 0 and s["global/per-channel"]["against"] == "baseline"
    # the baseline ran from a source tree put first on the path, this variant from the installed package: the
    # same code either way here, so the adaptive streams of both are byte-identical to a direct encode
    direct = load_codec(entropy_model="per-channel").encode(read_image((images / "002.png").read_bytes()),
                                                            quality=40, measure=False)
    base = next(r for r in rows if r["variant"] == "baseline" and r["image"] == "002.png")
    assert base["bytes"] == len(direct.data)
    for r in rows:
        assert r["encode_cpu_s"] > 0 and r["decode_cpu_s"] > 0 and r["peak_rss_mb"] > 0
        assert r["encode_parts"]["encoder network"] > 0 and r["decode_parts"]["decoder network"] > 0
        assert sum(r["decode_parts"].values()) == pytest.approx(r["decode_s"], rel=1e-6)
    assert "where the time went" in speed_bench.format_summary(result)
    assert json.loads((tmp_path / "out" / "speed.json").read_text())["summary"] == s


@needs_shared
def test_bench_speed_own_entropy_codes_each_model_with_its_own(tmp_path, monkeypatch):
    """``--entropy own``: each variant's model codes with its own entropy model — the default codec with its
    context model, stock tae-f2 per-channel — so one default is measured against another."""
    from latentarc.jobs.speed_probe import OWN_ENTROPY

    from .conftest import MODELS

    monkeypatch.setenv("LATENTARC_MODEL_DIR", str(MODELS))
    images = tmp_path / "images"
    images.mkdir()
    (images / "002.png").write_bytes(photo_png(2, 64, 64))
    variants = [speed_bench.Variant("new"), speed_bench.Variant.parse("stock:name=tae-f2")]
    result = speed_bench.run(sorted(images.iterdir()), variants, entropies=[OWN_ENTROPY], quality=40, threads=1,
                             out=tmp_path / "out", progress=lambda m: None)
    assert set(result["summary"]) == {"new/own", "stock/own"}
    rows = {r["variant"]: r for r in map(json.loads, (tmp_path / "out" / "rows.jsonl").read_text().splitlines())}
    pic = read_image((images / "002.png").read_bytes())
    for variant, codec in (("new", load_codec()), ("stock", load_codec("tae-f2"))):
        assert rows[variant]["bytes"] == len(codec.encode(pic, quality=40, measure=False).data), variant
    assert rows["new"]["bytes"] != rows["stock"]["bytes"]
