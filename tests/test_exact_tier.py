"""The exact tier: ``jpeg-exact`` (JPEG XL transcodes rebuilt bit for bit), the ``--lossless`` policy, the
``guarantee`` column, and verify / report on it — with JPEGs of many kinds made from real photos."""

from __future__ import annotations

import functools
import hashlib
import io
import json

import numpy as np
import pytest
from PIL import Image, ImageCms

from latentarc.codec import bitstream, guarantee
from latentarc.codec.classical import decoded_planes
from latentarc.codec.codecs import codec_for_stream, get_codec
from latentarc.codec.errors import ChecksumMismatch, CorruptStream
from latentarc.codec.exact import JpegExactCodec
from latentarc.codec.images import Picture, read_image
from latentarc.codec.lossless import LosslessCodec

from .conftest import EDGE, PHOTOS

pytestmark = pytest.mark.shared("photos", "edge")


@functools.cache
def _photo(index: int, w: int = 200, h: int = 152) -> Image.Image:
    """A crop of a real photo (small: fast on 2 CPU cores)."""
    im = Image.open(sorted(PHOTOS.glob("*.png"))[index]).convert("RGB")
    x, y = (im.width - w) // 2, (im.height - h) // 2
    return im.crop((x, y, x + w, y + h))


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


#: the JPEG kinds :func:`_jpegs` makes (named here so collection needs no photo)
JPEG_KINDS = ("4:2:0", "4:4:4", "baseline", "cmyk", "exif-icc-xmp", "grey", "odd-size", "optimized", "progressive",
              "restart-blocks", "restart-rows", "trailing")


@functools.cache
def _jpegs() -> dict[str, bytes]:
    rgb = _photo(0)
    exif = Image.Exif()
    exif[0x010F], exif[0x0112] = "latentarc test camera", 6  # make, orientation: rotated on reading
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'
    out = {
        "baseline": _save(rgb, "JPEG", quality=85),
        "progressive": _save(_photo(1), "JPEG", quality=85, progressive=True),
        "optimized": _save(_photo(2), "JPEG", quality=75, optimize=True),
        "restart-blocks": _save(rgb, "JPEG", quality=85, restart_marker_blocks=3),
        "restart-rows": _save(rgb, "JPEG", quality=85, restart_marker_rows=1),
        "exif-icc-xmp": _save(rgb, "JPEG", quality=85, exif=exif.tobytes(), icc_profile=icc, xmp=xmp,
                              comment=b"kept"),
        "cmyk": _save(rgb.convert("CMYK"), "JPEG", quality=85),
        "grey": _save(rgb.convert("L"), "JPEG", quality=85),
        "4:4:4": _save(_photo(3, 256, 192), "JPEG", quality=90, subsampling="4:4:4"),
        "4:2:0": _save(_photo(3, 256, 192), "JPEG", quality=90, subsampling="4:2:0"),
        "odd-size": _save(_photo(4, 131, 77), "JPEG", quality=80),
    }
    out["trailing"] = out["baseline"] + b"\x00trailing bytes after EOI\xff\xd9" * 3
    assert sorted(out) == list(JPEG_KINDS)
    return out


