"""Turn arbitrary image bytes into the planes the codec stores, and those planes back into an image.

What happens to each kind of input (also in the README):

* ``RGB`` is coded as is; ``L``/``1`` are coded as grey RGB and restored as ``L``.
* Alpha (``RGBA``, ``LA``, ``PA``, palette images with transparency) is kept **losslessly** in its own
  PNG-compressed plane: a lossy alpha would corrupt masks. Colour planes are coded by the neural codec.
* ``P`` (palette) images are restored as ``RGB``/``RGBA``: the palette itself is not kept.
* 16-bit greyscale (``I;16*``, ``I``) is coded at 8-bit precision and restored as ``I;16`` (value × 257):
  the tiny autoencoder is an 8-bit model, so 16-bit depth is *not* preserved — use a lossless codec for that.
* ``CMYK``/``YCbCr``/``LAB``/``HSV`` are converted to RGB and restored as ``RGB``.
* EXIF orientation is applied before coding (the restored image is upright, orientation tag removed);
  the ICC profile and the EXIF block are kept byte for byte.
* Animated images (more than one frame) and float images are refused with :class:`UnsupportedImage`,
  never silently truncated to one frame.
* The decompression-bomb guard is always on: a declared size above ``max_pixels`` is refused before any pixel
  is decoded.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps

from .errors import ImageTooLarge, UnreadableImage, UnsupportedImage

#: Pillow's own default guard (≈ 89.5 MP); callers may lower or raise it explicitly.
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485

_GREY = {"1", "L", "LA"}
_SIXTEEN = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
_TO_RGB = {"CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa"}


@dataclass
class Picture:
    """The planes latentarc stores for one image, plus what is needed to restore it faithfully."""

    rgb: np.ndarray  # (H, W, 3) uint8 — the planes the lossy codec codes
    alpha: np.ndarray | None  # (H, W) uint8, kept losslessly
    mode: str  # Pillow mode of the original
    icc: bytes | None = None
    exif: bytes | None = None
    depth16: np.ndarray | None = None  # the original 16-bit plane, so quality on 16-bit inputs is measured honestly
    #: the file bytes this picture was read from (set by :func:`read_image`): what the ``passthrough`` codec
    #: stores verbatim. None for pictures built from planes.
    source_bytes: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def restored_mode(self) -> str:
        return restored_mode(self.mode, self.alpha is not None)

    def reference(self) -> np.ndarray:
        """The original's colour planes in the restored representation — what quality is measured against."""
        return colour_planes(self.rgb, self.mode, self.depth16)


def restored_mode(mode: str, has_alpha: bool) -> str:
    if mode in _SIXTEEN:
        return "I;16"
    if mode in _GREY:
        return "LA" if has_alpha else "L"
    return "RGBA" if has_alpha else "RGB"


def _to_grey(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma in integers, as Pillow's ``convert('L')`` does."""
    r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)


def colour_planes(rgb: np.ndarray, mode: str, depth16: np.ndarray | None = None) -> np.ndarray:
    """Colour planes in the restored representation: (H,W,3) uint8, (H,W) uint8, or (H,W) uint16."""
    if mode in _SIXTEEN:
        return depth16 if depth16 is not None else _to_grey(rgb).astype(np.uint16) * 257
    if mode in _GREY:
        return _to_grey(rgb)
    return rgb


def read_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Picture:
    """Decode image bytes into a :class:`Picture`; every failure is an :class:`ImageError` subclass."""
    if not data:
        raise UnreadableImage("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > max_pixels:
                raise ImageTooLarge(f"declared size {w}x{h} ({w * h / 1e6:.1f} MP) exceeds the {max_pixels / 1e6:.1f} MP guard")
            if getattr(img, "n_frames", 1) > 1:
                raise UnsupportedImage(f"animated {img.format} with {img.n_frames} frames: only still images are coded")
            img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageTooLarge(f"decompression-bomb guard: {e}") from None
    except Image.UnidentifiedImageError:
        raise UnreadableImage(f"not an image in a known format (starts with {data[:8]!r})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise UnreadableImage(f"cannot decode image: {e}") from None
    icc = img.info.get("icc_profile") or None
    img = ImageOps.exif_transpose(img)
    exif_obj = img.getexif()
    exif = exif_obj.tobytes() if len(exif_obj) else None
    mode = img.mode
    alpha = None
    sixteen = None
    if mode == "F":
        raise UnsupportedImage("floating-point images are not supported")
    if mode in _SIXTEEN:
        sixteen = np.clip(np.asarray(img, dtype=np.int64), 0, 65535).astype(np.uint16)
        grey8 = ((sixteen.astype(np.uint32) + 128) // 257).astype(np.uint8)
        rgb = np.repeat(grey8[..., None], 3, axis=2)
    else:
        if mode == "P" and "transparency" in img.info or mode == "PA":
            img = img.convert("RGBA")
        if img.mode in ("RGBA", "LA", "La", "RGBa"):
            if img.mode in ("La", "RGBa"):  # premultiplied: undo before splitting
                img = img.convert(img.mode.replace("a", "A"))
            alpha = np.asarray(img.getchannel("A"), dtype=np.uint8).copy()
            if alpha.min() == 255:
                alpha = None  # fully opaque: nothing to keep
        try:
            rgb = np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
        except ValueError as e:
            raise UnsupportedImage(f"cannot convert mode {mode} to RGB: {e}") from None
    return Picture(rgb, alpha, mode, icc, exif, sixteen, source_bytes=bytes(data))


def to_image(rgb: np.ndarray, mode: str, alpha: np.ndarray | None = None) -> Image.Image:
    """Decoded colour planes (H, W, 3) uint8 → a Pillow image in the restored mode of ``mode``."""
    planes = colour_planes(rgb, mode)
    out_mode = restored_mode(mode, alpha is not None)
    if out_mode == "I;16":
        img = Image.frombytes("I;16", (planes.shape[1], planes.shape[0]), planes.astype("<u2").tobytes())
    else:
        img = Image.fromarray(planes, "L" if planes.ndim == 2 else "RGB")
    if alpha is not None:
        img.putalpha(Image.fromarray(alpha, "L"))
    return img


def encode_alpha(alpha: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(alpha, "L").save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def decode_alpha(data: bytes, width: int, height: int) -> np.ndarray:
    try:
        img = Image.open(io.BytesIO(data))
        if img.size != (width, height) or img.mode != "L":
            raise UnreadableImage("alpha plane does not match the image")
        return np.asarray(img, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as e:
        raise UnreadableImage(f"alpha plane is damaged: {e}") from None


def save_image(img: Image.Image, path_or_file, *, icc: bytes | None = None, exif: bytes | None = None, format: str | None = None) -> None:
    """Write ``img`` keeping ICC and EXIF where the format supports them (PNG, JPEG, WebP, TIFF)."""
    kw = {}
    if icc:
        kw["icc_profile"] = icc
    if exif:
        kw["exif"] = exif
    img.save(path_or_file, format=format, **kw)


def image_format(data: bytes) -> str | None:
    """Pillow's name for the format of an image file (``"JPEG"``, ``"PNG"``…), None if Pillow cannot open it."""
    try:
        return Image.open(io.BytesIO(data)).format
    except Exception:  # noqa: BLE001 - any unreadable input means "no known format"
        return None
