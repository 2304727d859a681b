"""Shared fixtures: the real weights from ../shared/models and real photos from ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("LATENTARC_SHARED", REPO.parent / "shared"))
MODELS = SHARED / "models"
PHOTOS = SHARED / "data" / "photos"
EDGE = SHARED / "data" / "edge"


@pytest.fixture(scope="session", autouse=True)
def _model_dir():
    """Point weight resolution at the shared weights and forbid downloads (no hub access here)."""
    if not (MODELS / "taef2_decoder.pth").exists():
        pytest.exit(f"weights not found under {MODELS}; set LATENTARC_SHARED", returncode=2)
    old = {k: os.environ.get(k) for k in ("LATENTARC_MODEL_DIR", "LATENTARC_OFFLINE")}
    os.environ["LATENTARC_MODEL_DIR"] = str(MODELS)
    os.environ["LATENTARC_OFFLINE"] = "1"
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def codec():
    from latentarc.codec.api import load_codec

    return load_codec("tae-f2", device="cpu")


@pytest.fixture(scope="session")
def global_codec():
    from latentarc.codec.api import load_codec

    return load_codec("tae-f2", device="cpu", adaptive=False)


def photo_crop(index: int, size: int = 128):
    """A centre crop of a real photo as a Picture (crops keep the tests fast on 2 CPU cores)."""
    from latentarc.codec.images import Picture, read_image

    pic = read_image(sorted(PHOTOS.glob("*.png"))[index].read_bytes())
    h, w = pic.rgb.shape[:2]
    y, x = (h - size) // 2, (w - size) // 2
    return Picture(np.ascontiguousarray(pic.rgb[y : y + size, x : x + size]), None, pic.mode)


@pytest.fixture
def small_pic():
    return photo_crop(0, 96)
