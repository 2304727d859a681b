"""Rate control's reduced resolution: a bpp target the full-size latent cannot reach even at its coarsest step is
coded at half (then a quarter of) the width and height and restored at full size; the container says so
(version 2 with a SIZE section), the table records it, and forged sizes are refused."""

from __future__ import annotations

import struct

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from latentarc.codec import bitstream
from latentarc.codec.api import load_codec
from latentarc.codec.codecs import build
from latentarc.codec.errors import CorruptStream, UnsupportedVersion
from latentarc.codec.images import Picture, encode_alpha
from latentarc.codec.metrics import psnr
from latentarc.codec.neural import STEP_COARSEST
from latentarc.codec.spec import CodecSpec
from latentarc.pipeline.compress import CompressOptions, run_compress
from latentarc.pipeline.table import BitstreamTable
from latentarc.pipeline.verify import verify_table

from .conftest import MODELS, photo_crop, photo_png

pytestmark = pytest.mark.shared("models", "photos")

TARGET = 0.02  # bpp: below what tae-f2 reaches at its coarsest step on this photo crop (0.038), above half size's
PHOTO, SIZE = 5, 512


@pytest.fixture(scope="module")
def full_only():
    return load_codec("tae-f2", device="cpu", full_resolution=True)


@pytest.fixture(scope="module")
def coded(codec, full_only):
    """One photo crop at TARGET: by the default codec, and by the one kept at full resolution."""
    pic = photo_crop(PHOTO, SIZE)
    return pic, codec.encode(pic, target_bpp=TARGET), full_only.encode(pic, target_bpp=TARGET)


