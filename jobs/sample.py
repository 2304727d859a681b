"""Generated sample pictures for ``latentarc demo``: no file to ship, no licence to track, same pixels everywhere."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw


def sample_image(width: int = 512, height: int = 384, seed: int = 7) -> Image.Image:
    """Smooth sky-like gradient, hard-edged shapes, fine texture and small text: the content a codec must
    handle, in one deterministic picture. ``seed`` moves the shapes and tints the scene, so a few seeds make
    a small collection of different pictures."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    tint = rng.uniform(-25, 25, 3)
    horizon = height * rng.uniform(0.55, 0.7)
    sky = np.stack([90 + 80 * yy / height, 140 + 60 * yy / height, 230 - 40 * yy / height], axis=-1) + tint
    ground = yy[..., None] > horizon
    grass = np.stack([60 + 30 * np.sin(xx / 7), 120 + 25 * np.sin(yy / 3 + xx / 11), 50 + 0 * xx], axis=-1)
    img = np.where(ground, grass - tint, sky) + rng.normal(0, 4, (height, width, 3))
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(im)
    sx, sy = rng.uniform(0.1, 0.8) * width, rng.uniform(0.05, 0.2) * height
    d.ellipse((sx, sy, sx + width * 0.16, sy + height * 0.22), fill=(250, 220, 120))
    peak = rng.uniform(0.15, 0.5) * width
    d.polygon([(peak - 130, int(horizon)), (peak, 90), (peak + 130, int(horizon))], fill=(110, 100, 120))
    bx, by = int(rng.uniform(0.05, 0.7) * width), int(horizon) - 130
    d.rectangle((bx, by, bx + 140, by + 130), fill=(180, 60, 50), outline=(30, 20, 20), width=3)
    for i in range(6):
        d.line((bx, by + 15 + 20 * i, bx + 140, by + 15 + 20 * i), fill=(120, 40, 35), width=2)
    d.text((20, height - 30), f"latentarc demo {seed:04d}", fill=(255, 255, 255))
    return im
