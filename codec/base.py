"""What every image codec offers, neural or classical, so jobs never special-case one.

A codec turns a :class:`~latentarc.codec.images.Picture` into one self-contained LARC stream (the container of
``bitstream.py``, whatever the payload inside) and back. Operating points are the same three knobs everywhere:
``quality`` (0–100), ``target_bpp`` and ``min_psnr``; a codec that cannot honour one raises ``ValueError``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from .images import Picture
from .neural import Decoded, EncodeResult

__all__ = ["ImageCodec", "EncodeResult", "Decoded"]


@runtime_checkable
class ImageCodec(Protocol):
    name: str

    def encode(
        self,
        pic: Picture,
        *,
        quality: float | None = None,
        target_bpp: float | None = None,
        min_psnr: float | None = None,
        measure: bool = True,
    ) -> EncodeResult: ...

    def decode(self, data: bytes) -> Decoded: ...

    def info(self, data: bytes) -> dict: ...
