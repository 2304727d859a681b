"""What every image codec offers, neural or classical, so jobs never special-case one.

A codec turns a :class:`~latentarc.codec.images.Picture` into one self-contained LARC stream (the container of
``bitstream.py``, whatever the payload inside) and back. Operating points are the same three knobs everywhere:
``quality`` (0–100), ``target_bpp`` and ``min_psnr``; a codec that cannot honour one raises ``ValueError``.
What a codec can do beyond that is declared in its :class:`Capabilities`, and the matching methods raise
``NotImplementedError`` on a codec that does not declare it.

:data:`CODECS` maps every codec name a stream, a table row or the command line can hold to its class; a class
builds itself from a :class:`~latentarc.codec.spec.CodecSpec` (``from_spec``). ``codec.codecs`` imports every
codec module, so the registry is complete once it is imported.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from .errors import UnknownModel
from .images import Picture
from .registry import Registry
from .spec import CodecSpec
from .types import Capabilities, Decoded, EncodeResult

__all__ = ["Codec", "CODECS", "Capabilities", "EncodeResult", "Decoded", "TARGET_TOLERANCE"]

#: how far ``target_bpp`` may land from the target, relative (±5%), where the image allows it
TARGET_TOLERANCE = 0.05


class Codec(ABC):
    """Base class of every codec (``codec.codecs`` names them)."""

    name: str
    caps: ClassVar[Capabilities] = Capabilities()

    @classmethod
    def from_spec(cls, spec: CodecSpec) -> "Codec":
        """The codec a spec names; codecs without options build from nothing."""
        return cls()

    @abstractmethod
    def encode(self, pic: Picture, *, quality: float | None = None, target_bpp: float | None = None,
               min_psnr: float | None = None, measure: bool = True) -> EncodeResult: ...

    @abstractmethod
    def decode(self, data: bytes, refine=None, refiner=None) -> Decoded:
        """The stream's pixels; ``refine`` (a ``refine.RefineConfig``) and ``refiner`` only where
        ``caps.refines``."""

    @abstractmethod
    def info(self, data: bytes) -> dict: ...

    def encode_floor(self, pic: Picture, *, min_psnr: float | None = None, min_ms_ssim: float | None = None,
                     max_lpips: float | None = None, max_dists: float | None = None) -> EncodeResult:
        """The smallest stream meeting every floor, by the codec's own search (``caps.floor_search``)."""
        raise NotImplementedError(f"{self.name} has no floor search of its own")

    def analyse(self, pic: Picture):
        """The operating-point-free part of an encode, reusable by ``encode(..., analysis=…)``
        (``caps.analysis``)."""
        raise NotImplementedError(f"{self.name} has no separate analysis")

    def member(self, name: str) -> "Codec | None":
        """The codec that writes streams named ``name`` on this codec's behalf (itself, or one a policy such as
        ``auto`` chose); None when it writes no such streams."""
        return self if name == self.name else None

    def weights_sha256(self) -> str | None:
        """The fingerprint of the decoder weights its streams need; None for codecs without weights."""
        return None

    def _refusing_refinement(self, refine) -> None:
        if refine is not None and refine.active:
            raise ValueError(f"refinement applies to latent codecs; this stream is {self.name}")


#: codec name → codec class; every model name is a neural codec (the fallback ``codec.neural`` registers)
CODECS: Registry[type[Codec]] = Registry("codec", error=UnknownModel)
