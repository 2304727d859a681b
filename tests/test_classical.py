"""Classical codecs (avif, jxl, webp, jpeg), passthrough and ``--codec auto``: round trips in every input kind,
the three knobs, container damage, bit-exact passthrough, and auto's choice in the codec and in a compress run."""

from __future__ import annotations

import functools
import io
import json

import numpy as np
import pytest
from PIL import Image

from latentarc.codec import bitstream
from latentarc.codec.api import codec_for_stream as api_codec_for_stream
from latentarc.codec.base import Codec
from latentarc.codec.classical import PassthroughCodec, decoded_planes
from latentarc.codec.codecs import AutoCodec, codec_for_stream, get_codec
from latentarc.codec.errors import (
    ChecksumMismatch,
    CorruptStream,
    QualityFloorUnreachable,
    UnreadableImage,
)
from latentarc.codec.images import Picture, read_image, restored_mode
from latentarc.codec.metrics import ms_ssim, psnr

from .conftest import EDGE, MODELS, PHOTOS, photo_crop

pytestmark = pytest.mark.shared("models", "photos", "edge")

CLASSICAL = ["avif", "jxl", "webp", "jpeg"]


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _crop(path, size: int, at: tuple[int, int] | None = None) -> Image.Image:
    im = Image.open(path)
    w, h = im.size
    x, y = at if at is not None else ((w - size) // 2, (h - size) // 2)
    return im.crop((x, y, x + size, y + size))


@functools.cache
def _pictures() -> dict[str, Picture]:
    rgb = photo_crop(1, 64).rgb
    alpha = np.tile(np.arange(64, dtype=np.uint8)[None, :] * 4, (64, 1))
    alpha[:, :16] = 0  # fully transparent columns: their colour must survive too
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    g16 = grey.astype(np.uint16) * 256 + np.arange(64, dtype=np.uint16)[None, :] * 3  # uses the low byte
    return {
        "RGB": read_image(_png(Image.fromarray(rgb))),
        "RGBA": read_image(_png(Image.fromarray(np.dstack([rgb, alpha]), "RGBA"))),
        "L": read_image(_png(Image.fromarray(grey, "L"))),
        "I;16": read_image(_png(Image.frombytes("I;16", (64, 64), g16.astype("<u2").tobytes()))),
    }


KINDS = ("RGB", "RGBA", "L", "I;16")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", CLASSICAL)
def test_round_trip_every_input_kind(name, kind):
    pic = _pictures()[kind]
    codec = get_codec(name)
    assert isinstance(codec, Codec) and codec.name == name
    res = codec.encode(pic, quality=85)
    s = bitstream.parse(res.data)
    assert (s.codec, s.width, s.height, s.mode, s.model_fingerprint) == (name, 64, 64, pic.mode, bytes(8))
    dec = api_codec_for_stream(res.data).decode(res.data)  # dispatch on the stream's codec name
    assert dec.image.mode == restored_mode(pic.mode, pic.alpha is not None) and dec.image.size == (64, 64)
    planes = decoded_planes(dec, pic.mode)
    assert psnr(pic.reference(), planes) == pytest.approx(res.psnr)  # recorded = what a restore gets
    assert res.psnr > 28
    if pic.alpha is not None:  # alpha is lossless in every format
        assert np.array_equal(np.asarray(dec.image.getchannel("A")), pic.alpha)
        assert res.params["alpha"] == ("native" if name == "webp" else "section")
    if kind == "I;16":
        values = np.asarray(dec.image).astype(np.uint16)
        if name == "jxl":  # coded at 16 bits: lossless at quality 100, low byte kept
            assert res.params.get("depth") == 16
            lossless = codec.encode(pic, quality=100)
            assert lossless.psnr == float("inf")
            assert np.array_equal(np.asarray(codec.decode(lossless.data).image).astype(np.uint16), pic.depth16)
        else:  # coded at 8 bits, restored × 257 like the neural codec
            assert not np.any(values % 257)
    info = codec.info(res.data)
    assert info["codec"] == name and info["stream_bytes"] == len(res.data)


@pytest.mark.parametrize("name", CLASSICAL)
def test_quality_orders_size(name):
    codec = get_codec(name)
    pic = _pictures()["RGB"]
    sizes = [len(codec.encode(pic, quality=q, measure=False).data) for q in (10, 50, 90)]
    assert sizes[0] < sizes[1] < sizes[2]


@pytest.mark.parametrize("name", CLASSICAL)
def test_target_bpp_lands_close(name):
    codec = get_codec(name)
    pic = photo_crop(0, 128)
    for target in (1.0, 2.0):
        res = codec.encode(pic, target_bpp=target)
        assert abs(res.bpp / target - 1) <= 0.10, (target, res.bpp, res.params)
        assert res.params["achieved_bpp"] == pytest.approx(res.bpp, abs=1e-4)


@pytest.mark.parametrize("name", CLASSICAL)
def test_min_psnr_never_below_the_floor(name):
    codec = get_codec(name)
    pic = _pictures()["RGB"]
    for floor in (30.0, 38.0):
        res = codec.encode(pic, min_psnr=floor)
        measured = psnr(pic.reference(), decoded_planes(codec.decode(res.data), pic.mode))
        assert measured >= floor and measured == pytest.approx(res.psnr)
        lib = res.params["library"]
        if "quality" in lib and lib["quality"] > (1 if name == "jpeg" else 0):  # the rung below misses the floor
            assert codec.encode(pic, quality=lib["quality"] - 1).psnr < floor
    if name in ("webp", "jxl"):  # lossless is the top rung: any floor is reachable
        res = codec.encode(pic, min_psnr=60)
        assert res.psnr == float("inf") and res.params["library"] == {"lossless": True}
    else:
        with pytest.raises(QualityFloorUnreachable):
            codec.encode(pic, min_psnr=60)


@pytest.mark.parametrize("name", CLASSICAL + ["passthrough"])
def test_damage_is_caught(name):
    codec = get_codec(name)
    pic = _pictures()["RGBA"]
    data = codec.encode(pic, quality=50).data
    s = bitstream.parse(data)
    at = data.index(s.payload) + len(s.payload) // 2
    flipped = bytearray(data)
    flipped[at] ^= 0x40
    with pytest.raises(ChecksumMismatch):
        codec.decode(bytes(flipped))
    with pytest.raises(ChecksumMismatch):
        codec_for_stream(bytes(flipped))
    # a valid CRC over inconsistent contents: each gets its typed error, never a garbage image
    other = _pictures()["RGB"].source_bytes  # a PNG where the codec's own format is expected
    if name != "passthrough":
        s2 = bitstream.parse(data)
        s2.payload = other
        with pytest.raises(UnreadableImage):
            codec.decode(bitstream.pack(s2))
    s3 = bitstream.parse(data)
    s3.width = 63
    with pytest.raises(CorruptStream):
        codec.decode(bitstream.pack(s3))


def test_passthrough_is_bit_exact(tmp_path):
    from latentarc.jobs.cli import main

    jpeg = io.BytesIO()
    _crop(sorted(PHOTOS.glob("*.png"))[2], 80).save(jpeg, format="JPEG", quality=80)
    for suffix, original in ((".png", _pictures()["RGBA"].source_bytes), (".jpg", jpeg.getvalue())):
        pic = read_image(original)
        codec = PassthroughCodec()
        res = codec.encode(pic)
        assert res.psnr == float("inf")
        assert bitstream.parse(res.data).payload == original
        dec = codec.decode(res.data)
        assert dec.original == original
        assert np.array_equal(decoded_planes(dec, pic.mode), pic.reference())
        # through the command line: encode, then decode to the same format writes the original bytes back
        src, stream, out = tmp_path / f"in{suffix}", tmp_path / f"x{suffix}.larc", tmp_path / f"out{suffix}"
        src.write_bytes(original)
        assert main(["encode", str(src), str(stream), "--codec", "passthrough"]) == 0
        assert main(["decode", str(stream), str(out)]) == 0
        assert out.read_bytes() == original


class _Memo:
    """Caches a codec's encodes per (picture, knobs): the neural search is deterministic and slow on 2 CPUs."""

    def __init__(self, codec):
        self.codec, self.name, self._cache = codec, codec.name, {}

    def encode(self, pic, **kw):
        key = (id(pic), tuple(sorted(kw.items())))
        if key not in self._cache:
            self._cache[key] = self.codec.encode(pic, **kw)
        return self._cache[key]

    def decode(self, data):
        return self.codec.decode(data)

    def info(self, data):
        return self.codec.info(data)


def test_auto_meets_the_floor_with_the_smallest_stream(codec):
    members = [_Memo(codec), get_codec("avif"), get_codec("jxl")]
    auto = AutoCodec(members, min_psnr=30)
    pics = {
        "photo": read_image(_png(_crop(sorted(PHOTOS.glob("*.png"))[0], 96))),
        "text": read_image(_png(_crop(EDGE / "text.png", 96, (0, 0)))),
        "flat": read_image(_png(Image.new("RGB", (64, 48), (120, 140, 160)))),
    }
    for kind, pic in pics.items():
        res = auto.encode(pic)
        decision = res.params["auto"]
        chosen = decision["chosen"]
        assert bitstream.parse(res.data).codec == chosen  # the chosen codec's own stream: "auto" is never stored
        assert decision["floor"] == {"min_psnr": 30}
        measured = psnr(pic.reference(), decoded_planes(codec_for_stream(res.data).decode(res.data), pic.mode))
        assert measured >= 30 and measured == pytest.approx(res.psnr), kind
        for m in members:  # no single enabled codec meets the floor in fewer bytes
            try:
                alone = len(m.encode(pic, min_psnr=30).data)
            except QualityFloorUnreachable:
                assert decision["candidates"][m.name] == "unreachable"
                continue
            assert decision["candidates"][m.name] == alone
            assert len(res.data) <= alone, (kind, m.name)
        assert len(res.data) <= len(PassthroughCodec().encode(pic).data)


def test_auto_falls_back_to_passthrough(codec):
    pic = read_image(_png(_crop(sorted(PHOTOS.glob("*.png"))[0], 64)))
    res = AutoCodec([codec]).encode(pic, min_psnr=60)
    assert res.params["auto"]["chosen"] == "passthrough"
    assert res.params["auto"]["candidates"]["tae-f2"] == "unreachable"
    assert bitstream.parse(res.data).payload == pic.source_bytes and res.psnr == float("inf")


def test_auto_ms_ssim_floor():
    pic = _pictures()["RGB"]
    auto = get_codec("auto", codecs="avif,jxl,webp")
    res = auto.encode(pic, min_ms_ssim=0.95, min_psnr=28)
    ref = pic.reference()
    planes = decoded_planes(codec_for_stream(res.data).decode(res.data), pic.mode)
    assert ms_ssim(ref, planes) >= 0.95 and psnr(ref, planes) >= 28
    assert res.params["auto"]["ms_ssim"] == pytest.approx(ms_ssim(ref, planes), abs=1e-4)
    with pytest.raises(ValueError):
        auto.encode(pic, quality=50)


@pytest.mark.usefixtures("ray_cluster")
def test_auto_in_compress_and_restore(tmp_path):
    from latentarc.codec.spec import CodecSpec
    from latentarc.pipeline.compress import CompressOptions, run_compress
    from latentarc.pipeline.restore import run_restore
    from latentarc.pipeline.table import BitstreamTable

    src = tmp_path / "src"
    src.mkdir()
    photo = _crop(sorted(PHOTOS.glob("*.png"))[3], 64)
    jpeg = io.BytesIO()
    _crop(sorted(PHOTOS.glob("*.png"))[4], 64).save(jpeg, format="JPEG", quality=70)
    originals = {
        "photo.png": _png(photo),  # a classical codec beats the PNG at the floor
        "flat.png": _png(Image.new("RGB", (40, 40), (90, 30, 200))),
        "already.jpg": jpeg.getvalue(),  # an already-compressed JPEG: the original (or its jpeg-exact transcode)
    }
    for k, v in originals.items():
        (src / k).write_bytes(v)
    opts = CompressOptions(codec=CodecSpec("auto", codecs="tae-f2,avif,jxl", weights=str(MODELS)), min_psnr=45,
                           batch_size=2, workers=1)
    report = run_compress(str(src), str(tmp_path / "table"), opts)
    assert report["rows"] == 3 and report["errors"] == 0
    rows = {r["key"]: r for r in BitstreamTable(str(tmp_path / "table")).read().to_pylist()}
    for key, r in rows.items():
        params = json.loads(r["params"])
        assert r["codec"] == params["auto"]["chosen"] == bitstream.parse(r["payload"]).codec
        assert r["psnr"] >= 45 and r["ms_ssim"] is not None
        assert (r["model_sha256"] is not None) == (r["codec"] == "tae-f2")
        assert params["auto"]["candidates"]["tae-f2"] == "unreachable"  # the autoencoder tops out below 45 dB
    assert rows["already.jpg"]["codec"] in ("passthrough", "jpeg-exact")
    assert rows["already.jpg"]["guarantee"] == "bytes-exact"
    assert rows["photo.png"]["codec"] in ("avif", "jxl")

    dst = tmp_path / "restored"
    res = run_restore(str(tmp_path / "table"), str(dst))
    assert res.restored == 3 and not res.failures
    for key, r in rows.items():
        if r["guarantee"] == "bytes-exact":  # the original file, bit for bit, under its own name
            assert (dst / key).read_bytes() == originals[key]
            continue
        out = np.asarray(Image.open(dst / (key.rsplit(".", 1)[0] + ".png")))
        assert psnr(read_image(originals[key]).reference(), out) == pytest.approx(r["psnr"])

    # verify understands rows without a model (classical, passthrough) and re-measures them against the sources
    from latentarc.pipeline.verify import verify_table

    checked = verify_table(str(tmp_path / "table"), decode=True, weights=str(MODELS))
    assert checked.ok, checked.problems
    assert checked.decoded_with_reference == 3

    # the report sets auto against each codec alone at the same floor (originals where a codec missed it)
    from latentarc.pipeline.report import build_report

    ap = build_report(BitstreamTable(str(tmp_path / "table")))["auto_policy"]
    assert ap["rows"] == 3 and ap["min_psnr"] >= 45
    assert ap["auto_payload_bytes"] == sum(r["payload_size"] for r in rows.values())
    kept_originals = sum(json.loads(r["params"])["auto"]["candidates"]["passthrough"] for r in rows.values())
    assert ap["single_codec_payload_bytes"]["tae-f2"] == kept_originals  # tae-f2 never met 45 dB
    assert all(ap["auto_payload_bytes"] <= b for b in ap["single_codec_payload_bytes"].values())
