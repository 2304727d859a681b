"""``jpeg-exact``: a JPEG file kept bit for bit, as JPEG XL lossless transcoding of the file's own bytes.

libjxl recodes the JPEG's quantized DCT coefficients with its own entropy coder and keeps what else the file
holds (markers, Huffman tables, restart intervals, APPn segments, padding, bytes after EOI) in a ``jbrd`` box,
so the decoder rebuilds the original file exactly — typically 15–20 % smaller, no pixel touched.

The encoder proves it on every image before it returns: it rebuilds the file from the stream it made and
compares the bytes. Anything short of that falls back to ``passthrough`` (the original bytes; never a lossy
stream), with the reason in ``EncodeResult.params["exact"]["fallback"]``:

* ``not a JPEG`` — the source does not start with SOI (PNG, WebP, …, or a picture without source bytes);
* ``transcoder: …`` — libjxl refuses the file (CMYK / Adobe transforms, arithmetic coding, 12-bit, damaged or
  truncated scans, …);
* ``round trip differs`` — the rebuilt file is not the source, byte for byte;
* ``not smaller`` — the JPEG XL stream is not smaller than the passthrough one (tiny or very high-quality
  files): an archive never stores an image in more bytes than its source.

Stream: the usual LARC container, codec ``jpeg-exact``, no sections (the file itself holds ICC, EXIF, XMP),
``params`` = ``{"format": "JXL", "jpeg_bytes": n, "jpeg_sha256": hex}``, payload the JPEG XL file. Decoding
checks the container and header, rebuilds the JPEG, requires its length and SHA-256 to be the recorded ones
(a libjxl that rebuilt differently would be caught here, not in a restored archive), then reads the image from
it like ``passthrough``; :class:`~latentarc.codec.types.Decoded` ``original`` is the JPEG, so a
restore writes it back under the key's own name.
"""

from __future__ import annotations

import hashlib
import math

from . import bitstream
from .base import CODECS, Capabilities, Codec
from .classical import PassthroughCodec, _check_header, _ensure_jxl, _info, _pack, decode_original
from .errors import CorruptStream, UnreadableImage
from .guarantee import BYTES_EXACT
from .images import DEFAULT_MAX_PIXELS, Picture
from .neural import check_one_knob
from .types import Decoded, EncodeResult

__all__ = ["JpegExactCodec", "is_jpeg", "transcode", "reconstruct"]

_SOI = b"\xff\xd8\xff"
#: libjxl effort for the transcode: 9 saves 0.2 % more on the training photos at 13× the time
EFFORT = 7


def is_jpeg(data: bytes | None) -> bool:
    return data is not None and data[:3] == _SOI


def transcode(jpeg: bytes) -> bytes:
    """The JPEG XL file that rebuilds ``jpeg`` (libjxl; one thread, as actors run one per CPU).
    ``RuntimeError`` when libjxl cannot represent the file."""
    from pillow_jxl import Encoder

    enc = Encoder(mode="RGB", lossless=True, quality=100, decoding_speed=0, effort=EFFORT, use_container=True,
                  use_original_profile=False, num_threads=1)
    return enc(jpeg, 1, 1, jpeg_encode=True)  # the size arguments are unused when transcoding a JPEG


def reconstruct(jxl: bytes) -> bytes:
    """The JPEG file a transcoded JPEG XL stream holds; :class:`UnreadableImage` when it cannot be decoded,
    :class:`CorruptStream` when it holds no JPEG reconstruction data."""
    from pillow_jxl import Decoder

    try:
        is_jpeg_, _, data, *_ = Decoder(num_threads=1)(jxl)
    except Exception as e:  # noqa: BLE001 — the binding raises RuntimeError (and may raise others) for bad input
        raise UnreadableImage(f"JPEG XL payload cannot be decoded: {type(e).__name__}: {e}") from None
    if not is_jpeg_:
        raise CorruptStream("the JPEG XL payload holds no JPEG reconstruction data")
    return bytes(data)


