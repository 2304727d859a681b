"""What the benches and trainers read from the command line and from disk: image folders, centre crops,
number lists, entropy-model specs, and strict JSON. One definition, so every bench selects the same images."""

from __future__ import annotations

import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".ppm", ".pgm", ".pnm"}


def entropy_spec(spec: str) -> dict:
    """``NAME`` or ``NAME:K`` (K: RD-optimised rounding strength, 0 = plain rounding) → codec keyword args. NAME may
    itself hold a colon (``ctx:<folder>``, a trained context model): only a number after the last colon is K."""
    name, sep, k = spec.rpartition(":")
    if sep:
        try:
            return {"entropy_model": name, "rdoq": float(k)}
        except ValueError:
            pass
    return {"entropy_model": spec}  # an unknown name is refused by the entropy-model registry


def _parse_numbers(text: str | None, flag: str) -> list[float]:
    if text is None:
        return []
    try:
        xs = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{flag} must be comma-separated numbers, got {text!r}") from None
    for x in xs:
        if not math.isfinite(x):
            raise ValueError(f"{flag}: {x} is not a finite number")
    return list(dict.fromkeys(xs))  # drop repeats, keep order


def parse_qualities(text: str, *, allow_empty: bool = False) -> list[float]:
    qs = _parse_numbers(text, "--qualities")
    if not qs and not allow_empty:
        raise ValueError("--qualities is empty")
    for q in qs:
        if not 0 <= q <= 100:
            raise ValueError(f"quality must be in [0, 100], got {q:g}")
    return qs


def _parse_positive(text: str | None, flag: str, what: str) -> list[float]:
    xs = _parse_numbers(text, flag)
    for x in xs:
        if x <= 0:
            raise ValueError(f"{what} must be positive, got {x:g}")
    return xs


def parse_targets(text: str | None) -> list[float]:
    return _parse_positive(text, "--targets", "target bpp")


def parse_floors(text: str | None) -> list[float]:
    return _parse_positive(text, "--floors", "PSNR floor")


def list_images(folder: str | Path, limit: int | None = None) -> list[Path]:
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"not a folder: {folder}")
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if limit is not None:
        if limit < 1:
            raise ValueError("--limit must be at least 1")
        files = files[:limit]
    if not files:
        raise ValueError(f"no images in {folder}")
    return files


def centre_crop(pic, size: int | None):
    """``pic`` cropped to at most ``size``×``size`` around its centre (rgb, alpha and depth16 alike)."""
    if not size:
        return pic
    if size < 1:
        raise ValueError("--crop must be at least 1")
    h, w = pic.height, pic.width
    ch, cw = min(h, size), min(w, size)
    if (ch, cw) == (h, w):
        return pic
    y0, x0 = (h - ch) // 2, (w - cw) // 2

    def cut(a):
        return None if a is None else np.ascontiguousarray(a[y0 : y0 + ch, x0 : x0 + cw])

    return replace(pic, rgb=cut(pic.rgb), alpha=cut(pic.alpha), depth16=cut(pic.depth16))


def read_pictures(files: list[Path], crop: int | None, skipped: list[dict], log=None):
    """Yield ``(i, path, picture)`` (1-based ``i``, centre-cropped to ``crop``) for every readable file; an
    unreadable one is reported on ``log`` (default stderr) and recorded in ``skipped``, and the run goes on."""
    from latentarc.codec.errors import ImageError
    from latentarc.codec.images import read_image

    log = log or sys.stderr
    for i, path in enumerate(files, 1):
        try:
            pic = centre_crop(read_image(path.read_bytes()), crop)
        except ImageError as e:
            print(f"[{i}/{len(files)}] {path.name}: skipped ({type(e).__name__}: {e})", file=log)
            skipped.append({"image": path.name, "error": f"{type(e).__name__}: {e}"})
            continue
        yield i, path, pic


def json_safe(x):
    """``x`` with non-finite floats as None (strict JSON), through dicts, lists and tuples."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x
