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


def test_is_the_default_codec_and_refines_realistically_with_its_own_denoiser():
    """tae-f2-ft is what a stream is coded with when no codec is named. Its realistic mode has a shipped denoiser
    for its latents: hash pinned, bound to its decoder (stock streams keep the stock denoisers), fine-tuned from the
    stock realistic one with the normalisation of its own latents, never trained on the evaluation photos, its
    terms on its card; its faithful mode decodes unrefined (next test)."""
    import json
    from pathlib import Path

    from latentarc.codec import refine as R
    from latentarc.codec.spec import DEFAULT_AUTO_CODECS, DEFAULT_CODEC, CodecSpec

    from .conftest import PHOTOS

    assert DEFAULT_CODEC == NAME and CodecSpec().name == NAME and DEFAULT_AUTO_CODECS[0] == NAME
    assert load_codec(device="cpu").model.name == NAME
    ft, stock = load_codec(NAME, device="cpu"), load_codec("tae-f2", device="cpu")
    assert R.DEFAULT_REFINERS[NAME] == {"realistic": R.FT_REALISTIC_NAME} and set(R.UNREFINED[NAME]) == {"faithful"}
    folder = R.PACKAGE_WEIGHTS / R.FT_REALISTIC_NAME
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["name"] == R.FT_REALISTIC_NAME and cfg["model_sha256"] == R.SHIPPED_DENOISERS[R.FT_REALISTIC_NAME]
    assert cfg["codec"] == NAME and cfg["decoder_sha256"] == ft.model.fingerprint != stock.model.fingerprint
    assert cfg["init"]["from"].endswith(R.REALISTIC_NAME) and cfg["detail_weight"] > 0
    parent = json.loads((R.PACKAGE_WEIGHTS / R.REALISTIC_NAME / "config.json").read_text())
    assert np.abs(np.subtract(cfg["latent_mean"], parent["latent_mean"])).max() > 0.5
    assert not {p.name for p in PHOTOS.iterdir()} & {Path(n).name for n in cfg["trained_on"] + cfg["held_out"]}
    assert "non-commercial" in (folder / "CARD.md").read_text()
    ours, stocks = (R.refiner_for_codec(c, mode="realistic") for c in (NAME, "tae-f2"))
    assert ours.fingerprint() != stocks.fingerprint()
    R.check_latent_space(ours, ft.model.fingerprint)


def test_realistic_refinement_of_its_streams_brings_back_detail():
    """On a held-out photo at 0.1 bpp, the realistic mode's default single step on a tae-f2-ft stream brings the
    sharpness closer to the original's and lowers DISTS, deterministically; a --verify-realistic stream decodes to
    what its encoder measured best, below the unrefined decode on LPIPS and DISTS (the card's figures, one photo)."""
    from latentarc.codec.classical import decoded_planes
    from latentarc.codec.metrics import METRICS, Reference, sharpness_ratio
    from latentarc.codec.refine import RefineConfig

    pic = photo_crop(9, 384)  # 010.png
    codec = load_codec(NAME, device="cpu")
    data = codec.encode(pic, target_bpp=0.1, measure=False).data
    ref, original = Reference(pic.reference()), pic.reference()
    unrefined = decoded_planes(codec.decode(data), pic.mode)
    refined = codec.decode(data, refine=RefineConfig("realistic"))
    assert refined.refinement == "realistic/1 (unverified)"
    planes = decoded_planes(refined, pic.mode)
    assert METRICS.get("dists")(ref, planes) < METRICS.get("dists")(ref, unrefined)
    assert sharpness_ratio(original, planes) > sharpness_ratio(original, unrefined) + 0.05
    assert np.array_equal(refined.rgb, codec.decode(data, refine=RefineConfig("realistic", seed=9)).rgb)

    checked = load_codec(NAME, device="cpu", verify_realistic=True).encode(pic, target_bpp=0.1).data
    verified = decoded_planes(codec.decode(checked, refine=RefineConfig("realistic")), pic.mode)
    plain = decoded_planes(codec.decode(checked), pic.mode)
    for metric in ("lpips", "dists"):
        assert METRICS.get(metric)(ref, verified) < METRICS.get(metric)(ref, plain), metric


def test_faithful_refinement_leaves_its_latents_as_they_are_and_says_why(tmp_path, capsys):
    """Faithful refinement of a tae-f2-ft stream is the unrefined decode (refine.UNREFINED: a denoiser for its
    latents measured no gain), and the decode says why; the encoder has no faithful check to record. A refiner
    named explicitly still runs — the stock denoiser is refused, being bound to another decoder."""
    import json

    from PIL import Image

    from latentarc.codec.refine import UNREFINED
    from latentarc.jobs.cli import main

    from .conftest import PHOTOS

    src, stream = tmp_path / "c.png", tmp_path / "c.larc"
    Image.open(sorted(PHOTOS.glob("*.png"))[19]).crop((200, 200, 296, 296)).save(src)
    assert main(["encode", str(src), str(stream), "--quality", "10", "--verify-refine", "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["info", str(stream), "--device", "cpu"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["codec"] == NAME and info["refine_verified"] is None
    plain, faithful = tmp_path / "n.png", tmp_path / "f.png"
    assert main(["decode", str(stream), str(plain), "--device", "cpu"]) == 0
    assert main(["decode", str(stream), str(faithful), "--refine", "faithful", "--device", "cpu"]) == 0
    said = capsys.readouterr().out.strip().splitlines()[-1]
    assert said.endswith(f"refinement none ({UNREFINED[NAME]['faithful']})")
    assert np.array_equal(np.asarray(Image.open(plain)), np.asarray(Image.open(faithful)))
    assert main(["decode", str(stream), str(tmp_path / "s.png"), "--refine", "faithful", "--refiner",
                 "tae-f2-denoiser", "--device", "cpu"]) == 2
    assert "trained for the decoder" in capsys.readouterr().err