def _truncated() -> tuple[bytes, Picture]:
    """A JPEG cut in its scan data, with pixels (as a lenient reader would show them) beside the bytes."""
    full = _jpegs()["progressive"]
    cut = full[: len(full) * 2 // 3]
    pic = read_image(full)
    return cut, Picture(pic.rgb, None, pic.mode, source_bytes=cut)


def _restored_bytes(data: bytes) -> bytes:
    return codec_for_stream(data).decode(data).original


# ------------------------------------------------------------------------------------------ jpeg-exact
@pytest.mark.parametrize("kind", JPEG_KINDS)
def test_every_jpeg_ends_bytes_exact(kind):
    src = _jpegs()[kind]
    pic = read_image(src)
    res = JpegExactCodec().encode(pic)
    name = bitstream.parse(res.data).codec
    assert name in ("jpeg-exact", "passthrough")
    assert guarantee.of(res.params) == guarantee.BYTES_EXACT and res.psnr == float("inf")
    assert _restored_bytes(res.data) == src  # never altered, whichever way it went
    assert len(res.data) <= len(src) + 256  # the original file at most (plus the container)
    if name == "passthrough":
        assert res.params["exact"]["fallback"]
    # the decoded image is the source's
    dec = codec_for_stream(res.data).decode(res.data)
    assert np.array_equal(decoded_planes(dec, pic.mode), pic.reference())
    # the --lossless policy makes the same choice
    assert LosslessCodec().encode(pic).data == res.data


def test_which_jpegs_transcode():
    """The common kinds really shrink; what libjxl cannot represent falls back to the original bytes."""
    made = {k: JpegExactCodec().encode(read_image(v)) for k, v in _jpegs().items()}
    for kind in ("baseline", "progressive", "optimized", "restart-blocks", "restart-rows", "exif-icc-xmp",
                 "4:4:4", "4:2:0", "trailing"):
        assert bitstream.parse(made[kind].data).codec == "jpeg-exact", (kind, made[kind].params)
        assert len(made[kind].data) < len(_jpegs()[kind])
    assert made["cmyk"].params["exact"]["fallback"].startswith("transcoder:")
    saved = 1 - sum(len(made[k].data) for k in made) / sum(map(len, _jpegs().values()))
    assert saved > 0.05


def test_truncated_jpeg_falls_back_to_its_bytes():
    cut, pic = _truncated()
    res = JpegExactCodec().encode(pic)
    assert bitstream.parse(res.data).codec == "passthrough"
    assert res.params["exact"]["fallback"].startswith("transcoder:")
    assert bitstream.parse(res.data).payload == cut


def test_non_jpeg_and_planes_fall_back():
    png = _save(_photo(0), "PNG")
    res = JpegExactCodec().encode(read_image(png))
    assert res.params["exact"] == {"fallback": "not a JPEG"} and _restored_bytes(res.data) == png
    planes = Picture(np.asarray(_photo(0)), None, "RGB")  # no source bytes: a lossless PNG of the planes
    res = JpegExactCodec().encode(planes)
    assert guarantee.of(res.params) == guarantee.PIXELS_EXACT


def test_damaged_jpeg_exact_streams_are_refused():
    codec = JpegExactCodec()
    data = codec.encode(read_image(_jpegs()["baseline"])).data
    s = bitstream.parse(data)
    assert s.codec == "jpeg-exact" and not s.sections
    flipped = bytearray(data)
    flipped[data.index(s.payload) + len(s.payload) // 2] ^= 0x10
    with pytest.raises(ChecksumMismatch):
        codec.decode(bytes(flipped))
    # a valid CRC over a stream whose recorded SHA-256 is not the rebuilt file's
    forged = bitstream.parse(data)
    params = json.loads(forged.params)
    params["jpeg_sha256"] = "0" * 64
    forged.params = json.dumps(params).encode()
    with pytest.raises(CorruptStream, match="SHA-256"):
        codec.decode(bitstream.pack(forged))
    # a JPEG XL payload that holds pixels, not a JPEG
    plain = bitstream.parse(data)
    plain.payload = _save(_photo(0), "JXL", lossless=True)
    with pytest.raises(CorruptStream, match="no JPEG reconstruction"):
        codec.decode(bitstream.pack(plain))
    unrecorded = bitstream.parse(data)
    unrecorded.params = b'{"format":"JXL"}'
    with pytest.raises(CorruptStream, match="SHA-256"):
        codec.decode(bitstream.pack(unrecorded))


# ------------------------------------------------------------------------------------------ pixels-exact
PIXEL_KINDS = ("16-bit", "grey", "la", "palette", "rgb", "rgba", "webp-source")


@functools.cache
def _pixel_sources() -> dict[str, bytes]:
    rgb = np.asarray(_photo(5, 160, 120))
    alpha = np.tile(np.linspace(0, 255, 160).astype(np.uint8)[None, :], (120, 1))
    alpha[:, :20] = 0  # fully transparent pixels: their colour is kept too
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    pal = Image.fromarray(rgb).quantize(64)
    pal.info["transparency"] = 0
    out = {
        "rgb": _save(Image.fromarray(rgb), "PNG"),
        "rgba": _save(Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), "PNG"),
        "la": _save(Image.fromarray(np.dstack([grey, alpha]), "LA"), "PNG"),
        "grey": _save(Image.fromarray(grey, "L"), "PNG"),
        "16-bit": _save(Image.open(EDGE / "artificial_gray16.png").crop((1000, 800, 1160, 920)), "PNG"),
        "palette": _save(pal, "PNG", transparency=0),
        "webp-source": _save(Image.fromarray(rgb), "WEBP", lossless=True),
    }
    assert sorted(out) == list(PIXEL_KINDS)
    return out


@pytest.mark.parametrize("kind", PIXEL_KINDS)
def test_other_formats_end_pixels_exact(kind):
    src = _pixel_sources()[kind]
    pic = read_image(src)
    res = LosslessCodec().encode(pic)
    chosen = res.params["lossless"]["chosen"]
    assert chosen == bitstream.parse(res.data).codec
    assert guarantee.of(res.params) == (guarantee.BYTES_EXACT if chosen == "passthrough" else guarantee.PIXELS_EXACT)
    assert chosen != "passthrough", res.params["lossless"]  # lossless JXL or WebP beats these PNGs
    assert len(res.data) < len(src)
    dec = codec_for_stream(res.data).decode(res.data)
    assert guarantee.pixel_mismatch(pic, decoded_planes(dec, pic.mode), guarantee.decoded_alpha(dec.image)) is None
    if kind == "16-bit":  # WebP codes 8 bits: it is tried and found different
        assert chosen == "jxl" and res.params["lossless"]["candidates"]["webp"].startswith("differs")
        assert decoded_planes(dec, pic.mode).dtype == np.uint16


def test_files_read_inexactly_are_kept_as_bytes():
    rgb16 = np.asarray(_photo(6, 96, 64)).astype(np.uint16) * 257 + 1
    png48 = io.BytesIO()
    _png_rgb16(rgb16, png48)
    tiff_cmyk = _save(_photo(6, 96, 64).convert("CMYK"), "TIFF")
    for src in (png48.getvalue(), tiff_cmyk):
        assert guarantee.inexact_reading(src) is not None
        res = LosslessCodec().encode(read_image(src))
        assert res.params["lossless"]["chosen"] == "passthrough"
        assert res.params["lossless"]["candidates"]["pixels"].startswith("not tried")
        assert _restored_bytes(res.data) == src


def _png_rgb16(rgb16: np.ndarray, out) -> None:
    """A 16-bit-per-channel RGB PNG (Pillow reads it as 8-bit RGB, so its pixels are not the file's)."""
    import struct
    import zlib

    h, w, _ = rgb16.shape
    raw = b"".join(b"\x00" + rgb16[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    out.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
              + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_pixel_mismatch_names_the_difference():
    pic = read_image(_pixel_sources()["rgba"])
    planes, alpha = pic.reference().copy(), pic.alpha.copy()
    assert guarantee.pixel_mismatch(pic, planes, alpha) is None
    planes[3, 4, 1] ^= 1
    assert "1 colour samples differ" in guarantee.pixel_mismatch(pic, planes, alpha)
    alpha[0, 0] ^= 1
    assert guarantee.pixel_mismatch(pic, pic.reference(), alpha) == "alpha differs"
    assert guarantee.pixel_mismatch(pic, pic.reference(), None) == "alpha was lost"


def test_lossless_takes_no_knobs_and_auto_considers_jpeg_exact():
    pic = read_image(_jpegs()["baseline"])
    with pytest.raises(ValueError):
        LosslessCodec().encode(pic, quality=90)
    auto = get_codec("auto", codecs="jxl")
    res = auto.encode(pic, min_psnr=30)
    a = res.params["auto"]
    assert isinstance(a["candidates"]["jpeg-exact"], int) and a["candidates"]["jpeg-exact"] < len(_jpegs()["baseline"])
    # at a floor the JPEG's own pixels meet, the smallest of jxl, the original and its transcode wins
    assert len(res.data) == min(v for v in a["candidates"].values() if isinstance(v, int))
    high = get_codec("auto", codecs="jxl").encode(pic, min_psnr=60)  # only lossless JXL or the file meet 60 dB
    assert high.params["auto"]["chosen"] == "jpeg-exact" and guarantee.of(high.params) == guarantee.BYTES_EXACT
    assert auto.decode(high.data).original == _jpegs()["baseline"]


def test_cli_lossless(tmp_path):
    from latentarc.jobs.cli import main

    src, stream, out = tmp_path / "a.jpg", tmp_path / "a.larc", tmp_path / "b.jpg"
    src.write_bytes(_jpegs()["progressive"])
    assert main(["encode", str(src), str(stream), "--lossless"]) == 0
    assert main(["decode", str(stream), str(out)]) == 0
    assert out.read_bytes() == src.read_bytes()
    assert main(["encode", str(src), str(stream), "--lossless", "--quality", "50"]) == 2
    assert main(["encode", str(src), str(stream), "--lossless", "--codec", "avif"]) == 2


# ------------------------------------------------------------------------------------------ the pipeline
@pytest.mark.usefixtures("ray_cluster")
def test_compress_lossless_restore_verify_report(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from latentarc.pipeline.compress import CompressOptions, run_compress
    from latentarc.pipeline.report import build_report
    from latentarc.pipeline.restore import run_restore
    from latentarc.pipeline.savings import summary_lines
    from latentarc.pipeline.table import BitstreamTable
    from latentarc.pipeline.verify import verify_table

    originals = {
        "jpeg/baseline.jpg": _jpegs()["baseline"],
        "jpeg/progressive.jpg": _jpegs()["progressive"],
        "jpeg/cmyk.jpg": _jpegs()["cmyk"],
        "jpeg/trailing.jpg": _jpegs()["trailing"],
        "png/rgba.png": _pixel_sources()["rgba"],
        "png/16-bit.png": _pixel_sources()["16-bit"],
    }
    truncated = _truncated()[0]
    src = tmp_path / "src"
    for k, v in {**originals, "jpeg/truncated.jpg": truncated}.items():
        (src / k).parent.mkdir(parents=True, exist_ok=True)
        (src / k).write_bytes(v)
    table = str(tmp_path / "table")
    report = run_compress(str(src), table, CompressOptions(codec="lossless", workers=1, batch_size=2))
    assert report["rows"] == len(originals) and report["errors"] == 1  # the truncated file: recorded, not lost
    t = BitstreamTable(table)
    assert t.errors().to_pylist()[0]["key"] == "jpeg/truncated.jpg"
    rows = {r["key"]: r for r in t.read().to_pylist()}
    for key, r in rows.items():
        want = guarantee.PIXELS_EXACT if key.startswith("png/") else guarantee.BYTES_EXACT
        assert r["guarantee"] == want, (key, r["codec"])
        assert r["source_sha256"] == hashlib.sha256(originals[key]).hexdigest()
        assert r["ms_ssim"] == 1.0 and r["psnr"] == float("inf")
    assert rows["jpeg/baseline.jpg"]["codec"] == "jpeg-exact" and rows["jpeg/cmyk.jpg"]["codec"] == "passthrough"
    tiers = report["per_guarantee"]
    assert tiers["bytes-exact"]["rows"] == 4 and tiers["pixels-exact"]["rows"] == 2
    assert report["exact_saved_bytes"] > 0
    assert any(line.strip().startswith("exact:") for line in summary_lines(report))

    dst = tmp_path / "restored"
    res = run_restore(table, str(dst))
    assert res.restored == len(originals) and not res.failures
    for key, data in originals.items():
        if rows[key]["guarantee"] == guarantee.BYTES_EXACT:  # the file itself, under its own name
            assert (dst / key).read_bytes() == data
        else:
            back = read_image((dst / key).read_bytes())  # a .png key restores to the same name
            pic = read_image(data)
            assert guarantee.pixel_mismatch(pic, back.reference(), back.alpha) is None

    checked = verify_table(table, decode=True)
    assert checked.ok, checked.problems
    assert checked.decoded_with_reference == len(originals)

    r = build_report(t)
    assert set(r["per_guarantee"]) == {"bytes-exact", "pixels-exact"}
    assert r["per_guarantee"]["bytes-exact"]["rows"] == 4 and r["exact_saved_bytes"] > 0

    # verify holds a bytes-exact row to source_sha256 even where the source is gone
    (src / "jpeg/baseline.jpg").unlink()
    [path] = [f for f in t.data_files() if "jpeg/baseline.jpg" in pq.read_table(f, columns=["key"])["key"].to_pylist()]
    part = pq.read_table(path)
    sha = [("0" * 64 if k == "jpeg/baseline.jpg" else s) for k, s in zip(part["key"].to_pylist(),
                                                                          part["source_sha256"].to_pylist())]
    part = part.set_column(part.schema.get_field_index("source_sha256"), "source_sha256",
                           pa.array(sha, part.schema.field("source_sha256").type))
    pq.write_table(part, path)
    bad = verify_table(table, decode=True)
    assert not bad.ok
    assert [p["key"] for p in bad.problems if p["check"] == "guarantee"] == ["jpeg/baseline.jpg"]
