"""The values every codec returns: one encode's result, one decode's pixels, what a codec can do.

They live apart from any codec so that the protocol (``base.py``), the codecs and the jobs all import them from
one leaf module.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["EncodeResult", "Decoded", "Capabilities"]


@dataclass
class EncodeResult:
    data: bytes
    width: int
    height: int
    psnr: float | None  # measured by decoding, against the original planes
    params: dict = field(default_factory=dict)  # JSON-able summary for tables and `info`
    #: the colour planes of the decode that measured ``psnr`` (never stored): a caller scoring more metrics on the
    #: same stream uses them instead of decoding it again
    decoded: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def bpp(self) -> float:
        return len(self.data) * 8.0 / (self.width * self.height)


@dataclass
class Decoded:
    image: "object"  # PIL.Image.Image in the restored mode
    mode: str  # the original's mode
    icc: bytes | None
    exif: bytes | None
    rgb: np.ndarray  # decoded colour planes (H, W, 3) uint8
    refinement: str = "none"  # what refinement ran, and whether the stream's verification chose it
    depth16: np.ndarray | None = None  # (H, W) uint16 when the stream holds 16-bit grey (jxl, passthrough)
    original: bytes | None = None  # the exact tier: the original file, to be written back verbatim


@dataclass(frozen=True)
class Capabilities:
    """What a codec offers beyond encode / decode / info, declared by its class (never probed).

    ``refines``: ``decode`` accepts a refinement of the latent (``codec.refine``); ``floor_search``: the codec
    searches its own ladder for perceptual floors (``encode_floor``); ``keeps_source``: streams may hold the
    source file's bytes, so jobs must hand it ``Picture.source_bytes``; ``analysis``: the encoder's
    operating-point-free work (encoder pass, latent search, sensitivities) can be done once and reused
    (``analyse``, then ``encode(..., analysis=…)``); such codecs code a latent, so they take a latent search."""

    refines: bool = False
    floor_search: bool = False
    keeps_source: bool = False
    analysis: bool = False
