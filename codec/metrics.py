"""Quality metrics on restored pixels, in the original's bit depth (peak 255 or 65535)."""

from __future__ import annotations

import math

import numpy as np
import torch


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """PSNR in dB; ``inf`` for identical arrays. Peak follows the dtype (uint8: 255, uint16: 65535)."""
    if reference.shape != test.shape:
        raise ValueError(f"shape mismatch {reference.shape} vs {test.shape}")
    peak = 65535.0 if reference.dtype == np.uint16 else 255.0
    mse = float(np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def ms_ssim(reference: np.ndarray, test: np.ndarray) -> float | None:
    """MS-SSIM (pytorch-msssim, 5 scales) on [0, 1] values; falls back to single-scale SSIM for images under
    161 px on the short side (too small for five scales) and returns None below 11 px."""
    from pytorch_msssim import ms_ssim as _ms, ssim as _ss

    def t(a: np.ndarray) -> torch.Tensor:
        peak = 65535.0 if a.dtype == np.uint16 else 255.0
        x = torch.from_numpy(a.astype(np.float32) / peak)
        return (x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[None]).double()

    short = min(reference.shape[:2])
    if short < 11:
        return None
    a, b = t(reference), t(test)
    if short < 161:
        return float(_ss(a, b, data_range=1.0))
    return float(_ms(a, b, data_range=1.0))


def gradient_energy(planes: np.ndarray) -> float:
    """Mean squared finite difference of the luma (or the single plane) on a [0, 1] scale: how much fine
    detail an image carries. Needs no reference, so it measures what a generative decoder *adds*."""
    peak = 65535.0 if planes.dtype == np.uint16 else 255.0
    x = planes.astype(np.float64) / peak
    if x.ndim == 3:
        x = x[..., :3] @ np.array([0.299, 0.587, 0.114])[: x.shape[2]] if x.shape[2] >= 3 else x.mean(axis=2)
    if min(x.shape) < 2:
        return 0.0
    return float(np.mean(np.diff(x, axis=0) ** 2) + np.mean(np.diff(x, axis=1) ** 2))


def sharpness_ratio(reference: np.ndarray, test: np.ndarray) -> float | None:
    """Gradient energy of ``test`` relative to ``reference``: 1 = as sharp as the original, below 1 = blurred,
    above 1 = more (possibly invented) texture. None for a flat reference."""
    ref = gradient_energy(reference)
    return gradient_energy(test) / ref if ref > 0 else None
