"""A generated sample image for ``latentarc demo``: no file to ship, no licence to track, same pixels everywhere."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw


def sample_image(width: int = 512, height: int = 384, seed: int = 7) -> Image.Image:
    """Smooth sky-like gradient, hard-edged shapes, fine texture and small text: the content a codec must
    handle, in one deterministic picture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    sky = np.stack([90 + 80 * yy / height, 140 + 60 * yy / height, 230 - 40 * yy / height], axis=-1)
    ground = yy[..., None] > height * 0.62
    grass = np.stack([60 + 30 * np.sin(xx / 7), 120 + 25 * np.sin(yy / 3 + xx / 11), 50 + 0 * xx], axis=-1)
    img = np.where(ground, grass, sky) + rng.normal(0, 4, (height, width, 3))
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(im)
    d.ellipse((width * 0.70, height * 0.08, width * 0.86, height * 0.30), fill=(250, 220, 120))
    d.polygon([(40, int(height * 0.62)), (170, 90), (300, int(height * 0.62))], fill=(110, 100, 120))
    d.rectangle((330, 170, 470, 300), fill=(180, 60, 50), outline=(30, 20, 20), width=3)
    for i in range(6):
        d.line((330, 185 + 20 * i, 470, 185 + 20 * i), fill=(120, 40, 35), width=2)
    d.text((20, height - 30), "latentarc demo 0123456789", fill=(255, 255, 255))
    return im
