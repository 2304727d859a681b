"""``latentarc train-entropy``: train the context entropy model (codec/context_model.py) on a model's latents.

Data: the training pool (IMAGES, default ``../shared/data/train``; the held-out evaluation photos are refused by
path and by content) at full size, encoded once to the latents of ``--codec`` (default tae-f2; a ``train-codec``
folder for stage 3 of codec training) with the codec's per-channel decoder sensitivities (cached, as
``train-refiner`` does). A fixed validation set — every ``--holdout-every``-th file in
name order — is kept out of training and used only for the closing evaluation.

Each training sample is a random latent crop quantized exactly as the encoder does (``choose_params`` with the
image's sensitivities) at a base step drawn log-uniformly over the quality range; the loss is the code length
in bits of the crop's symbols under the model's discrete Laplacian, summed over the ``2·G`` passes with the
features each pass really sees. Adam, ``--steps`` iterations, learning rate dropped ×¼ for the last 30%.

After training the network is converted to integers and the held-out figures are computed *with the integer
model and the integer tables* (the code length the shipped model really achieves), next to the per-channel
model of ``entropy.py`` at the same quantization, hence at the same PSNR.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from latentarc.codec import context_model as cm
from latentarc.codec.neural import quality_to_step

from .training_data import DEFAULT_HELD_OUT, DEFAULT_TRAIN, image_sets, terms_lines

EVAL_QUALITIES = (10, 25, 40, 55, 70, 85)


def quantized(z: np.ndarray, sens: np.ndarray, base: float):
    """(symbols (C,h,w) int64, integer steps (C,), QuantParams) exactly as the encoder makes them."""
    from latentarc.codec.quantize import choose_params, quantize

    qp = choose_params(z, base, sens)
    return quantize(z, qp).astype(np.int64), qp.steps.astype(np.int64), qp


def pass_inputs(cfg: cm.ContextConfig, sym: np.ndarray, steps: np.ndarray):
    """Float inputs (passes, 3C, h, w) and coded masks (passes, C, h, w) for one crop: the integer features / 64."""
    xs, ms = [], []
    for avail, coded in cm.pass_masks(cfg, *sym.shape[1:]):
        xs.append(cm.features(sym, steps, avail))
        ms.append(coded)
    return (torch.from_numpy(np.stack(xs).astype(np.float32)) / (1 << cm.INPUT_BITS),
            torch.from_numpy(np.stack(ms)))


def code_length(net: cm.ContextNet, x, mask, sym, steps) -> torch.Tensor:
    """Bits of ``sym`` (B, C, h, w) under the discrete Laplacian P(r) ∝ θ^|q-μ| with fractional centre."""
    mu_y, log2_b = net(x)
    delta = (steps.float() / 4096.0)[:, :, None, None]
    mu = mu_y / delta
    lam = (1.0 / (torch.exp2(log2_b.clamp(-12, 14)) / delta)).clamp(1e-4, 1e4)
    frac = mu - torch.floor(mu)
    # log(e^{-λf} + e^{-λ(1-f)}) as a log-sum-exp: both terms underflow to 0 for a sharp law (λ ≫ 1), and the
    # naive form turns that into log 0 and NaN gradients
    logp = (-(sym - mu).abs() * lam - torch.logaddexp(-lam * frac, -lam * (1 - frac))
            + torch.log(-torch.expm1(-lam)))
    return -(logp * mask).sum() / math.log(2)


@dataclass(frozen=True)
class EntropyTrainConfig:
    """What ``train-entropy`` trains, on what, for how long (the CLI builds it: :func:`config_from_args`)."""

    out: str
    images: str = str(DEFAULT_TRAIN)
    held_out: str = str(DEFAULT_HELD_OUT)
    codec: str = "tae-f2"  # the model whose latents are coded (a train-codec folder: stage 3)
    limit: int | None = None
    max_side: int | None = None
    holdout_every: int = 5
    cache: str = str(Path.home() / ".cache/latentarc/entropy-latents")
    name: str = "tae-f2-ctx"
    model_id: int = 3
    steps: int = 1500
    batch_size: int = 8
    lr: float = 2e-3
    crop: int = 24  # latents
    groups: int = 4
    hidden: int = 48
    depth: int = 2
    clip: float = 10.0
    seed: int = 0
    weights: str | None = None

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or self.crop < 4:
            raise ValueError("--iterations and --batch-size must be ≥ 1, --crop ≥ 4")


def config_from_args(a) -> EntropyTrainConfig:
    return EntropyTrainConfig(
        out=a.out, images=a.images, held_out=a.held_out, codec=a.codec, limit=a.limit, max_side=a.max_side,
        holdout_every=a.holdout_every, cache=a.cache, name=a.name, model_id=a.model_id, steps=a.steps,
        batch_size=a.batch_size, lr=a.lr, crop=a.crop, groups=a.groups, hidden=a.hidden, depth=a.depth, clip=a.clip,
        seed=a.seed, weights=a.weights)


def photo_latents(paths: list[Path], *, weights: str | None, max_side: int | None, cache: str | Path,
                  device: str | None, root: Path | None = None, codec: str = "tae-f2") -> tuple[dict, str]:
    """({name: (latent, sensitivity)} of ``paths`` encoded by the model ``codec`` (cached in ``cache``; names
    relative to ``root``), the name its streams carry): the data ``train-entropy`` trains on and ``bench-entropy``
    measures."""
    from latentarc.codec.api import load_codec
    from latentarc.jobs.research.latent_cache import encode_latents

    if not paths:
        raise ValueError("no images")
    neural = load_codec(codec, weights=weights, device=device)
    return (encode_latents(paths, neural.model, max_side, Path(cache), probes=neural.probes, root=root),
            neural.model.name)


def train(a: EntropyTrainConfig) -> dict:
    from latentarc.codec.latent_coding import coder
    from latentarc.codec.quantize import choose_params, quantize

    t_start = time.time()
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    from latentarc.jobs.research.training_data import training_files, validation_split

    paths = training_files(a.images, a.held_out)[: a.limit or None]  # refuses the held-out evaluation photos
    latents, latent_model = photo_latents(paths, weights=a.weights, max_side=a.max_side, cache=a.cache,
                                          device="cpu", root=Path(a.images), codec=a.codec)
    hold = set(validation_split(list(latents), a.holdout_every))
    train_names = [n for n in latents if n not in hold]
    cfg = cm.ContextConfig(channels=next(iter(latents.values()))[0].shape[0], groups=a.groups, hidden=a.hidden,
                           depth=a.depth)
    net = cm.ContextNet(cfg)
    opt = torch.optim.Adam(net.parameters(), lr=a.lr)
    lo, hi = math.log(quality_to_step(100)), math.log(quality_to_step(0))
    losses = []
    for it in range(a.steps):
        if it == int(0.7 * a.steps):
            for g in opt.param_groups:
                g["lr"] = a.lr / 4
        xs, ms, ss, st = [], [], [], []
        for _ in range(a.batch_size):
            z, sens = latents[train_names[rng.integers(len(train_names))]]
            qp = choose_params(z, math.exp(rng.uniform(lo, hi)), sens)  # the whole image's steps and means
            h, w = z.shape[1:]
            y0, x0 = rng.integers(0, h - a.crop + 1), rng.integers(0, w - a.crop + 1)
            crop = quantize(z[:, y0 : y0 + a.crop, x0 : x0 + a.crop], qp).astype(np.int64)
            steps = qp.steps.astype(np.int64)
            x, m = pass_inputs(cfg, crop, steps)
            xs.append(x), ms.append(m)
            ss.append(torch.from_numpy(crop).float()[None].expand(cfg.passes, -1, -1, -1))
            st.append(torch.from_numpy(steps)[None].expand(cfg.passes, -1))
        x, m, s, stp = torch.cat(xs), torch.cat(ms), torch.cat(ss), torch.cat(st)
        loss = code_length(net, x, m, s, stp) / (a.batch_size * a.crop * a.crop * 64)  # bits per pixel
        if not torch.isfinite(loss):  # a bad batch must not poison the weights
            continue
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), a.clip)
        opt.step()
        losses.append(loss.item())
        if it % 100 == 0 or it == a.steps - 1:
            print(f"step {it}: {np.mean(losses[-100:]):.4f} bpp (train crops) {time.time() - t_start:.0f} s",
                  flush=True)
    train_seconds = time.time() - t_start

    int_net, tensors = cm.IntegerContextNet.from_float(net)
    model = cm.ContextEntropyModel(a.name, a.model_id, cfg, int_net, latent_model)
    per_channel = coder("per-channel")
    evaluation = []
    for q in EVAL_QUALITIES:
        old = new = px = 0.0
        for name in sorted(hold):
            z, sens = latents[name]
            sym, steps, qp = quantized(z, sens, quality_to_step(q))
            bits, side = per_channel.ideal_bits(sym, qp)  # the channel laws are fitted once, as the encoder does
            old += bits + 8 * side
            new += model.ideal_bits(sym, steps)
            px += z.shape[1] * z.shape[2] * 64
        row = {"quality": q, "per_channel_bpp": old / px, "context_bpp": new / px, "saving": 1 - new / old}
        evaluation.append(row)
        print(f"held-out q{q}: per-channel {row['per_channel_bpp']:.4f} bpp, context {row['context_bpp']:.4f} bpp "
              f"({100 * row['saving']:.1f}% fewer bits)", flush=True)
    info = {
        "data": {"images": a.images, "codec": a.codec, "train": train_names, "held_out": sorted(hold)},
        "training": {"steps": a.steps, "batch_size": a.batch_size, "crop": a.crop, "lr": a.lr, "clip": a.clip,
                     "seed": a.seed,
                     "seconds": round(train_seconds, 1), "first_loss_bpp": float(np.mean(losses[:10])),
                     "final_loss_bpp": float(np.mean(losses[-100:])),
                     "device": "cpu", "torch_threads": torch.get_num_threads()},
        "held_out_evaluation": evaluation,
    }
    model.save(a.out, tensors, {"training": info})
    (Path(a.out) / "CARD.md").write_text(_card(a, cfg, info))
    return info


def _card(a: EntropyTrainConfig, cfg: cm.ContextConfig, info: dict) -> str:
    t, d = info["training"], info["data"]
    rows = "\n".join(f"| {r['quality']} | {r['per_channel_bpp']:.4f} | {r['context_bpp']:.4f} | "
                     f"{100 * r['saving']:.1f}% |" for r in info["held_out_evaluation"])
    sets = terms_lines(image_sets(d["train"]), Path(d["images"]))
    return f"""# {a.name}: context entropy model for {a.codec} latents

