"""A stream to the file a user gets back: the decode (refined where asked) and the bytes to write.

One function for ``latentarc decode`` and the restore job. The exact tier decodes to the original file
(``Decoded.original``), which is written back byte for byte: by ``restore`` always (under the key's own name),
by ``decode`` when the output name asks for the original's format; everything else is encoded in the asked
format with its ICC profile and EXIF.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from .base import Codec
from .images import image_format, save_image

__all__ = ["Restored", "decode_to"]


@dataclass(frozen=True)
class Restored:
    body: bytes
    original: bool  # the source file's own bytes (the exact tier), not a newly encoded image
    width: int
    height: int
    mode: str  # the restored image's mode
    refinement: str = "none"  # what refinement ran (``Decoded.refinement``), e.g. "realistic/1"


def decode_to(codec: Codec, data: bytes, fmt: str, *, refine=None, refiner=None,
              original_any_format: bool = False) -> Restored:
    """Decode ``data`` with ``codec`` (``refine``: a ``refine.RefineConfig``, refused by codecs that cannot
    refine) and render it as a ``fmt`` file (a Pillow format name). The original file comes back instead when
    the stream holds one and its format is ``fmt``, or whatever its format with ``original_any_format``."""
    dec = codec.decode(data, refine, refiner)
    w, h = dec.image.size
    if dec.original is not None and (original_any_format or image_format(dec.original) == fmt):
        return Restored(dec.original, True, w, h, dec.image.mode, dec.refinement)
    buf = io.BytesIO()
    save_image(dec.image, buf, icc=dec.icc, exif=dec.exif, format=fmt)
    return Restored(buf.getvalue(), False, w, h, dec.image.mode, dec.refinement)
