"""Classical codecs (AVIF, JPEG XL, WebP, JPEG) and ``passthrough`` behind the same :class:`~latentarc.codec.base.Codec` interface.

Every stream is the usual LARC container (``bitstream.py``): codec name (``avif``, ``jxl``, ``webp``, ``jpeg``,
``passthrough``), a zero model fingerprint, entropy-model id 0, no padding, the original mode, ``params`` = a
small JSON object naming the library settings (``{"format": "AVIF", "quality": 63, "subsampling": "4:4:4"}``),
the ICC profile and EXIF block in the ``ICCP`` / ``EXIF`` sections exactly as the neural codec keeps them, and
as payload the file the library wrote. Decoding checks the container (magic, version, CRC) first, then the
header, then opens the payload with Pillow *restricted to the expected format* under the decompression-bomb
guard, and requires the decoded size to equal the header's.

Libraries: Pillow ≥ 11.3 for AVIF (native, libavif; ``pillow-avif-plugin`` is used only where Pillow was built
without it), WebP and JPEG; ``pillow-jxl-plugin`` (libjxl) for JPEG XL.

**Quality 0–100 → library setting** (``quality`` is rounded to an integer first):

=========  ==========================================================================================
``avif``   libavif ``quality`` = q (0–100; quantizer 63·(1 − q/100)), chroma 4:4:4 (4:0:0 for grey)
``jxl``    libjxl quality = q for q < 100 (distance via ``JxlEncoderDistanceFromQuality``);
           q = 100 → lossless (as ``cjxl -q 100``)
``webp``   libwebp lossy ``quality`` = q; ``exact`` so colour under transparent pixels is kept
``jpeg``   libjpeg ``quality`` = max(q, 1) (0 and 1 are the same table), Huffman tables optimised
=========  ==========================================================================================

``target_bpp`` and ``min_psnr`` search a *ladder* of settings ordered by quality: the integer library
qualities above, topped for ``webp`` by lossless WebP and for ``jxl`` by lossless JPEG XL (so a PSNR floor is
always reachable with those two). ``target_bpp`` bisects the ladder on exact stream sizes and keeps the rung
closest to the target (integer qualities cannot always land within 5% on tiny images; ``achieved_bpp`` is
recorded). ``min_psnr`` bisects for the lowest rung whose *decoded* PSNR meets the floor; every candidate is
decoded through :meth:`ClassicalCodec.decode`, and PSNR is measured exactly as the neural codec does it
(``pic.reference()`` against the decoded colour planes). :class:`QualityFloorUnreachable` when the top rung
misses it (AVIF and JPEG have no lossless mode here).

**Alpha** is always kept losslessly: natively in WebP (verified bit-exact after every encode, else the image
falls back to the section), as the PNG-compressed ``ALPH`` section for the other formats — JPEG has no alpha,
libavif codes alpha lossily at the colour quality, and libjxl rewrites the colour of fully transparent pixels
(the neural codec codes and measures them, so the section keeps quality figures comparable).

**16-bit grey** (``I;16``, ``I``): ``jxl`` codes it at 16 bits (lossless at quality 100; the decoded plane is
the 16-bit one, ``Decoded.depth16``); ``avif``, ``webp`` and ``jpeg`` code the 8-bit rounding, like the neural
codec (Pillow's AVIF encoder is 8-bit only). Either way the restored mode is ``I;16``
(:func:`~latentarc.codec.images.restored_mode`) and PSNR is measured against the 16-bit original.

``passthrough`` stores the original file bytes exactly (``Picture.source_bytes``; a picture without them is
stored as a lossless PNG instead) and decodes to :class:`Decoded` with ``original`` set, so a restore
can write the original file back bit for bit. Its PSNR is ``inf``; its results state the ``bytes-exact``
guarantee (``pixels-exact`` for the PNG of a picture without source bytes; ``codec.guarantee``).

:meth:`ClassicalCodec.encode_lossless` gives the lossless rung of the formats that have one (``jxl``, ``webp``)
for the ``--lossless`` policy (``codec.lossless``), which checks the decoded pixels itself.
"""

