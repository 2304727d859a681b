"""Adaptive per-channel quantization of autoencoder latents.

Why per channel: the decoder is far more sensitive to some latent channels than to others, and the image's own
latent decides how much (the decoder's input clamp saturates large values, textures excite other channels
than flat skies). For MSE in pixel space, the high-rate optimum of ``D + λR`` gives every channel the same
distortion contribution ``w_c Δ_c² / 12``, i.e. ``Δ_c ∝ 1 / √w_c`` where ``w_c`` is the channel's mean
squared decoder Jacobian norm. We measure ``w_c`` *on this image's latent* with Hutchinson's estimator —
``w = E_v[(Jᵀv)²]`` for Rademacher ``v`` in image space — which needs one backward pass per probe for all
channels at once. Each channel is centred on its own mean, so its symbols are zero-centred for the entropy
model, and channels whose spread is below half a step quantize to zero and cost nothing (reverse water-filling
by construction).

Steps and means are carried as integers (units of 2⁻¹²), so dequantization on any machine computes the same
float32 latent.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import torch

from .autoencoder import LatentAutoencoder
from .errors import CorruptStream

FIXED_POINT = 1 << 12  # latent values and steps are carried in units of 1/4096
MIN_STEP, MAX_STEP = 1, 65535  # in fixed-point units: 0.00024 … 16.0


@dataclass(frozen=True)
class QuantParams:
    steps: np.ndarray  # uint16 (C,), fixed point
    means: np.ndarray  # int16 (C,), fixed point

    @property
    def channels(self) -> int:
        return int(self.steps.size)

    def pack(self) -> bytes:
        return struct.pack("<H", self.channels) + self.steps.astype("<u2").tobytes() + self.means.astype("<i2").tobytes()

    @classmethod
    def unpack(cls, data: bytes) -> tuple["QuantParams", bytes]:
        """Parse from the front of ``data``; return the params and the bytes after them."""
        if len(data) < 2:
            raise CorruptStream("quantization parameters are truncated")
        (c,) = struct.unpack_from("<H", data)
        end = 2 + 4 * c
        if c == 0 or len(data) < end:
            raise CorruptStream("quantization parameters are truncated or empty")
        steps = np.frombuffer(data, "<u2", c, 2).astype(np.uint16)
        means = np.frombuffer(data, "<i2", c, 2 + 2 * c).astype(np.int16)
        if (steps < MIN_STEP).any():
            raise CorruptStream("quantization step of zero")
        return cls(steps, means), data[end:]

    def step_values(self) -> np.ndarray:
        return self.steps.astype(np.float64) / FIXED_POINT


def decoder_sensitivity(
    model: LatentAutoencoder, latent: torch.Tensor, *, crop: int = 32, probes: int = 2, seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> np.ndarray:
    """Mean squared decoder Jacobian norm per latent channel, normalised to geometric mean 1.

    Measured on a centred ``crop``×``crop`` window of the image's latent (``latent``: (C, h, w)) to bound the
    cost to one small forward and ``probes`` backward passes, whatever the image size. ``dtype``: float32 or one
    of the model's ``fast_dtypes`` for the passes (an estimate that only sets the steps the stream carries).
    """
    c, h, w = latent.shape
    y0, x0 = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
    z = latent[:, y0 : y0 + crop, x0 : x0 + crop][None].detach().clone().requires_grad_(True)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    with torch.enable_grad():
        out = model.decode_unclamped(z, dtype=dtype)
        acc = torch.zeros(c, dtype=torch.float64)
        for i in range(probes):
            v = (torch.randint(0, 2, out.shape, generator=gen) * 2 - 1).to(out.dtype).to(out.device)
            (g,) = torch.autograd.grad(out, z, v, retain_graph=i < probes - 1)
            acc += g[0].double().pow(2).mean(dim=(1, 2)).cpu()
    sens = (acc / probes).clamp_min(1e-12).numpy()
    return sens / np.exp(np.log(sens).mean())


def choose_params(latent: np.ndarray, base_step: float, sensitivity: np.ndarray, spread: float = 4.0) -> QuantParams:
    """Steps ``Δ_c = base · w_c^{-1/2}`` (clipped to ×/÷ ``spread`` around ``base``) and channel means."""
    rel = np.clip(1.0 / np.sqrt(sensitivity), 1.0 / spread, spread)
    steps = np.clip(np.round(base_step * rel * FIXED_POINT), MIN_STEP, MAX_STEP).astype(np.uint16)
    means = np.clip(np.round(latent.reshape(latent.shape[0], -1).mean(axis=1) * FIXED_POINT), -32768, 32767)
    return QuantParams(steps, means.astype(np.int16))


def uniform_params(latent: np.ndarray, base_step: float) -> QuantParams:
    """One global step for every channel — the baseline the adaptive quantizer is measured against."""
    return choose_params(latent, base_step, np.ones(latent.shape[0]), spread=1.0)


def centred(latent: np.ndarray, params: QuantParams) -> np.ndarray:
    """(C, h, w) float latent → float64 in step units, centred per channel: what rounding (plain or
    RD-optimised) turns into symbols."""
    mu = params.means.astype(np.float64)[:, None, None] / FIXED_POINT
    return (latent.astype(np.float64) - mu) / params.step_values()[:, None, None]


def quantize(latent: np.ndarray, params: QuantParams) -> np.ndarray:
    """(C, h, w) float latent → int32 symbols, centred per channel."""
    return np.rint(centred(latent, params)).astype(np.int32)


def dequantize(symbols: np.ndarray, params: QuantParams) -> np.ndarray:
    """Symbols → float32 latent, computed in float64 from integers so every machine agrees."""
    mu = params.means.astype(np.float64)[:, None, None] / FIXED_POINT
    step = params.step_values()[:, None, None]
    return (mu + symbols.astype(np.float64) * step).astype(np.float32)
