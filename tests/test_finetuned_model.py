"""The shipped fine-tuned autoencoder ``tae-f2-ft`` and its context model ``tae-f2-ft-ctx``: loaded by name with
pinned hashes, coding new streams with its own entropy model unless told otherwise, decodable from the stream
alone, and better than the stock model at equal rate on a held-out photo."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from latentarc.codec import encoders
from latentarc.codec.api import codec_for_stream, load_codec
from latentarc.codec.errors import WeightsChecksumMismatch
from latentarc.codec.metrics import psnr
from latentarc.codec.models import spec

from .conftest import photo_crop

pytestmark = pytest.mark.shared("models", "photos")

NAME = "tae-f2-ft"


def test_loads_by_name_with_its_fingerprint_and_its_own_entropy_model():
    ft = load_codec(NAME, device="cpu")
    pinned = encoders.SHIPPED_FT[NAME]
    assert ft.model.name == NAME and ft.model.fingerprint == pinned.decoder_sha256
    assert (ft.coder.name, ft.coder.id, ft.rdoq) == ("tae-f2-ft-ctx", 5, 0.0)
    assert ft.coder.model.latent_model == NAME
    assert load_codec("tae-f2", device="cpu").coder.name == "per-channel"  # stock streams are as they were
    assert load_codec(NAME, device="cpu", entropy_model="per-channel").coder.name == "per-channel"


def test_streams_decode_alone_and_beat_stock_at_equal_rate():
    """Both models at the same target rate on a held-out crop: the fine-tuned one is more than 0.5 dB closer to the
    photo, and its stream names its model and decodes through the registry to the pixels it measured."""
    pic = photo_crop(7, 256)
    ref = pic.reference()
    got = {}
    for name in ("tae-f2", NAME):
        res = load_codec(name, device="cpu").encode(pic, target_bpp=1.0)
        decoder = codec_for_stream(res.data)
        info = decoder.info(res.data)
        assert info["codec"] == name
        dec = decoder.decode(res.data)
        got[name] = (res.bpp, psnr(ref, np.asarray(dec.image.convert("RGB"))), res.psnr)
    (bpp0, p0, _), (bpp1, p1, measured) = got["tae-f2"], got[NAME]
    assert abs(p1 - measured) < 0.01
    assert bpp1 <= bpp0 * 1.03 and p1 > p0 + 0.5, got


def test_a_tampered_file_is_refused(tmp_path, monkeypatch):
    shipped = encoders.WEIGHTS_DIR / NAME
    fake = tmp_path / NAME
    shutil.copytree(shipped, fake)
    data = (fake / encoders.DECODER_FILE).read_bytes()
    (fake / encoders.DECODER_FILE).write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    monkeypatch.setattr(encoders, "WEIGHTS_DIR", tmp_path)
    s = spec(NAME)
    with pytest.raises(WeightsChecksumMismatch):
        s.build(s, dict(s.options, paths={}, weights=None))