from __future__ import annotations

import io
import json
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from . import bitstream
from .errors import (
    BitstreamError,
    CorruptStream,
    ModelError,
    ModelMismatch,
    QualityFloorUnreachable,
    UnreadableImage,
    UnsupportedVersion,
)
from .guarantee import BYTES_EXACT, PIXELS_EXACT
from .images import (
    DEFAULT_MAX_PIXELS,
    Picture,
    colour_planes,
    decode_alpha,
    encode_alpha,
    image_format,
    read_image,
    restored_mode,
    save_image,
    to_image,
)
from .floors import Floors, unreachable_message
from .metrics import Reference, psnr
from .base import CODECS, Capabilities, Codec
from .neural import check_one_knob
from .types import Decoded, EncodeResult

__all__ = [
    "ClassicalCodec",
    "PassthroughCodec",
    "CodecUnavailable",
    "CLASSICAL",
    "decoded_planes",
    "decode_original",
    "restored_image",
]

DEFAULT_QUALITY = 75
_SECTION_ALPHA, _SECTION_ICC, _SECTION_EXIF = "ALPH", "ICCP", "EXIF"


class CodecUnavailable(ModelError):
    """The Pillow build (or plugin) this codec needs is not installed."""


def decoded_planes(dec: Decoded, mode: str) -> np.ndarray:
    """The decoded colour planes in the restored representation, as quality is measured (any codec)."""
    return colour_planes(dec.rgb, mode, dec.depth16)


def restored_image(rgb: np.ndarray, mode: str, alpha: np.ndarray | None, depth16: np.ndarray | None) -> Image.Image:
    """:func:`to_image`, except that a 16-bit plane, when there is one, is used as it is."""
    if depth16 is not None and restored_mode(mode, False) == "I;16":
        return Image.frombytes("I;16", (depth16.shape[1], depth16.shape[0]), depth16.astype("<u2").tobytes())
    return to_image(rgb, mode, alpha)


# ------------------------------------------------------------------------------------------ formats
def _ensure_avif() -> None:
    from PIL import features

    if features.check("avif"):
        return
    try:  # older Pillow: the maintained plugin registers the same "AVIF" format
        import pillow_avif  # noqa: F401
    except ImportError:
        raise CodecUnavailable("AVIF needs Pillow >= 11.3 built with libavif, or pillow-avif-plugin") from None


def _ensure_jxl() -> None:
    try:
        import pillow_jxl  # noqa: F401  (registers the "JXL" format with Pillow)
    except ImportError:
        raise CodecUnavailable("JPEG XL needs pillow-jxl-plugin (pip install pillow-jxl-plugin)") from None


def _ensure_webp() -> None:
    from PIL import features

    if not features.check("webp"):
        raise CodecUnavailable("this Pillow build has no WebP support")


def _ensure_jpeg() -> None:
    from PIL import features

    if not features.check("jpg"):
        raise CodecUnavailable("this Pillow build has no JPEG support")


@dataclass(frozen=True)
class _Format:
    name: str  # codec name in streams and tables
    pil: str  # Pillow format name
    ladder: tuple[dict, ...]  # library settings, ordered by increasing quality
    fixed: dict  # options passed on every save
    colour_only: dict  # options for colour images only (e.g. AVIF chroma subsampling)
    native_alpha: bool  # the format keeps alpha losslessly (and colour under it): no ALPH section
    sixteen: bool  # codes 16-bit grey at 16 bits
    grey: bool  # codes L natively (WebP has no grey mode: it gets RGB)
    ensure: object  # callable that raises CodecUnavailable
    quality_index: object  # user quality (int 0–100) → ladder index


