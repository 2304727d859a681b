"""What a row promises about its restored image (the ``guarantee`` column), and the checks that hold it to that.

=================  ===========================================================================================
``bytes-exact``    restore writes the source file back bit for bit (``passthrough``, ``jpeg-exact``); checked by
                   the SHA-256 of the restored bytes against ``source_sha256``
``pixels-exact``   the decoded pixels equal the source's as latentarc reads them (colour planes at their depth,
                   16-bit grey included, alpha, EXIF orientation applied), verified by decoding at encode time;
                   the file's other bytes (container, XMP, text chunks) are not kept
``lossy``          anything else; quality is what ``psnr`` / ``ms_ssim`` say
=================  ===========================================================================================

An encoder states a tier in ``EncodeResult.params["guarantee"]`` only after checking it; a result that states
none is ``lossy``. Rows of tables written before the column existed read it as null (no promise recorded).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from .images import Picture

BYTES_EXACT, PIXELS_EXACT, LOSSY = "bytes-exact", "pixels-exact", "lossy"
TIERS = (BYTES_EXACT, PIXELS_EXACT, LOSSY)

#: Pillow modes whose pixels :func:`~latentarc.codec.images.read_image` keeps without conversion (palette images
#: become the colours they index; ``1`` becomes 0/255 grey): only these can be pixels-exact
_EXACT_MODES = frozenset({"RGB", "RGBA", "L", "LA", "1", "P", "PA", "I;16", "I;16L", "I;16B", "I;16N"})
_SIXTEEN = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})

__all__ = ["BYTES_EXACT", "PIXELS_EXACT", "LOSSY", "TIERS", "of", "pixel_mismatch", "inexact_reading"]


def of(params: dict) -> str:
    """The tier an encode result states (``lossy`` when it states none)."""
    return params.get("guarantee", LOSSY)


def inexact_reading(data: bytes) -> str | None:
    """Why the pixels Pillow reads from ``data`` are not the file's own (None when they are): a mode that is
    converted on reading (CMYK, LAB, 32-bit ``I``, premultiplied alpha…), or samples wider than the mode (a
    16-bit RGB PNG reads as 8-bit RGB). Such a file can only be kept exactly as bytes."""
    try:
        img = Image.open(io.BytesIO(data))
    except Exception as e:  # noqa: BLE001 — read_image accepted these bytes; say why not here rather than raise
        return f"cannot be re-opened: {type(e).__name__}"
    if img.mode not in _EXACT_MODES:
        return f"mode {img.mode} is converted on reading"
    wide = [t[3] for t in img.tile if isinstance(t[3], str) and "16" in t[3]]
    if wide and img.mode not in _SIXTEEN:
        return f"{wide[0]} samples read as {img.mode}"
    return None


def pixel_mismatch(pic: Picture, planes: np.ndarray, alpha: np.ndarray | None) -> str | None:
    """Why decoded ``planes`` (restored representation, as ``decoded_planes`` gives them) and ``alpha`` differ
    from ``pic``'s; None when every sample is equal."""
    ref = pic.reference()
    if planes.shape != ref.shape or planes.dtype != ref.dtype:
        return f"decoded planes are {planes.dtype}{planes.shape}, the source's {ref.dtype}{ref.shape}"
    if not np.array_equal(planes, ref):
        return f"{int(np.count_nonzero(planes != ref))} colour samples differ"
    want = pic.alpha
    if want is None and alpha is not None and alpha.min() < 255:
        return "decoded image has transparency the source lacks"
    if want is not None and (alpha is None or not np.array_equal(alpha, want)):
        return "alpha differs" if alpha is not None else "alpha was lost"
    return None


def decoded_alpha(image: Image.Image) -> np.ndarray | None:
    """The alpha plane of a restored image, None when it has none."""
    return np.asarray(image.getchannel("A")) if image.mode in ("RGBA", "LA") else None
