"""Real-world inputs: every mode, metadata, odd sizes and hostile files (../shared/data/edge)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms

from latentarc.codec.errors import ImageTooLarge, UnreadableImage, UnsupportedImage
from latentarc.codec.images import read_image, save_image
from latentarc.codec.metrics import psnr

from .conftest import EDGE, PHOTOS

pytestmark = pytest.mark.shared("models", "photos", "edge")

EXPECTED_MODE = {"RGB": "RGB", "L": "L", "P": "RGB", "I;16": "I;16"}


def _png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=kw.pop("format", "PNG"), **kw)
    return buf.getvalue()


def _roundtrip(codec, data: bytes, quality: float = 50):
    pic = read_image(data)
    res = codec.encode(pic, quality=quality)
    return pic, res, codec.decode(res.data)


#: edge images above this many pixels (the 6.3 MP 16-bit and 8-bit photos, the 1.2 MP frymire) are cut to a
#: central 843×213 window: still two tiles across (the autoencoder's cores are 768 px), odd-sized and in their own
#: mode, at a fraction of the full cost on 2 cores
CROP_OVER = 700_000
WINDOW = (843, 213)


def _edge_input(path) -> tuple[Image.Image, bytes]:
    original = Image.open(path)
    if original.width * original.height <= CROP_OVER:
        return original, path.read_bytes()
    x, y = (original.width - WINDOW[0]) // 2, (original.height - WINDOW[1]) // 2
    data = _png(original.crop((x, y, x + WINDOW[0], y + WINDOW[1])))
    return Image.open(io.BytesIO(data)), data


@pytest.mark.parametrize("path", sorted(EDGE.glob("*.png")), ids=lambda p: p.name)
def test_edge_images_round_trip(codec, path):
    """All of the edge set (16-bit, palette, grey, large, synthetic, text) decodes to the same size, the
    documented mode, and pixels that match the recorded PSNR."""
    original, data = _edge_input(path)
    pic = read_image(data)
    large = pic.width * pic.height > 300_000  # decoded once, below, not also inside encode (2 cores)
    res = codec.encode(pic, quality=50, measure=not large)
    dec = codec.decode(res.data)
    assert dec.image.size == original.size
    assert dec.image.mode == EXPECTED_MODE[original.mode]
    restored = np.asarray(dec.image)
    measured = psnr(pic.reference(), restored)
    if not large:
        assert measured == pytest.approx(res.psnr)
    assert measured > 12  # a real picture, not noise, even on content the autoencoder was not made for
    if original.mode == "I;16":
        assert restored.dtype == np.uint16 or dec.image.mode == "I;16"


def test_alpha_is_kept_losslessly(codec):
    rgb = Image.open(sorted(PHOTOS.glob("*.png"))[0]).crop((0, 0, 61, 45))
    alpha = Image.linear_gradient("L").resize((61, 45))
    rgba = rgb.copy()
    rgba.putalpha(alpha)
    _, _, dec = _roundtrip(codec, _png(rgba))
    assert dec.image.mode == "RGBA"
    assert np.array_equal(np.asarray(dec.image)[..., 3], np.asarray(alpha))


def test_palette_with_transparency_and_la(codec):
    p = Image.new("P", (40, 30), 0)
    p.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    p.paste(1, (10, 10, 30, 20))
    p.info["transparency"] = 0
    _, _, dec = _roundtrip(codec, _png(p, transparency=0))
    assert dec.image.mode == "RGBA"
    a = np.asarray(dec.image)[..., 3]
    assert a[15, 15] == 255 and a[0, 0] == 0
    la = Image.merge("LA", [Image.linear_gradient("L").resize((33, 17)), Image.new("L", (33, 17), 128)])
    _, _, dec = _roundtrip(codec, _png(la))
    assert dec.image.mode == "LA" and (np.asarray(dec.image)[..., 1] == 128).all()


def test_cmyk_jpeg_and_tiny_images(codec):
    rgb = Image.open(sorted(PHOTOS.glob("*.png"))[2]).crop((100, 100, 180, 150))
    pic, res, dec = _roundtrip(codec, _png(rgb.convert("CMYK"), format="JPEG", quality=95))
    assert pic.mode == "CMYK" and dec.image.mode == "RGB" and dec.image.size == (80, 50)
    assert res.psnr > 20
    for size in [(1, 1), (3, 17), (20, 8)]:
        _, _, dec = _roundtrip(codec, _png(Image.new("RGB", size, (200, 30, 90))))
        assert dec.image.size == size
        assert np.abs(np.asarray(dec.image).astype(int) - [200, 30, 90]).max() < 40


def test_exif_orientation_applied_and_metadata_kept(codec, tmp_path):
    src = Image.open(sorted(PHOTOS.glob("*.png"))[1]).crop((0, 0, 64, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    exif[0x010F] = "latentarc-test-camera"
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = _png(src, format="JPEG", quality=95, exif=exif.tobytes(), icc_profile=icc)
    pic, res, dec = _roundtrip(codec, data)
    assert (pic.width, pic.height) == (40, 64)  # upright
    assert dec.image.size == (40, 64)
    assert dec.icc == icc
    out = tmp_path / "restored.png"
    save_image(dec.image, out, icc=dec.icc, exif=dec.exif)
    back = Image.open(out)
    assert back.info.get("icc_profile") == icc
    kept = back.getexif()
    assert kept.get(0x010F) == "latentarc-test-camera"
    assert kept.get(0x0112, 1) == 1  # orientation already applied, never applied twice


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def test_hostile_inputs_are_typed_errors():
    with pytest.raises(UnreadableImage, match="empty"):
        read_image(b"")
    with pytest.raises(UnreadableImage):
        read_image(b"this is not an image, whatever its extension says")
    good = (PHOTOS / "001.png").read_bytes()
    with pytest.raises(UnreadableImage):
        read_image(good[: len(good) // 2])
    bomb = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0))
    bomb += _png_chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + _png_chunk(b"IEND", b"")
    with pytest.raises(ImageTooLarge, match="exceeds"):
        read_image(bomb)
    with pytest.raises(ImageTooLarge):
        read_image(good, max_pixels=1000)
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    with pytest.raises(UnsupportedImage, match="2 frames"):
        read_image(buf.getvalue())