CLASSICAL: dict[str, _Format] = {
    "avif": _Format(
        "avif", "AVIF", tuple({"quality": q} for q in range(101)), {}, {"subsampling": "4:4:4"},
        native_alpha=False, sixteen=False, grey=True, ensure=_ensure_avif, quality_index=lambda q: q,
    ),
    "jxl": _Format(
        "jxl", "JXL", tuple({"quality": q} for q in range(100)) + ({"lossless": True},), {}, {},
        native_alpha=False, sixteen=True, grey=True, ensure=_ensure_jxl, quality_index=lambda q: q,
    ),
    "webp": _Format(
        "webp", "WEBP", tuple({"quality": q} for q in range(101)) + ({"lossless": True},), {"exact": True}, {},
        native_alpha=True, sixteen=False, grey=False, ensure=_ensure_webp, quality_index=lambda q: q,
    ),
    "jpeg": _Format(
        "jpeg", "JPEG", tuple({"quality": q} for q in range(1, 101)), {"optimize": True}, {},
        native_alpha=False, sixteen=False, grey=True, ensure=_ensure_jpeg, quality_index=lambda q: max(q, 1) - 1,
    ),
}


# ------------------------------------------------------------------------------------------ shared header checks
def _check_header(s: bitstream.Stream, name: str, max_pixels: int) -> dict:
    """Checks every classical stream shares; returns its params JSON."""
    if s.codec != name:
        raise ModelMismatch(f"stream was made with codec {s.codec!r}; this decoder is {name!r}")
    if s.model_fingerprint != bytes(bitstream.FINGERPRINT_BYTES):
        raise CorruptStream(f"a {name} stream names decoder weights {s.model_fingerprint.hex()}; it needs none")
    if s.entropy_model != 0:
        raise UnsupportedVersion(f"entropy model id {s.entropy_model} is not known for {name} streams")
    if s.pad_right or s.pad_bottom:
        raise CorruptStream(f"{name} streams are never padded")
    if s.restored_size is not None:
        raise CorruptStream(f"{name} streams are restored at their coded size; this one asks for another")
    if s.width * s.height > max_pixels:
        raise CorruptStream(f"declared size {s.width}x{s.height} exceeds the {max_pixels} pixel guard")
    if _SECTION_ALPHA in s.sections and restored_mode(s.mode, True) not in ("RGBA", "LA"):
        raise CorruptStream(f"an alpha section is not valid for mode {s.mode!r}")
    try:
        params = json.loads(s.params.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise CorruptStream("stream parameters are not JSON") from None
    if not isinstance(params, dict):
        raise CorruptStream("stream parameters are not a JSON object")
    return params


def _section_alpha(s: bitstream.Stream) -> np.ndarray | None:
    if _SECTION_ALPHA not in s.sections:
        return None
    try:
        return decode_alpha(s.sections[_SECTION_ALPHA], s.width, s.height)
    except Image.DecompressionBombError as e:  # a forged PNG header; not an OSError, so decode_alpha misses it
        raise UnreadableImage(f"alpha plane is damaged: {e}") from None


def _open_payload(payload: bytes, pil_format: str, width: int, height: int) -> Image.Image:
    """Open and fully decode ``payload`` as ``pil_format`` only, under the bomb guard, at the header's size."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(payload), formats=[pil_format])
            if img.size != (width, height):
                raise CorruptStream(f"payload is {img.size[0]}x{img.size[1]}, the header says {width}x{height}")
            img.load()
    except BitstreamError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise CorruptStream(f"payload declares a size beyond the decompression-bomb guard: {e}") from None
    except Exception as e:  # noqa: BLE001 — Pillow and plugins raise OSError, ValueError, SyntaxError, RuntimeError…
        raise UnreadableImage(f"{pil_format} payload cannot be decoded: {type(e).__name__}: {e}") from None
    return img


def _pack(name: str, pic: Picture, params: dict, payload: bytes, sections: dict[str, bytes]) -> bytes:
    return bitstream.pack(
        bitstream.Stream(
            codec=name,
            width=pic.width,
            height=pic.height,
            mode=pic.mode,
            params=json.dumps(params, sort_keys=True, separators=(",", ":")).encode(),
            payload=payload,
            sections=sections,
        )
    )


def _meta_sections(pic: Picture) -> dict[str, bytes]:
    sections = {}
    if pic.icc:
        sections[_SECTION_ICC] = pic.icc
    if pic.exif:
        sections[_SECTION_EXIF] = pic.exif
    return sections


def _info(s: bitstream.Stream, data: bytes, params: dict, has_alpha: bool) -> dict:
    return {
        "codec": s.codec,
        "format_version": s.format_version,
        "model_fingerprint": s.model_fingerprint.hex(),
        "entropy_model": s.entropy_model,
        "width": s.width,
        "height": s.height,
        "mode": s.mode,
        "restored_mode": restored_mode(s.mode, has_alpha),
        "params": params,
        "sections": {k: len(v) for k, v in s.sections.items()},
        "stream_bytes": len(data),
        "payload_bytes": len(s.payload),
        "container_bytes": len(data) - len(s.payload),
        "bpp": round(len(data) * 8 / (s.width * s.height), 5),
    }


# ------------------------------------------------------------------------------------------ classical codecs
@dataclass
class _Prepared:
    """One picture made ready for one format: the Pillow image to save and what goes beside it."""

    pic: Picture
    image: Image.Image
    sections: dict[str, bytes]
    extra: dict  # params that hold for every rung (alpha handling, depth, colour-only options)
    save_opts: dict
    cache: dict[int, bytes] = field(default_factory=dict)


class ClassicalCodec(Codec):
    """``avif``, ``jxl``, ``webp`` or ``jpeg`` through Pillow, in a LARC container (see the module docs)."""

    caps = Capabilities(floor_search=True)

    @classmethod
    def from_spec(cls, spec) -> "ClassicalCodec":
        return cls(spec.name)

    def __init__(self, name: str, *, max_pixels: int = DEFAULT_MAX_PIXELS):
        if name not in CLASSICAL:
            raise ValueError(f"unknown classical codec {name!r}; known: {', '.join(CLASSICAL)}")
        self.fmt = CLASSICAL[name]
        self.fmt.ensure()
        self.name = name
        self.max_pixels = max_pixels

    # ---------------------------------------------------------------- encode
    def encode(
        self,
        pic: Picture,
        *,
        quality: float | None = None,
        target_bpp: float | None = None,
        min_psnr: float | None = None,
        measure: bool = True,
    ) -> EncodeResult:
        check_one_knob(quality, target_bpp, min_psnr)
        if min_psnr is not None:
            return self.encode_floor(pic, min_psnr=min_psnr)
        return self._with_alpha_check(pic, lambda prep: self._encode_point(prep, quality, target_bpp, measure))

    def encode_floor(self, pic: Picture, *, min_psnr: float | None = None, min_ms_ssim: float | None = None,
                     max_lpips: float | None = None, max_dists: float | None = None) -> EncodeResult:
        """The lowest rung whose decoded PSNR / MS-SSIM / LPIPS / DISTS meet every given floor (bisection; every
        candidate decoded and scored, ``codec.floors``)."""
        floors = Floors(min_psnr, min_ms_ssim, max_lpips, max_dists)
        if not floors:
            raise ValueError("give min_psnr, min_ms_ssim, max_lpips and/or max_dists")
        return self._with_alpha_check(pic, lambda prep: self._search_floor(prep, floors))

    def encode_lossless(self, pic: Picture) -> EncodeResult:
        """The format's lossless rung (``jxl``, ``webp``), not measured (``psnr`` None): the caller checks the
        pixels. ``ValueError`` for a format without a lossless mode."""
        top = len(self.fmt.ladder) - 1
        if not self.fmt.ladder[top].get("lossless"):
            raise ValueError(f"{self.name} has no lossless mode")
        return self._with_alpha_check(pic, lambda prep: EncodeResult(
            self._stream(prep, top), pic.width, pic.height, None, self._summary(prep, top, lossless=True)))

    def _with_alpha_check(self, pic: Picture, run) -> EncodeResult:
        prep = self._prepare(pic, native_alpha=self.fmt.native_alpha)
        res = run(prep)
        if prep.extra.get("alpha") == "native":
            # the library promises lossless alpha; hold it to that, else keep the plane in the section instead
            dec = self.decode(res.data)
            got = np.asarray(dec.image.getchannel("A")) if dec.image.mode in ("RGBA", "LA") else None
            if got is None or not np.array_equal(got, pic.alpha):
                res = run(self._prepare(pic, native_alpha=False))
        return res

    def _prepare(self, pic: Picture, *, native_alpha: bool) -> _Prepared:
        fmt = self.fmt
        sections = _meta_sections(pic)
        extra: dict = {}
        rmode = restored_mode(pic.mode, pic.alpha is not None)
        if rmode == "I;16":  # 16-bit grey never carries alpha (read_image drops none: it has none)
            if fmt.sixteen:
                plane = pic.reference()  # the 16-bit original (or the 8-bit one × 257)
                image = Image.frombytes("I;16", (pic.width, pic.height), plane.astype("<u2").tobytes())
                extra["depth"] = 16
            else:
                image = Image.fromarray(colour_planes(pic.rgb, "L"), "L")
            return _Prepared(pic, image, sections, extra, dict(fmt.fixed))
        grey = rmode in ("L", "LA")
        if grey and fmt.grey:
            image = Image.fromarray(colour_planes(pic.rgb, "L"), "L")
        else:
            image = Image.fromarray(pic.rgb, "RGB")
        opts = dict(fmt.fixed)
        if image.mode == "RGB":
            opts.update(fmt.colour_only)
        if pic.alpha is not None:
            if native_alpha:
                image = image.convert("RGB")  # WebP has no grey-with-alpha mode
                image.putalpha(Image.fromarray(pic.alpha, "L"))
                extra["alpha"] = "native"
            else:
                sections[_SECTION_ALPHA] = encode_alpha(pic.alpha)
                extra["alpha"] = "section"
        extra.update({k: v for k, v in opts.items() if k in fmt.colour_only})
        return _Prepared(pic, image, sections, extra, opts)

    def _stream(self, prep: _Prepared, i: int) -> bytes:
        """The complete stream for ladder rung ``i`` (cached per picture)."""
        if i not in prep.cache:
            rung = self.fmt.ladder[i]
            buf = io.BytesIO()
            prep.image.save(buf, format=self.fmt.pil, **prep.save_opts, **rung)
            params = dict(prep.extra, format=self.fmt.pil, **rung)
            prep.cache[i] = _pack(self.name, prep.pic, params, buf.getvalue(), prep.sections)
        return prep.cache[i]

    def _summary(self, prep: _Prepared, i: int, **knob) -> dict:
        return dict(format=self.fmt.pil, library=dict(self.fmt.ladder[i]), **prep.extra, **knob)

    def _encode_point(self, prep: _Prepared, quality, target_bpp, measure: bool) -> EncodeResult:
        pic = prep.pic
        if target_bpp is not None:
            i = self._rung_for_bpp(prep, target_bpp)
            data = self._stream(prep, i)
            knob = {"target_bpp": target_bpp, "achieved_bpp": round(len(data) * 8 / (pic.width * pic.height), 5)}
        else:
            q = DEFAULT_QUALITY if quality is None else quality
            if not 0 <= q <= 100:
                raise ValueError(f"quality must be in [0, 100], got {q}")
            i = self.fmt.quality_index(int(round(q)))
            data, knob = self._stream(prep, i), {"quality": q}
        planes = decoded_planes(self.decode(data), pic.mode) if measure else None
        measured = psnr(pic.reference(), planes) if measure else None
        return EncodeResult(data, pic.width, pic.height, measured, self._summary(prep, i, **knob), decoded=planes)

    def _rung_for_bpp(self, prep: _Prepared, target_bpp: float) -> int:
        """Bisection on the ladder (size grows with the rung); the rung whose stream is closest to the target."""
        if target_bpp <= 0:
            raise ValueError("target_bpp must be positive")
        target = target_bpp * prep.pic.width * prep.pic.height / 8.0
        size = lambda i: len(self._stream(prep, i))  # noqa: E731
        lo, hi = 0, len(self.fmt.ladder) - 1
        if size(hi) <= target:
            return hi
        if size(lo) >= target:
            return lo
        while hi - lo > 1:  # invariant: size(lo) < target <= size(hi)
            mid = (lo + hi) // 2
            if size(mid) < target:
                lo = mid
            else:
                hi = mid
        return min((lo, hi), key=lambda i: abs(size(i) - target))

    def _search_floor(self, prep: _Prepared, floors: Floors) -> EncodeResult:
        pic = prep.pic
        ref = Reference(pic.reference())  # its perceptual features computed once for every candidate
        evaluated: dict[int, tuple[bool, dict]] = {}

        def ok(i: int) -> bool:
            if i not in evaluated:
                scores = floors.scores(ref, decoded_planes(self.decode(self._stream(prep, i)), pic.mode))
                evaluated[i] = (floors.met(scores), scores)
            return evaluated[i][0]

        top = len(self.fmt.ladder) - 1
        if not ok(top):
            raise QualityFloorUnreachable(unreachable_message(self.name, evaluated[top][1], floors))
        lo, hi = -1, top  # invariant: rung hi passes; rungs <= lo fail (or lo = -1)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if ok(mid):
                hi = mid
            else:
                lo = mid
        # quality is nearly monotone in the rung; of the passing rungs decoded, keep the smallest stream
        i = min((j for j, e in evaluated.items() if e[0]), key=lambda j: (len(self._stream(prep, j)), j))
        scores = evaluated[i][1]
        knob = floors.knob() | {k: v for k, v in scores.items() if k != "psnr"}  # measured ms_ssim / lpips / dists
        return EncodeResult(self._stream(prep, i), pic.width, pic.height, scores["psnr"], self._summary(prep, i, **knob))

    # ---------------------------------------------------------------- decode
    def parse(self, data: bytes) -> tuple[bitstream.Stream, dict]:
        """Container and header checks, before the payload is touched."""
        s = bitstream.parse(data)
        params = _check_header(s, self.name, self.max_pixels)
        if params.get("format") != self.fmt.pil:
            raise CorruptStream(f"{self.name} stream declares payload format {params.get('format')!r}")
        if params.get("alpha") == "native" and _SECTION_ALPHA in s.sections:
            raise CorruptStream("the stream has both a native and a separate alpha plane")
        if params.get("depth", 8) == 16 and (not self.fmt.sixteen or restored_mode(s.mode, False) != "I;16"):
            raise CorruptStream(f"16-bit coding is not valid for {self.name} mode {s.mode!r}")
        return s, params

    def decode(self, data: bytes, refine=None, refiner=None) -> Decoded:
        self._refusing_refinement(refine)
        s, params = self.parse(data)
        img = _open_payload(s.payload, self.fmt.pil, s.width, s.height)
        alpha = _section_alpha(s)
        native_alpha = params.get("alpha") == "native"
        sixteen = params.get("depth", 8) == 16
        depth16 = None
        if sixteen:
            if not img.mode.startswith("I;16"):
                raise CorruptStream(f"16-bit stream decoded to mode {img.mode}")
            depth16 = np.asarray(img).astype(np.uint16)
            grey = ((depth16.astype(np.uint32) + 128) // 257).astype(np.uint8)
            rgb = np.repeat(grey[..., None], 3, axis=2)
        elif img.mode in ("L", "LA", "RGB", "RGBA"):
            arr = np.asarray(img)
            if img.mode in ("L", "LA"):
                plane = arr if arr.ndim == 2 else arr[..., 0]
                rgb = np.repeat(plane[..., None], 3, axis=2)
            else:
                rgb = np.ascontiguousarray(arr[..., :3])
            if native_alpha:
                if img.mode not in ("LA", "RGBA"):
                    raise CorruptStream("the stream declares native alpha but the payload has none")
                alpha = np.ascontiguousarray(arr[..., -1])
        else:
            raise CorruptStream(f"{self.fmt.pil} payload decoded to unexpected mode {img.mode}")
        if native_alpha and restored_mode(s.mode, True) not in ("RGBA", "LA"):
            raise CorruptStream(f"an alpha plane is not valid for mode {s.mode!r}")
        image = restored_image(rgb, s.mode, alpha, depth16)
        return Decoded(image, s.mode, s.sections.get(_SECTION_ICC), s.sections.get(_SECTION_EXIF), rgb,
                       depth16=depth16)

    def info(self, data: bytes) -> dict:
        s, params = self.parse(data)
        has_alpha = _SECTION_ALPHA in s.sections or params.get("alpha") == "native"
        return _info(s, data, params, has_alpha)


for _name in CLASSICAL:
    CODECS.add(_name, ClassicalCodec)


# ------------------------------------------------------------------------------------------ passthrough
@CODECS.register("passthrough")
class PassthroughCodec(Codec):
    """The original file, byte for byte, in a LARC container: lossless by definition (PSNR ``inf``).

    The knobs are accepted and have nothing to do: every quality floor is met and no rate can be chosen. A
    :class:`Picture` without ``source_bytes`` (built from planes) is stored as a lossless PNG instead.
    """

    name = "passthrough"
    caps = Capabilities(keeps_source=True)

    def __init__(self, *, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.max_pixels = max_pixels

    def encode(
        self,
        pic: Picture,
        *,
        quality: float | None = None,
        target_bpp: float | None = None,
        min_psnr: float | None = None,
        measure: bool = True,
    ) -> EncodeResult:
        check_one_knob(quality, target_bpp, min_psnr)
        if pic.source_bytes is not None:
            payload, fmt, source = pic.source_bytes, image_format(pic.source_bytes), True
        else:
            buf = io.BytesIO()
            img = restored_image(pic.rgb, pic.mode, pic.alpha, pic.depth16)
            save_image(img, buf, icc=pic.icc, exif=pic.exif, format="PNG")
            payload, fmt, source = buf.getvalue(), "PNG", False
        params = {"format": fmt, "source": source}
        data = _pack(self.name, pic, params, payload, {})
        knob = {k: v for k, v in (("quality", quality), ("target_bpp", target_bpp), ("min_psnr", min_psnr)) if v is not None}
        tier = BYTES_EXACT if source else PIXELS_EXACT
        return EncodeResult(data, pic.width, pic.height, math.inf, dict(params, **knob, guarantee=tier))

    def parse(self, data: bytes) -> tuple[bitstream.Stream, dict]:
        s = bitstream.parse(data)
        params = _check_header(s, self.name, self.max_pixels)
        if s.sections:
            raise CorruptStream("passthrough streams carry no sections (the original file holds everything)")
        return s, params

    def original(self, data: bytes) -> bytes:
        """The original file bytes, after the container checks (no image decode)."""
        return self.parse(data)[0].payload

    def decode(self, data: bytes, refine=None, refiner=None) -> Decoded:
        self._refusing_refinement(refine)
        s, _ = self.parse(data)
        return decode_original(s.payload, s, self.max_pixels)

    def info(self, data: bytes) -> dict:
        s, params = self.parse(data)
        return _info(s, data, params, restored_mode(s.mode, True) != restored_mode(s.mode, False))


def decode_original(original: bytes, s: bitstream.Stream, max_pixels: int) -> Decoded:
    """The original file's image, held to the stream header's size and mode, with ``original`` set so a restore
    writes the file itself back (passthrough, jpeg-exact)."""
    pic = read_image(original, max_pixels=max_pixels)
    if (pic.width, pic.height) != (s.width, s.height):
        raise CorruptStream(f"payload is {pic.width}x{pic.height}, the header says {s.width}x{s.height}")
    has_alpha = pic.alpha is not None
    if restored_mode(pic.mode, has_alpha) != restored_mode(s.mode, has_alpha):
        raise CorruptStream(f"payload mode {pic.mode} does not restore like the header's {s.mode}")
    image = restored_image(pic.rgb, s.mode, pic.alpha, pic.depth16)
    return Decoded(image, s.mode, pic.icc, pic.exif, pic.rgb, depth16=pic.depth16, original=original)