Trained by latentarc (`latentarc train-entropy`, MIT code) on photos of `{d['images']}`:
{sets}

The weights inherit these terms.

- **Architecture**: {cfg.groups} channel groups × checkerboard = {cfg.passes} passes; 3×3 conv ({3 * cfg.channels}→{cfg.hidden}),
  {cfg.depth - 1} × 3×3 conv ({cfg.hidden}→{cfg.hidden}), 1×1 conv ({cfg.hidden}→{2 * cfg.channels}), ReLU between;
  discrete Laplacian per symbol.
  Stored as integers (weights × 2^{cm.WEIGHT_BITS}); inference is exact integer arithmetic (codec/context_model.py).
- **Data**: {len(d['train'])} photos of `{Path(d['images']).name}/` at full size, {a.codec} latents with the codec's
  per-channel sensitivities; validation (not trained on): {len(d['held_out'])} images, every {a.holdout_every}th in name
  order ({', '.join(d['held_out'][:4])}, …). The held-out evaluation photos (`{Path(a.held_out).name}/`) were refused.
- **Training**: {t['steps']} steps × batch {t['batch_size']} crops of {t['crop']}×{t['crop']} latents, Adam lr {t['lr']}
  (×¼ for the last 30%), seed {t['seed']}, CPU ({t['torch_threads']} threads), {t['seconds']:.0f} s wall time;
  final training loss {t['final_loss_bpp']:.4f} bpp.

Validation code length, integer model vs the per-channel model (same quantization, so same PSNR):

| quality | per-channel bpp | context bpp | saving |
|---|---|---|---|
{rows}

Reproduce with `latentarc train-entropy --out DIR --name {a.name} --model-id {a.model_id} --iterations {t['steps']}
--batch-size {t['batch_size']} --crop {t['crop']} --lr {t['lr']} --clip {t['clip']} --groups {cfg.groups} --hidden {cfg.hidden}
--depth {cfg.depth} --seed {t['seed']}{_extra_args(a)}`.
"""


def _extra_args(a: EntropyTrainConfig) -> str:
    """The reproduce line's options that are not always given: ``--codec`` and ``--max-side``."""
    return ((f" --codec {a.codec}" if a.codec != "tae-f2" else "")
            + (f" --max-side {a.max_side}" if a.max_side is not None else ""))


def run_train_entropy(a) -> int:
    train(config_from_args(a))
    return 0
