"""End-to-end codec behaviour on real photos: determinism, rate control, quality floors, info."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from latentarc.codec.errors import QualityFloorUnreachable
from latentarc.codec.images import colour_planes
from latentarc.codec.metrics import psnr
from latentarc.codec.spec import DEFAULT_CODEC
from latentarc.jobs.cli import main

from .conftest import photo_crop

pytestmark = pytest.mark.shared("models", "photos")


def test_same_image_same_bytes(codec):
    pic = photo_crop(4, 96)
    assert codec.encode(pic, quality=60).data == codec.encode(pic, quality=60).data


def test_one_analysis_codes_every_operating_point(codec, global_codec):
    """A shared analysis (what the RD bench does) gives the very bytes a fresh encode gives, at a quality and at
    a bpp target; an analysis of another picture, or by another codec, is refused rather than coded."""
    pic, other = photo_crop(4, 96), photo_crop(5, 96)
    a = codec.analyse(pic)
    for knob in ({"quality": 30}, {"quality": 80}, {"target_bpp": 0.6}):
        assert codec.encode(pic, analysis=a, **knob).data == codec.encode(pic, **knob).data
    with pytest.raises(ValueError, match="another picture"):
        codec.encode(other, quality=50, analysis=a)
    with pytest.raises(ValueError, match="another codec"):
        global_codec.encode(pic, quality=50, analysis=a)


def test_decode_identical_across_thread_counts(codec):
    """Encode with 2 threads, decode with 1 and with 2: identical pixels (DESIGN.md §5)."""
    pic = photo_crop(6, 192)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        data = codec.encode(pic, quality=50, measure=False).data
        a = codec.decode(data).rgb
        torch.set_num_threads(1)
        b = codec.decode(data).rgb
        enc1 = codec.encode(pic, quality=50, measure=False).data
    finally:
        torch.set_num_threads(old)
    assert np.array_equal(a, b)
    assert enc1 == data


def test_quality_orders_rate_and_distortion(codec):
    pic = photo_crop(8, 128)
    lo, hi = codec.encode(pic, quality=20), codec.encode(pic, quality=80)
    assert lo.bpp < hi.bpp
    assert lo.psnr < hi.psnr
    # the recorded PSNR is what decoding really gives
    assert hi.psnr == pytest.approx(psnr(pic.reference(), codec.decode(hi.data).rgb), abs=1e-9)


@pytest.mark.parametrize("index", [1, 11, 23])
@pytest.mark.parametrize("target", [0.4, 1.2])
def test_target_bpp_lands_within_5_percent(codec, index, target):
    pic = photo_crop(index, 192)
    res = codec.encode(pic, target_bpp=target, measure=False)
    assert abs(res.bpp / target - 1) <= 0.05


@pytest.mark.parametrize("index,margin", [(3, 1.0), (12, 3.0), (30, 6.0)])
def test_min_psnr_never_below_floor(codec, index, margin):
    """Floors a few dB under what the codec can reach on each image (achievable PSNR varies by content)."""
    pic = photo_crop(index, 96)
    floor = codec.encode(pic, quality=100).psnr - margin
    res = codec.encode(pic, min_psnr=floor)
    measured = psnr(pic.reference(), colour_planes(codec.decode(res.data).rgb, pic.mode))
    assert measured >= floor
    assert res.psnr == pytest.approx(measured)
    # and it is not wastefully fine: the best quality costs more bytes
    assert len(res.data) < len(codec.encode(pic, quality=100, measure=False).data)


def test_unreachable_floor_is_a_typed_error(codec):
    with pytest.raises(QualityFloorUnreachable, match="below the floor"):
        codec.encode(photo_crop(3, 64), min_psnr=60)


def test_adaptive_steps_differ_per_channel(codec, global_codec):
    pic = photo_crop(9, 128)
    steps = codec.info(codec.encode(pic, quality=50, measure=False).data)["steps"]
    assert len(set(steps)) > 8
    flat = global_codec.info(global_codec.encode(pic, quality=50, measure=False).data)["steps"]
    assert len(set(flat)) == 1


def test_cli_encode_info_decode(tmp_path, capsys):
    from .conftest import PHOTOS

    from PIL import Image

    src = tmp_path / "in.png"
    Image.open(sorted(PHOTOS.glob("*.png"))[7]).crop((0, 0, 200, 150)).save(src)
    out, dec = tmp_path / "a.larc", tmp_path / "a.png"
    assert main(["encode", str(src), str(out), "--quality", "70"]) == 0
    assert main(["info", str(out)]) == 0
    info = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert info["width"] == 200 and info["height"] == 150 and info["codec"] == DEFAULT_CODEC
    # payload within 3% of the ideal code length plus side information
    assert info["stream_bytes"] <= 1.03 * info["ideal_total_bytes"]
    assert main(["decode", str(out), str(dec)]) == 0
    restored = np.asarray(Image.open(dec))
    assert restored.shape == (150, 200, 3)
    assert psnr(np.asarray(Image.open(src)), restored) > 24
