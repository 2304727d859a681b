"""What the trainers may learn from: the training pool, the held-out evaluation photos it must never contain, and
the validation split a trainer keeps aside inside its own pool."""

from __future__ import annotations

import hashlib
from pathlib import Path

SHARED = Path(__file__).resolve().parents[3] / "shared"  # <repo>/jobs/research/ → ../shared
DEFAULT_TRAIN = SHARED / "data" / "train"
DEFAULT_HELD_OUT = SHARED / "data" / "photos"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


class HeldOutData(ValueError):
    """The training images include held-out photos (by path or by content)."""


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (subfolders included), in path order."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def training_files(images: str | Path, held_out: str | Path) -> list[Path]:
    """The training images under ``images``; :class:`HeldOutData` if any is a held-out photo, by path (inside
    the held-out folder, links resolved) or by content (the same bytes as a held-out file)."""
    images, held_out = Path(images), Path(held_out)
    files = image_files(images)
    if not files:
        raise ValueError(f"no training images in {images}")
    hold = held_out.resolve()
    inside = [p for p in files if hold == p.resolve() or hold in p.resolve().parents]
    if inside:
        raise HeldOutData(f"{len(inside)} training image(s) are held-out photos in {held_out} (e.g. {inside[0]}); "
                          "the held-out set is for evaluation only")
    if held_out.is_dir():
        held = {sha256_file(p) for p in image_files(held_out)}
        same = [p for p in files if sha256_file(p) in held]
        if same:
            raise HeldOutData(f"{len(same)} training image(s) have the bytes of a held-out photo (e.g. {same[0]})")
    return files


def validation_split(names: list[str], every: int = 5) -> list[str]:
    """A trainer's fixed validation names: every ``every``-th name in sorted order (indices every-1, 2·every-1, …)."""
    ordered = sorted(names)
    return [n for i, n in enumerate(ordered) if i % every == every - 1]
