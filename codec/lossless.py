"""``--lossless`` (codec name ``lossless``): per image, the smallest stream that changes no pixel.

=======================  ====================================================================================
JPEG source              ``jpeg-exact`` (``bytes-exact``), itself ``passthrough`` where the transcode is not
                         exact or not smaller (``codec.exact``)
other source whose       lossless JPEG XL and lossless WebP, each decoded and compared sample by sample with
pixels read exactly      the source (colour planes at their depth — 16-bit grey included —, alpha): the smaller
                         one that is equal (``pixels-exact``); WebP codes 8 bits, so a 16-bit picture gets JPEG
                         XL or nothing
anything else            the original file (``passthrough``, ``bytes-exact``): when no candidate is equal, none
                         is smaller, or reading the file converts its pixels (CMYK, 16-bit RGB, …:
                         ``guarantee.inexact_reading``)
=======================  ====================================================================================

Streams never say ``lossless``: the chosen codec's own stream is written, so any decoder reads it.
``EncodeResult.params`` = the chosen stream's params plus ``guarantee`` and ``{"lossless": {"chosen",
"candidates"}}`` (name → stream bytes, ``"differs: …"``, ``"error: …"``, or why pixels were not tried).
"""

from __future__ import annotations

import math
from typing import Sequence

from . import bitstream
from .classical import ClassicalCodec, decoded_planes
from .errors import LatentarcError, ModelMismatch
from .exact import JpegExactCodec, is_jpeg
from .guarantee import PIXELS_EXACT, decoded_alpha, inexact_reading, pixel_mismatch
from .images import DEFAULT_MAX_PIXELS, Picture
from .base import CODECS, Capabilities, Codec
from .types import Decoded, EncodeResult

__all__ = ["LosslessCodec", "PIXEL_CODECS"]

#: the formats whose lossless mode is tried for non-JPEG sources
PIXEL_CODECS = ("jxl", "webp")


@CODECS.register("lossless")
class LosslessCodec(Codec):
    """The ``--lossless`` policy (module docs)."""

    name = "lossless"
    caps = Capabilities(keeps_source=True)

    def __init__(self, *, pixel_codecs: Sequence[str] = PIXEL_CODECS, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.exact = JpegExactCodec(max_pixels=max_pixels)
        self.passthrough = self.exact.passthrough
        self.pixel = {n: ClassicalCodec(n, max_pixels=max_pixels) for n in pixel_codecs}
        self._members = {self.exact.name: self.exact, self.passthrough.name: self.passthrough, **self.pixel}

    def member(self, name: str):
        """The codec called ``name`` among those the policy chooses from, else None."""
        return self._members.get(name)

    def encode(self, pic: Picture, *, quality: float | None = None, target_bpp: float | None = None,
               min_psnr: float | None = None, measure: bool = True) -> EncodeResult:
        if quality is not None or target_bpp is not None or min_psnr is not None:
            raise ValueError("--lossless keeps every pixel: it takes no quality, target_bpp or min_psnr")
        if is_jpeg(pic.source_bytes):
            res = self.exact.encode(pic)
            chosen = self.passthrough.name if "fallback" in res.params["exact"] else self.exact.name
            return _decided(res, chosen, {chosen: len(res.data)})
        best = self.passthrough.encode(pic)
        chosen, candidates = self.passthrough.name, {self.passthrough.name: len(best.data)}
        why = None if pic.source_bytes is None else inexact_reading(pic.source_bytes)
        if why is not None:
            candidates["pixels"] = f"not tried: {why}"
            return _decided(best, chosen, candidates)
        for name, codec in self.pixel.items():
            try:
                res = codec.encode_lossless(pic)
                dec = codec.decode(res.data)
            except (LatentarcError, ValueError, OSError, RuntimeError) as e:  # e.g. a size a format cannot hold
                candidates[name] = f"error: {type(e).__name__}: {e}"[:300]
                continue
            bad = pixel_mismatch(pic, decoded_planes(dec, pic.mode), decoded_alpha(dec.image))
            if bad is not None:
                candidates[name] = f"differs: {bad}"
                continue
            candidates[name] = len(res.data)
            if len(res.data) < len(best.data):
                best = EncodeResult(res.data, res.width, res.height, math.inf, dict(res.params, guarantee=PIXELS_EXACT))
                chosen = name
        return _decided(best, chosen, candidates)

    def decode(self, data: bytes, refine=None, refiner=None) -> Decoded:
        return self._for(data).decode(data, refine, refiner)

    def info(self, data: bytes) -> dict:
        return self._for(data).info(data)

    def _for(self, data: bytes):
        name = bitstream.parse(data).codec
        codec = self.member(name)
        if codec is None:
            raise ModelMismatch(f"stream was made with codec {name!r}; --lossless writes {', '.join(self._members)}")
        return codec


def _decided(res: EncodeResult, chosen: str, candidates: dict) -> EncodeResult:
    return EncodeResult(res.data, res.width, res.height, math.inf,
                        dict(res.params, lossless={"chosen": chosen, "candidates": candidates}))
