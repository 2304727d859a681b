"""The codec's real RD slope against the price ``train-codec``'s rate term puts on bits (docs/training.md).

The rate term weighs bits by λ = 4 ln 2 · MSE_q, the high-rate slope of the RD curve, with MSE_q = Σ_c
min(Δ_c²/12, var_c) · w_c / 192. Where that differs from the real slope −dD/dR, training does not compare at
equal quality: it buys distortion with bits the curve prices higher (or the reverse). This measures both on real
crops: the real slope by coding at the base step ×/÷ ``rel`` (ideal bits under a context entropy model, decoded
MSE), λ from the trainer's own ``high_rate_slope`` with the codec's normalised sensitivity, a constant factor
per crop, so λ / D is comparable across qualities, not in absolute value.

    python -m latentarc.jobs.research.rd_slope --codec tae-f2-ft --entropy-model tae-f2-ft-ctx --crops 8
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Slope:
    quality: float
    step: float
    bpp: float
    real: float  # −dD/dR ÷ D, per bpp
    formula: float  # λ ÷ D, per bpp (up to the crop's constant sensitivity factor)


def measure(model, context_model, rgb: np.ndarray, quality: float, rel: float = 1.1) -> Slope:
    """Both slopes for one (H, W, 3) uint8 crop at ``quality`` (below 0: ``training_step``'s coarser steps)."""
    from latentarc.codec.quantize import choose_params, decoder_sensitivity, dequantize, quantize

    from .train_codec import high_rate_slope, training_step

    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        z = model.encoder(x)[0]
    sens = decoder_sensitivity(model, z)
    pixels = rgb.shape[0] * rgb.shape[1]
    step = training_step(quality)
    points = []
    for s in (step / rel, step * rel):
        qp = choose_params(z.numpy(), s, sens)
        symbols = quantize(z.numpy(), qp)
        with torch.no_grad():
            y = model.decoder(torch.from_numpy(dequantize(symbols, qp))[None]).clamp(0, 1)
        points.append((context_model.ideal_bits(symbols, qp.steps) / pixels, float((y - x).pow(2).mean())))
    (r_fine, d_fine), (r_coarse, d_coarse) = points
    d = (d_fine + d_coarse) / 2
    steps = torch.from_numpy(choose_params(z.numpy(), step, sens).step_values())
    lam = float(high_rate_slope(steps, z.double().var(dim=(1, 2)), torch.from_numpy(sens)))
    return Slope(quality, step, (r_fine + r_coarse) / 2, (d_coarse - d_fine) / (r_fine - r_coarse) / d, lam / d)


def crops(count: int, size: int) -> list[np.ndarray]:
    """Top-left ``size`` crops of every ``len/count``-th training photo (held-out photos refused as ever)."""
    from PIL import Image

    from .training_data import DEFAULT_HELD_OUT, DEFAULT_TRAIN, training_files

    files = training_files(DEFAULT_TRAIN, DEFAULT_HELD_OUT)
    picked = files[:: max(1, len(files) // count)][:count]
    return [np.asarray(Image.open(f).convert("RGB"))[:size, :size] for f in picked]


def main(argv: list[str] | None = None) -> None:
    from latentarc.codec.models import load_model

    from .train_codec import context_coder

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--codec", default="tae-f2-ft")
    p.add_argument("--entropy-model", default="tae-f2-ft-ctx")
    p.add_argument("--crops", type=int, default=8)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--qualities", default="50,30,15,0,-16")
    a = p.parse_args(argv)
    model = load_model(a.codec, device="cpu")
    ctx = context_coder(a.entropy_model).model
    pics = crops(a.crops, a.size)
    reference = None
    for q in (float(v) for v in a.qualities.split(",")):
        rows = [measure(model, ctx, rgb, q) for rgb in pics]
        real, formula = np.median([r.real for r in rows]), np.median([r.formula for r in rows])
        reference = reference or real / formula
        print(f"quality {q:6.1f} (step {rows[0].step:5.2f}): {np.median([r.bpp for r in rows]):.3f} bpp, real "
              f"slope / D {real:.3f}, λ / D {formula:.3f}, real ÷ λ {real / formula / reference:.2f} × the first")


if __name__ == "__main__":
    main()
