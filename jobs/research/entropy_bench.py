"""``latentarc bench-entropy``: where a context entropy model's bits go, and how much any better law could save.

Why: a context model can only save what the symbols decoded before a symbol say about it. Before training a
larger model, one wants to know where that information runs out. This bench codes the held-out latents (the
same quantization as ``train-entropy``'s evaluation) and reports:

* per pass (channel group × checkerboard phase): the share of the symbols and of the bits, the model's bits per
  symbol and the per-channel model's bits for the very same symbols, so the gain of each kind of context shows;
* the *ideal-law bound*: the code length if every table the model picks (scale index × fractional centre) held
  the exact histogram of the residuals coded with it. It is an oracle fitted to the data it measures, so it is
  a ceiling on what any reshaping of the Laplacian law could save, for the same predictions.

The model is a shipped one by name or a folder written by ``train-entropy`` (a candidate before it ships).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def load_model(spec: str):
    """A context entropy model: a shipped name (``tae-f2-ctx``) or a ``train-entropy`` output folder."""
    from latentarc.codec import context_model as cm
    from latentarc.codec.latent_coding import ContextCoder, coder

    if Path(spec).is_dir():
        return cm.ContextEntropyModel.load(spec)
    found = coder(spec)
    if not isinstance(found, ContextCoder):
        raise ValueError(f"{spec} is not a context entropy model")
    return found.model


class Tally:
    """Accumulates one quality's bits over images."""

    def __init__(self, passes: int):
        self.symbols = np.zeros(passes)
        self.bits = np.zeros(passes)
        self.per_channel = np.zeros(passes)  # per-channel model's bits for the same symbols (side bytes apart)
        self.side_bits = 0.0
        self.pixels = 0
        self.hist: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))

    def add(self, model, symbols: np.ndarray, steps: np.ndarray) -> None:
        from latentarc.codec import entropy as en

        pc = np.zeros(symbols.shape)
        models = [en.fit(s) for s in symbols]
        for c, m in enumerate(models):
            pc[c] = en.symbol_bits(symbols[c], m)
        self.side_bits += 8 * len(en.pack_models(models))
        pc = pc.ravel()
        for k, (idx, r, key, bits) in enumerate(model.symbol_bits(symbols, steps)):
            self.symbols[k] += idx.size
            self.bits[k] += bits.sum()
            self.per_channel[k] += pc[idx].sum()
            for kk in np.unique(key):
                values, counts = np.unique(r[key == kk], return_counts=True)
                h = self.hist[int(kk)]
                for v, n in zip(values.tolist(), counts.tolist()):
                    h[v] += n
        self.pixels += symbols.shape[1] * symbols.shape[2] * 64

    def ideal_law_bits(self) -> float:
        total = 0.0
        for h in self.hist.values():
            n = np.array(list(h.values()), np.float64)
            total += float(-(n * np.log2(n / n.sum())).sum())
        return total

    def summary(self, groups: int) -> dict:
        px, bits = self.pixels, self.bits.sum()
        pc = self.per_channel.sum() + self.side_bits
        ideal = self.ideal_law_bits()
        passes = [{"group": k // 2, "phase": "anchor" if k % 2 == 0 else "rest",
                   "symbol_share": self.symbols[k] / self.symbols.sum(), "bit_share": self.bits[k] / bits,
                   "bits_per_symbol": self.bits[k] / self.symbols[k],
                   "per_channel_bits_per_symbol": self.per_channel[k] / self.symbols[k],
                   "ratio": self.bits[k] / self.per_channel[k] if self.per_channel[k] else None}
                  for k in range(2 * groups)]
        return {"context_bpp": bits / px, "per_channel_bpp": pc / px, "saving": 1 - bits / pc,
                "ideal_law_bpp": ideal / px, "ideal_law_headroom": 1 - ideal / bits, "passes": passes}


@dataclass(frozen=True)
class EntropyBenchConfig:
    """What ``bench-entropy`` measures (the CLI builds it: :func:`config_from_args`)."""

    images: str
    model: str = "tae-f2-ctx"
    codec: str = "tae-f2"  # the model whose latents are coded
    qualities: tuple[float, ...] = (10.0, 40.0, 70.0)
    limit: int | None = None
    max_side: int | None = None
    holdout_every: int = 5
    cache: str = str(Path.home() / ".cache/latentarc/entropy-latents")
    weights: str | None = None
    device: str | None = None
    json_out: str | None = None


def config_from_args(a) -> EntropyBenchConfig:
    from ..bench_inputs import parse_qualities

    return EntropyBenchConfig(images=a.images, model=a.model, codec=a.codec,
                              qualities=tuple(parse_qualities(a.qualities)),
                              limit=a.limit, max_side=a.max_side, holdout_every=a.holdout_every, cache=a.cache,
                              weights=a.weights, device=a.device, json_out=a.json_out)


def run(a: EntropyBenchConfig) -> dict:
    from latentarc.codec.neural import quality_to_step

    from .train_entropy import photo_latents, quantized
    from .training_data import validation_split

    t0 = time.time()
    qualities = list(a.qualities)
    model = load_model(a.model)
    paths = sorted(p for p in Path(a.images).iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    paths = paths[: a.limit or None]
    names = sorted(validation_split([p.name for p in paths], a.holdout_every))
    # only the photos measured are encoded
    latents, _ = photo_latents([p for p in paths if p.name in names], weights=a.weights, max_side=a.max_side,
                               cache=a.cache, device=a.device, codec=a.codec)
    out = {"model": a.model, "codec": a.codec, "images": names, "qualities": {}}
    for q in qualities:
        tally = Tally(model.cfg.passes)
        for name in names:
            z, sens = latents[name]
            symbols, steps, _ = quantized(z, sens, quality_to_step(q))
            tally.add(model, symbols, steps)
        out["qualities"][str(q)] = s = tally.summary(model.cfg.groups)
        print(f"quality {q}: context {s['context_bpp']:.4f} bpp, per-channel {s['per_channel_bpp']:.4f} bpp "
              f"({100 * s['saving']:.1f}% fewer bits); ideal-law bound {s['ideal_law_bpp']:.4f} bpp "
              f"({100 * s['ideal_law_headroom']:.1f}% below the model)")
        print("  pass       symbols   bits  bits/sym  per-channel  ratio")
        for p in s["passes"]:
            ratio = "-" if p["ratio"] is None else f"{p['ratio']:.3f}"
            print(f"  g{p['group']} {p['phase']:<6}  {100 * p['symbol_share']:5.1f}%  {100 * p['bit_share']:5.1f}%"
                  f"  {p['bits_per_symbol']:8.3f}  {p['per_channel_bits_per_symbol']:11.3f}  {ratio}")
    out["seconds"] = round(time.time() - t0, 1)
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(out, indent=2) + "\n")
    return out


def run_entropy_bench(a) -> int:
    run(config_from_args(a))
    return 0