def test_low_target_is_met_at_a_reduced_resolution_and_restored_at_full_size(codec, coded):
    pic, low, full = coded
    # at full size the target is out of reach: the coarsest step overshoots it
    assert full.params["base_step"] == pytest.approx(STEP_COARSEST, rel=0.01) and "coded_size" not in full.params
    assert full.bpp > 1.3 * TARGET and bitstream.version_of(full.data) == bitstream.FORMAT_VERSION
    # reduced: the target is met, the stream says what it coded and what to restore
    w, h = low.params["coded_size"]
    assert (w, h) == (SIZE // 2, SIZE // 2) and low.bpp <= 1.05 * TARGET
    s = bitstream.parse(low.data)
    assert s.format_version == bitstream.RESIZED_VERSION and (s.width, s.height) == (w, h)
    assert s.output_size == (SIZE, SIZE) and (low.width, low.height) == (SIZE, SIZE)
    dec = codec.decode(low.data)
    assert dec.image.size == (SIZE, SIZE) and dec.rgb.shape == (SIZE, SIZE, 3)
    # the recorded PSNR is the restore's, against the original (quality at equal bytes: docs/codec.md)
    assert low.psnr == pytest.approx(psnr(pic.reference(), dec.rgb), abs=1e-9)
    info = codec.info(low.data)
    assert (info["width"], info["height"], info["coded_width"], info["coded_height"]) == (SIZE, SIZE, w, h)
    assert info["bpp"] == pytest.approx(low.bpp, rel=1e-4)


def test_targets_the_full_size_reaches_stay_at_full_size(codec, coded):
    pic = coded[0]
    res = codec.encode(pic, target_bpp=0.4)
    assert "coded_size" not in res.params and bitstream.version_of(res.data) == bitstream.FORMAT_VERSION
    small = photo_crop(PHOTO, 100)  # half would be 50 px, below the codec's 64-px minimum: overshoot rather than shrink
    res = codec.encode(small, target_bpp=TARGET)
    assert "coded_size" not in res.params and res.bpp > TARGET


def test_alpha_icc_and_exif_stay_at_full_size(codec):
    pic = photo_crop(PHOTO, SIZE)
    alpha = np.full((SIZE, SIZE), 255, np.uint8)
    alpha[100:300, 50:200] = 0  # a cheap plane: the lossless PNG must leave room under the target
    rgba = Picture(pic.rgb, alpha, "RGBA", icc=b"icc-profile", exif=b"Exif\0\0MM")
    kept = len(encode_alpha(alpha)) + len(rgba.icc) + len(rgba.exif)  # lossless bytes on top of the colour planes
    res = codec.encode(rgba, target_bpp=TARGET + 8 * kept / SIZE**2, measure=False)
    assert "coded_size" in res.params
    dec = codec.decode(res.data)
    assert dec.image.mode == "RGBA" and dec.image.size == (SIZE, SIZE)
    assert np.array_equal(np.asarray(dec.image)[..., 3], alpha)
    assert (dec.icc, dec.exif) == (b"icc-profile", b"Exif\0\0MM")


def _forge(data: bytes, version: int | None = None, size: tuple[int, int] | None = None,
           size_body: bytes | None = None) -> bytes:
    """``data`` re-packed to restore at ``size``, then given another version byte and/or SIZE section body, with a
    valid CRC: what only a damaged or hostile writer produces."""
    s = bitstream.parse(data)
    s.restored_size = size or s.restored_size
    out = bitstream.pack(s)[:-4]
    if version is not None:
        out = out[:4] + bytes([version]) + out[5:]
    if size_body is not None:
        head = bitstream.SECTION_SIZE.encode() + struct.pack("<I", 8)
        at = out.index(head)
        out = out[:at] + bitstream.SECTION_SIZE.encode() + struct.pack("<I", len(size_body)) + size_body + out[at + 16:]
    return out + struct.pack("<I", bitstream.crc32c(out))


def test_forged_sizes_are_refused(codec, coded):
    _, low, full = coded
    assert codec.decode(_forge(low.data)).rgb.shape == (SIZE, SIZE, 3)  # the forger itself changes nothing
    with pytest.raises(CorruptStream, match="version 1 with a SIZE"):  # a size on a version-1 stream
        bitstream.parse(_forge(low.data, version=bitstream.FORMAT_VERSION))
    with pytest.raises(CorruptStream, match="version 2 without"):
        bitstream.parse(_forge(full.data, version=bitstream.RESIZED_VERSION))
    with pytest.raises(CorruptStream, match="SIZE section of 4 bytes"):
        bitstream.parse(_forge(low.data, size_body=b"\0\1\0\0"))
    with pytest.raises(CorruptStream, match="not another size"):
        bitstream.parse(_forge(low.data, size_body=struct.pack("<II", 0, SIZE)))
    with pytest.raises(CorruptStream, match="not larger"):  # restored smaller than coded
        codec.decode(_forge(full.data, size=(SIZE // 2, SIZE * 2)))
    with pytest.raises(CorruptStream, match="pixel guard"):  # the restored size is held to the guard too
        codec.decode(_forge(low.data, size=(60000, 60000)))
    with pytest.raises(UnsupportedVersion):
        bitstream.parse(low.data[:4] + b"\x03" + low.data[5:])
    jxl = build(CodecSpec(name="jxl"))  # a classical stream never asks for another size
    data = jxl.encode(photo_crop(2, 64), quality=50).data
    with pytest.raises(CorruptStream, match="restored at their coded size"):
        jxl.decode(_forge(data, size=(128, 128)))


def test_compress_table_records_version_2_and_verifies(ray_cluster, tmp_path):
    """A compress job at a low target: rows coded at a reduced size carry format_version 2, restore at the
    source's size (verify decodes them against the sources), and a target the crop reaches stays version 1."""
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(photo_crop(PHOTO, SIZE).rgb).save(src / "big.png")
    (src / "tiny.png").write_bytes(photo_png(3, 96))  # too small to reduce
    table = tmp_path / "table"
    report = run_compress(str(src), str(table), CompressOptions(CodecSpec(weights=str(MODELS)), target_bpp=TARGET,
                                                                batch_size=2, workers=2))
    assert report["rows"] == 2 and report["errors"] == 0
    rows = {r["key"]: r for p in BitstreamTable(str(table)).data_files()
            for r in pq.read_table(p, columns=["key", "format_version", "width", "height"]).to_pylist()}
    assert rows["big.png"]["format_version"] == bitstream.RESIZED_VERSION
    assert (rows["big.png"]["width"], rows["big.png"]["height"]) == (SIZE, SIZE)
    assert rows["tiny.png"]["format_version"] == bitstream.FORMAT_VERSION
    r = verify_table(str(table), weights=str(MODELS), decode=True)
    assert r.ok and r.decoded_with_reference == 2, r.problems


def test_golden_reduced_stream_is_version_2_and_restores_its_source_size():
    """The golden version-2 stream (tests/golden, decoded as recorded by test_golden) is what it claims to be."""
    from pathlib import Path

    from latentarc.codec.api import codec_for_stream

    data = (Path(__file__).resolve().parent / "golden" / "tae-f2-ft-reduced.larc").read_bytes()
    info = codec_for_stream(data).info(data)
    assert info["format_version"] == bitstream.RESIZED_VERSION
    assert (info["coded_width"], info["coded_height"], info["width"], info["height"]) == (160, 120, 320, 240)
