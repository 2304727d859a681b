"""Encoder-side latent search (codec/latent_search.py) on the real tae-f2 weights and real photo crops."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from latentarc.codec.spec import DEFAULT_CODEC
from latentarc.codec.autoencoder import LatentAutoencoder
from latentarc.codec.latent_search import LatentSearch, search_latent
from latentarc.codec.metrics import psnr
from latentarc.codec.neural import NeuralCodec
from latentarc.jobs.cli import main

from .conftest import photo_crop

pytestmark = pytest.mark.shared("models", "photos")


def _tensors(pic, model):
    x = torch.from_numpy(pic.rgb).permute(2, 0, 1)[None].float() / 255.0
    with torch.no_grad():
        return x, model.encode(x)


def test_tiled_gradient_equals_whole_graph_gradient(codec):
    """The tile-by-tile backward (bounded memory) gives the error and gradient of the whole decoded image."""
    pic = photo_crop(3, 160)  # 20×20 latents: with 8-latent tiles, 9 tiles and every kind of border
    model = copy.copy(codec.model)
    model.tile = 8
    x, z = _tensors(pic, model)
    weight = torch.ones((1, 1, 160, 160))
    weight[..., 150:, :] = 0  # a padded strip that must not count
    err_t, grad_t = model.decoded_error_grad(z, x, weight)
    err_w, grad_w = LatentAutoencoder.decoded_error_grad(model, z, x, weight)
    assert err_t == pytest.approx(err_w, rel=1e-4)
    assert grad_t.abs().max() > 0
    torch.testing.assert_close(grad_t, grad_w, rtol=1e-3, atol=1e-3 * float(grad_w.abs().max()))


def test_search_raises_decoded_psnr_and_counts_only_the_image(codec):
    pic = photo_crop(5, 104)  # 13 latents; the search sees the image padded to 112 px below
    x, z = _tensors(pic, codec.model)
    padded = torch.nn.functional.pad(x, (0, 8, 0, 8), mode="replicate")
    with torch.no_grad():
        z = codec.model.encode(padded)
        before = codec.model.decode(z)[:, :, :104, :104]
    res = search_latent(codec.model, z, padded, (104, 104), LatentSearch(iterations=6))
    # psnr_before is the encoder latent's decoded PSNR on the image's own 104×104 pixels, nothing else
    expected = 10 * np.log10(1.0 / float(((before - x) ** 2).mean()))
    assert res.psnr_before == pytest.approx(expected, abs=1e-3)
    assert res.psnr_after > res.psnr_before + 0.5
    with torch.no_grad():
        after = codec.model.decode(res.latent)[:, :, :104, :104]
    assert 10 * np.log10(1.0 / float(((after - x) ** 2).mean())) == pytest.approx(res.psnr_after, abs=1e-3)


def test_searched_stream_is_better_and_any_decoder_reads_it(codec):
    pic = photo_crop(11, 128)
    searched = NeuralCodec(codec.model, latent_search=LatentSearch(iterations=8))
    plain = codec.encode(pic, quality=70)
    res = searched.encode(pic, quality=70)
    s = res.params["latent_search"]
    assert s["iterations"] == 8 and s["psnr_after"] > s["psnr_before"]
    assert res.psnr > plain.psnr + 0.5  # measured by decoding the stream
    assert res.bpp < 1.2 * plain.bpp
    # the stream format is unchanged: a codec without the search decodes it to the pixels the encoder measured
    decoded = codec.decode(res.data)
    assert psnr(pic.reference(), decoded.rgb) == pytest.approx(res.psnr, abs=1e-9)


@pytest.mark.parametrize("bad", [{"iterations": -1}, {"lr": 0.0}, {"lr": float("nan")}])
def test_bad_search_settings_are_refused(bad):
    with pytest.raises(ValueError):
        LatentSearch(**bad)


def test_bench_spec_and_cli_flag(codec, tmp_path, capsys):
    from PIL import Image

    from latentarc.jobs.rd_bench import BenchCodec, build_codec, default_points

    assert BenchCodec.parse("tae-f2@tae-f2-ctx:0.5+search=3") == ("tae-f2", "tae-f2-ctx:0.5", 3, False, False)
    assert BenchCodec.parse("avif") == ("avif", "", None, False, False)
    assert BenchCodec.parse("tae-f2+global+search=2") == ("tae-f2", "", 2, True, False)
    assert BenchCodec.parse("tae-f2-ft+fullres").full_resolution and BenchCodec.parse("tae-f2-ft+fullres").is_variant
    c = build_codec("tae-f2@tae-f2-ctx+search=3")
    assert c.latent_search.iterations == 3 and c.coder.name == "tae-f2-ctx"
    assert build_codec("tae-f2+fullres").coded_scales == (1.0,) and len(build_codec("tae-f2").coded_scales) > 1
    assert default_points("tae-f2+search=3") == default_points("tae-f2")
    for bad in ("avif+search=3", "avif+global", "avif+fullres", "tae-f2+search=many", "tae-f2+fast"):
        with pytest.raises(ValueError):
            build_codec(bad)

    src, out = tmp_path / "in.png", tmp_path / "a.larc"
    Image.fromarray(photo_crop(2, 96).rgb).save(src)
    assert main(["encode", str(src), str(out), "--quality", "60", "--latent-search", "2"]) == 0
    printed = capsys.readouterr().out
    assert "latent_search: 2 steps" in printed
    assert main(["encode", str(src), str(out), "--latent-search", "-1"]) != 0
    assert "iterations must be ≥ 0" in "".join(capsys.readouterr())
    assert main(["info", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["codec"] == DEFAULT_CODEC