@CODECS.register("jpeg-exact")
class JpegExactCodec(Codec):
    """JPEG inputs as JPEG XL lossless transcodes, checked bit for bit; ``passthrough`` otherwise (module docs).

    Like ``passthrough`` the knobs are accepted and have nothing to do: PSNR is ``inf``, every floor is met.
    """

    name = "jpeg-exact"
    caps = Capabilities(keeps_source=True)

    def __init__(self, *, max_pixels: int = DEFAULT_MAX_PIXELS, passthrough: PassthroughCodec | None = None):
        _ensure_jxl()
        self.max_pixels = max_pixels
        self.passthrough = passthrough or PassthroughCodec(max_pixels=max_pixels)

    def encode(self, pic: Picture, *, quality: float | None = None, target_bpp: float | None = None,
               min_psnr: float | None = None, measure: bool = True) -> EncodeResult:
        check_one_knob(quality, target_bpp, min_psnr)
        fallback = self.passthrough.encode(pic)
        source = pic.source_bytes
        if not is_jpeg(source):
            return _fell_back(fallback, "not a JPEG")
        try:
            jxl = transcode(source)
        except Exception as e:  # noqa: BLE001 — libjxl's refusal (RuntimeError) is a fallback, not a failure
            return _fell_back(fallback, f"transcoder: {type(e).__name__}: {e}"[:300])
        try:
            same = reconstruct(jxl) == source
        except (CorruptStream, UnreadableImage) as e:
            return _fell_back(fallback, f"round trip failed: {e}"[:300])
        if not same:
            return _fell_back(fallback, "round trip differs")
        params = {"format": "JXL", "jpeg_bytes": len(source), "jpeg_sha256": hashlib.sha256(source).hexdigest()}
        data = _pack(self.name, pic, params, jxl, {})
        if len(data) >= len(fallback.data):
            return _fell_back(fallback, "not smaller")
        exact = {"source_bytes": len(source), "stream_bytes": len(data)}
        return EncodeResult(data, pic.width, pic.height, math.inf, dict(params, guarantee=BYTES_EXACT, exact=exact))

    def parse(self, data: bytes) -> tuple[bitstream.Stream, dict]:
        """Container and header checks, before the payload is touched."""
        s = bitstream.parse(data)
        params = _check_header(s, self.name, self.max_pixels)
        if params.get("format") != "JXL":
            raise CorruptStream(f"jpeg-exact stream declares payload format {params.get('format')!r}")
        if s.sections:
            raise CorruptStream("jpeg-exact streams carry no sections (the JPEG file holds everything)")
        if not isinstance(params.get("jpeg_bytes"), int) or not isinstance(params.get("jpeg_sha256"), str):
            raise CorruptStream("jpeg-exact stream does not record the JPEG's size and SHA-256")
        return s, params

    def member(self, name: str) -> Codec | None:
        """Itself, or the passthrough it falls back to."""
        return {self.name: self, self.passthrough.name: self.passthrough}.get(name)

    def original(self, data: bytes) -> bytes:
        """The JPEG file, rebuilt and checked against its recorded size and SHA-256 (no image decode)."""
        return _rebuild(*self.parse(data))

    def decode(self, data: bytes, refine=None, refiner=None) -> Decoded:
        self._refusing_refinement(refine)
        s, params = self.parse(data)
        return decode_original(_rebuild(s, params), s, self.max_pixels)

    def info(self, data: bytes) -> dict:
        s, params = self.parse(data)
        return _info(s, data, params, False)


def _rebuild(s: bitstream.Stream, params: dict) -> bytes:
    jpeg = reconstruct(s.payload)
    if len(jpeg) != params["jpeg_bytes"] or hashlib.sha256(jpeg).hexdigest() != params["jpeg_sha256"].lower():
        raise CorruptStream("the rebuilt JPEG is not the one that was encoded (size or SHA-256 differ)")
    return jpeg


def _fell_back(res: EncodeResult, reason: str) -> EncodeResult:
    return EncodeResult(res.data, res.width, res.height, res.psnr, dict(res.params, exact={"fallback": reason}))
