"""What the trainers may learn from: the training pool, the held-out evaluation photos it must never contain, and
the validation split a trainer keeps aside inside its own pool."""

from __future__ import annotations

import hashlib
from pathlib import Path

SHARED = Path(__file__).resolve().parents[3] / "shared"  # <repo>/jobs/research/ → ../shared
DEFAULT_TRAIN = SHARED / "data" / "train"
DEFAULT_HELD_OUT = SHARED / "data" / "photos"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


#: the terms of the training pool's sets (``train/SOURCES.md``): a model card names each set its weights learned
#: from, and the weights inherit their terms
SET_TERMS = {
    "bsds500": "BSDS500 (Berkeley Segmentation Data Set 500, Arbeláez et al., TPAMI 2011): Corel photographs, free "
               "for non-commercial research and teaching",
    "imagenet-sample": "ImageNet (ILSVRC-2012) one-sample-per-class collection: ImageNet terms, non-commercial "
                       "research",
}


def image_sets(names: list[str]) -> list[str]:
    """The sets (top-level folders of the pool) that relative image ``names`` come from."""
    return sorted({n.split("/", 1)[0] for n in names if "/" in n})


def terms_lines(sets: list[str], images: Path) -> str:
    """A card's bullet list of ``sets`` and their terms (unknown sets, or images in no set: see the pool's
    SOURCES.md)."""
    if not sets:
        return f"  - see {images / 'SOURCES.md'} for their terms"
    return "\n".join(f"  - `{s}/`: {SET_TERMS.get(s, 'see ' + str(images / 'SOURCES.md'))}" for s in sets)


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
