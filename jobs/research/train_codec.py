"""``latentarc train-codec``: fine-tune the tae-f2 encoder for the FROZEN tae-f2 decoder (amortised latent search).

Why: the tiny encoder is only an approximate inverse of its decoder, and the per-image latent search
(``codec/latent_search.py``) shows the same decoder renders other latents several dB closer to the photo. A
trained encoder moves that search into its weights: the same gain at no encode-time cost, and since the decoder
is unchanged every stream still decodes with ``tae-f2`` (``codec/encoders.py``). ``--train-decoder`` trains the
decoder too (stage 2: a model of its own); a stage-2 ``--init`` without it trains the encoder for that model's
decoder, frozen (:func:`parent_decoder`), which keeps its fingerprint.

Objective, per example i (a random crop at a quality drawn uniformly over ``--quality-range``)::

    L_i = (D_i + λ_i · R_i) / sg(D_i)          D_i = MSE(x, Dec(Q̃(Enc(x))))   R_i = bits per pixel

* Q̃ is the codec's adaptive quantization: per-channel steps ``Δ_c = base · clip(w_c^{-1/2}, ¼, 4)`` in the
  codec's fixed point, ``w_c`` the decoder's mean squared Jacobian norm measured on the example's own latent
  (Hutchinson, as ``codec/quantize.py``), channels centred on their mean. The decoder sees the real rounded
  latent with a straight-through gradient (``--proxy ste``) or additive uniform noise (``--proxy noise``).
* R is the code length of the rounded latent, the symbols the stream codes, with a straight-through gradient
  (``--rate-proxy ste``, default), or of the noisy one (``noise``: u + U(−½, ½) in step units, priced by the
  Laplacian's mass on [u − ½, u + ½]), under a context entropy model
  (``--rate-model NAME``: its 8 passes, the float twin of the integer network, frozen; ``tae-f2-ctx`` by default,
  the model a stage-3 run retrained for this encoder's latents once there is one) or a per-channel Laplacian
  (``--rate-model laplace``).
* λ_i = ``--rate-weight`` · the slope −dD/dR of the codec's own RD curve at that step: a change of the encoder
  that saves bits for less distortion than the curve's own trade is a gain at every quality. ``--rate-slope
  formula`` (default) takes the high-rate slope 4 ln 2 · MSE_q,i (MSE_q,i = Σ_c min(Δ_c²/12, var_c) · w_c / 192,
  the quantization noise the decoder Jacobian predicts); it tracks the real slope at qualities 30 to 50 and
  underprices bits at coarser steps (median over 8 training crops: 2× at quality 15, 5× at 0, 26× at −16).
  ``measured`` codes each example again at its steps × 1.25 (no gradient) and takes the secant −ΔD/ΔR, floored at
  ¼ of the formula (a crop whose distortion does not move); ``objective`` counts the perceptual term's change in
  ΔD too, so a move along the curve leaves the whole loss unchanged (:class:`PerceptualSlope`).
* Dividing by sg(D_i) makes the gradient that of Σ ln D_i (mean PSNR): the MSE at quality 0 is ~50× that at
  100, and unnormalised the low qualities alone would steer the encoder.

``--range-weight W`` (default 1) adds W · mean(relu(|z| − 3)²): without it the first run (175 steps) pushed
whole channels far into the decoder's input clamp (3·tanh(z/3); latent std 0.8 → 3.8, 21% of values beyond ±3).
Such a channel's measured sensitivity collapses, the geometric-mean normalisation of the steps then gives every
other channel a finer step, and "the same quality" came out at 1.2–2× the bits with a 1.1 dB lower ceiling — a
move along the RD curve that the objective, which compares at equal quality, rewarded. The stock encoder keeps
99.9% of its values within ±3.

``--lpips-weight W`` adds W · LPIPS(x, x̂) (``codec.metrics.lpips_loss``, the metric itself, differentiable);
with ``--lpips-form log`` it adds W · LPIPS_i / sg(LPIPS_i) instead, whose gradient is that of W · ln LPIPS_i: the
perceptual term then prices a relative change of LPIPS like the distortion term prices one of MSE (W = 1: 1% less
LPIPS is worth 1% less MSE), which is how BD-rate on the LPIPS axis (−10·log10 LPIPS) counts it. The linear form
at W = 1 valued 0.01 of LPIPS like 1% of MSE, and the stage-2 run it trained bought PSNR with blur
(docs/training.md).

Data: random crops of the training photos (``../shared/data/train``) after a random rescale by a factor in
``--scale-range`` (default 0.5–1, a downscale, which also hides their JPEG artefacts; above 1, an upscale: the
smooth content of large photos) and a random flip. Held-out photos (``../shared/data/photos``) are refused, by
path and by content hash. Checkpoints (``checkpoint.pt``: encoder, optimiser, RNG states, history) are written
every ``--save-every`` steps or ``--save-minutes``, and on exit or SIGTERM; rerunning with the same ``--out``
resumes, ``--steps`` being the total to reach. A finished run exports ``encoder.safetensors``, ``config.json``
and ``CARD.md`` with held-out figures (:func:`evaluate`).
"""

from __future__ import annotations

import copy
import json
import math
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from latentarc.codec.neural import STEP_COARSEST, quality_to_step
from latentarc.codec.precision import native_bfloat16
from latentarc.codec.quantize import FIXED_POINT, MAX_STEP, MIN_STEP
from latentarc.codec.spec import ENCODER_PRECISIONS
from latentarc.jobs.research.checkpoints import lineage, load_checkpoint, restore_rng, rng_state, save_checkpoint
from latentarc.jobs.research.training_data import (DEFAULT_HELD_OUT, DEFAULT_TRAIN, image_files, image_sets,
                                                   sha256_file, terms_lines, training_files)

LAPLACE_RATE = "laplace"  # --rate-model: a per-channel Laplacian; any other value names a context model
PROXIES = ("ste", "noise")
#: --rate-slope: how λ's slope is found per example (:func:`high_rate_slope`, :func:`measured_slope`)
RATE_SLOPES = ("formula", "measured", "objective")
RATE_PROXY_TEXT = {"ste": "rounded latent (the symbols coded)", "noise": "noisy latent"}
#: --rate-slope measured: the secant between an example's steps and its steps × this
SLOPE_REL = 1.25
#: ... floored at this share of the formula's slope (a crop whose distortion does not move)
SLOPE_FLOOR = 0.25
SLOPE_TEXT = {"formula": "high-rate RD slope",
              "measured": f"RD slope measured per example (secant to steps × {SLOPE_REL})",
              "objective": "slope of the whole distortion objective (MSE and perceptual term), measured per example "
                           f"(secant to steps × {SLOPE_REL})"}
LPIPS_FORMS = ("linear", "log")
EVAL_QUALITIES = (10, 40, 70)
EVAL_ENTROPY_MODELS = ("per-channel", "tae-f2-ctx")
#: the decoder's input clamp is 3·tanh(z/3): beyond this the decoder barely sees a latent (``--range-weight``)
LATENT_RANGE = 3.0
#: pixel values per latent position (8×8 pixels × 3 colours): turns Σ_c σ_c² w_c into a pixel MSE
_VALUES_PER_LATENT = 3 * 64


@dataclass(frozen=True)
class TrainConfig:
    out: str
    images: str = str(DEFAULT_TRAIN)
    held_out: str = str(DEFAULT_HELD_OUT)
    steps: int = 2000  # total to reach (a resumed run continues to it)
    batch: int = 4
    accumulate: int = 1  # micro-batches of ``batch`` per optimiser step: an effective batch of batch × accumulate
    crop: int = 256  # pixels, a multiple of 8
    lr: float = 1e-4
    warmup: int = 50
    quality_range: tuple[float, float] = (0.0, 100.0)
    scale_range: tuple[float, float] = (0.5, 1.0)  # training photos rescaled by a factor drawn here (CropSampler)
    rate_model: str = "tae-f2-ctx"
    rate_weight: float = 1.0
    rate_slope: str = "formula"
    rate_proxy: str = "ste"
    proxy: str = "ste"
    lpips_weight: float = 0.0
    lpips_form: str = "linear"  # "log": W · LPIPS / sg(LPIPS), normalised like the distortion term
    range_weight: float = 1.0
    sens_probes: int = 1
    sens_window: int = 16  # latents
    save_every: int = 50
    save_minutes: float = 10.0
    max_minutes: float | None = None  # end this chunk after M minutes of training, then evaluate and export
    train_decoder: bool = False  # stage 2: the decoder trains too, and the result is a model of its own
    init: str | None = None  # a train-codec folder to start from (when --out has no checkpoint yet)
    decoder_lr: float | None = None  # None: lr
    cache_mb: float = 2048.0  # decoded training photos kept in memory (CropSampler)
    log_every: int = 10
    seed: int = 0
    device: str | None = None
    threads: int | None = None
    precision: str = "float32"  # bfloat16: autocast the networks where the device computes it natively
    weights: str | None = None
    eval_photos: int = 3
    eval_crop: int = 512
    eval_qualities: tuple[int, ...] = EVAL_QUALITIES
    name: str | None = None  # None: tae-f2-le, or tae-f2-ft with a decoder of its own (trained or frozen)

    def __post_init__(self):
        if self.crop % 8 or self.crop < 64:
            raise ValueError(f"--crop must be a multiple of 8 and at least 64, got {self.crop}")
        if self.batch < 1 or self.accumulate < 1 or self.steps < 0:
            raise ValueError("--batch and --accumulate must be ≥ 1 and --steps ≥ 0")
        lo, hi = self.quality_range
        if not MIN_TRAIN_QUALITY <= lo <= hi <= 100:
            raise ValueError(f"--quality-range must lie in [{MIN_TRAIN_QUALITY}, 100], got {lo},{hi}")
        lo, hi = self.scale_range
        if not 0.25 <= lo <= hi <= 2.0:
            raise ValueError(f"--scale-range must lie in [0.25, 2], got {lo},{hi}")
        if self.rate_model != LAPLACE_RATE:
            context_coder(self.rate_model)  # ValueError now rather than at the first step
        if self.rate_slope not in RATE_SLOPES:
            raise ValueError(f"--rate-slope must be one of {', '.join(RATE_SLOPES)}")
        if self.proxy not in PROXIES or self.rate_proxy not in PROXIES:
            raise ValueError(f"--proxy and --rate-proxy must be one of {', '.join(PROXIES)}")
        if self.lpips_form not in LPIPS_FORMS:
            raise ValueError(f"--lpips-form must be one of {', '.join(LPIPS_FORMS)}")
        if self.precision not in ENCODER_PRECISIONS:  # the networks' arithmetic: the encoder's choices
            raise ValueError(f"--precision must be one of {', '.join(ENCODER_PRECISIONS)}")
        if min(self.rate_weight, self.lpips_weight, self.range_weight) < 0:
            raise ValueError("--rate-weight, --lpips-weight and --range-weight must be ≥ 0")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"--max-minutes must be > 0, got {self.max_minutes}")


@dataclass
class TrainResult:
    out: Path
    step: int
    seconds: float  # training wall time over all chunks
    history: list[dict] = field(default_factory=list)  # one row per --log-every steps
    evaluation: dict | None = None
    init: dict | None = None  # the --init folder this run started from (``start_from``), with its own lineage


# ------------------------------------------------------------------ data
class CropSampler:
    """Random ``crop``×``crop`` RGB crops: a random training file, rescaled by a random factor in ``scale`` (default
    [0.5, 1]: downscaled, which also hides JPEG artefacts; no smaller than the crop allows; above 1 upscaled, which
    gives the smooth, band-limited content of large photos), a random window and a random horizontal flip.

    Decoded photos are kept in memory up to ``cache_mb`` (then later ones are decoded on each draw): on a GPU the
    JPEG decoding of every draw, not the network, would set the pace. The crops do not depend on the cache."""

    def __init__(self, files: list[Path], crop: int, rng: np.random.Generator, cache_mb: float = 0.0,
                 scale: tuple[float, float] = (0.5, 1.0)):
        self.files, self.crop, self.rng, self.scale = files, crop, rng, scale
        self._cache: dict[int, np.ndarray] = {}
        self._cache_left = int(cache_mb * 2**20)

    def _photo(self, i: int):
        from PIL import Image

        rgb = self._cache.get(i)
        if rgb is None:
            with Image.open(self.files[i]) as im:
                rgb = np.asarray(im.convert("RGB"))
            if rgb.nbytes <= self._cache_left:
                self._cache[i], self._cache_left = rgb, self._cache_left - rgb.nbytes
        return Image.fromarray(rgb)

    def sample(self) -> np.ndarray:
        from PIL import Image

        for _ in range(100):
            im = self._photo(int(self.rng.integers(len(self.files))))
            w, h = im.size
            lo, hi = max(self.scale[0], self.crop / min(w, h)), self.scale[1]
            if lo > hi:
                continue  # smaller than the crop even at the largest scale
            s = self.rng.uniform(lo, hi)
            size = (max(self.crop, round(w * s)), max(self.crop, round(h * s)))
            if size != (w, h):
                im = im.resize(size, Image.BICUBIC, reducing_gap=3.0)
            x0 = self.rng.integers(0, size[0] - self.crop + 1)
            y0 = self.rng.integers(0, size[1] - self.crop + 1)
            rgb = np.asarray(im.crop((x0, y0, x0 + self.crop, y0 + self.crop)))
            return rgb[:, ::-1] if self.rng.random() < 0.5 else rgb
        raise ValueError(f"no training image is at least {self.crop} px on its short side at scale {self.scale[1]:g}")

    def batch(self, n: int, device) -> torch.Tensor:
        x = np.stack([self.sample() for _ in range(n)]).astype(np.float32) / 255.0
        return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous().to(device)


# ------------------------------------------------------------------ the codec's quantization, differentiable
def channel_sensitivity(decoder: torch.nn.Module, z: torch.Tensor, probes: int, gen: torch.Generator,
                        window: int = 16) -> torch.Tensor:
    """(B, C) mean squared decoder Jacobian norm per channel of each example, *not* normalised: Hutchinson's
    estimator as ``codec.quantize.decoder_sensitivity`` (clamped decoder output, Rademacher probes), on a centred
    ``window``×``window`` latent window (the codec uses 32 on the whole image; 16 costs a quarter and a decoder
    pass through it is a third of a training step's cost at 32)."""
    h, w = z.shape[2:]
    y0, x0 = max(0, (h - window) // 2), max(0, (w - window) // 2)
    z = z.detach()[:, :, y0 : y0 + window, x0 : x0 + window].requires_grad_(True)
    with torch.enable_grad():
        out = decoder(z).clamp(0, 1)
        acc = torch.zeros(z.shape[:2], dtype=torch.float64, device=z.device)
        for i in range(probes):
            v = (torch.randint(0, 2, out.shape, generator=gen) * 2 - 1).to(out)
            (g,) = torch.autograd.grad(out, z, v, retain_graph=i < probes - 1)
            acc += g.double().pow(2).mean(dim=(2, 3))
    return (acc / probes).clamp_min(1e-12)


def adaptive_steps(sens: torch.Tensor, base: torch.Tensor, spread: float = 4.0) -> torch.Tensor:
    """(B, C) steps as ``codec.quantize.choose_params`` makes them: sensitivities normalised to geometric mean
    1, ``base · clip(w^{-1/2}, 1/spread, spread)``, rounded to the stream's fixed point."""
    rel = (sens / torch.exp(torch.log(sens).mean(dim=1, keepdim=True))).rsqrt().clamp(1 / spread, spread)
    fixed = torch.round(base[:, None].double() * rel * FIXED_POINT).clamp(MIN_STEP, MAX_STEP)
    return (fixed / FIXED_POINT).float()


def channel_means(z: torch.Tensor) -> torch.Tensor:
    """(B, C) channel means in the stream's fixed point (the codec centres each channel on its mean)."""
    return torch.round(z.detach().mean(dim=(2, 3)) * FIXED_POINT) / FIXED_POINT


# ------------------------------------------------------------------ qualities
#: the lowest ``--quality-range``: qualities below 0 stand for the coarser base steps that rate control
#: (``--target-bpp``, ``--max-bpp``) reaches beyond the quality knob, the step doubling every 17.5 points down as on
#: the knob, up to the rate control's coarsest step; a model never trained there serves its lowest rates untrained
MIN_TRAIN_QUALITY = math.floor(-17.5 * math.log2(STEP_COARSEST / quality_to_step(0.0)))


def training_step(quality: float) -> float:
    """The base step an example drawn at ``quality`` is trained at: the codec's own for 0–100, below 0 the step
    doubling every 17.5 points further, clipped to ``STEP_COARSEST``."""
    if quality >= 0:
        return quality_to_step(quality)
    return min(STEP_COARSEST, quality_to_step(0.0) * 2.0 ** (-quality / 17.5))


# ------------------------------------------------------------------ rate models
def _discrete_laplace_bits(u: torch.Tensor, mu: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """Bits of integer ``u`` (step units) under P(r) ∝ exp(−λ|r − μ|) on the integers, fractional centre — the law
    of ``codec/laplace_tables.py`` and ``train_entropy.code_length``. Off the integers it is no likelihood: a
    narrow law charges a noisy 0.4 λ·0.4 nats, where rounding would cost next to nothing."""
    frac = mu - torch.floor(mu)
    logp = (-(u - mu).abs() * lam - torch.logaddexp(-lam * frac, -lam * (1 - frac))
            + torch.log(-torch.expm1(-lam)))
    return -logp / math.log(2)


def _interval_laplace_bits(u: torch.Tensor, mu: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """Bits of a noisy ``u`` (step units): −log₂ of the continuous Laplacian(μ, 1/λ)'s mass on [u − ½, u + ½], the
    density of (rounded value + uniform noise) that the noise proxy prices (Ballé et al.)."""
    hi, lo = u + 0.5 - mu, u - 0.5 - mu
    tail = torch.log(-torch.expm1(-lam)) + math.log(0.5)  # both ends on one side of μ: ½e^{−λ·near}(1 − e^{−λ})
    core = 1 - 0.5 * torch.exp(-lam * hi.clamp_min(0)) - 0.5 * torch.exp(lam * lo.clamp_max(0))
    logp = torch.where(lo >= 0, tail - lam * lo,
                       torch.where(hi <= 0, tail + lam * hi, torch.log(core.clamp_min(1e-30))))
    return -logp / math.log(2)


#: --rate-proxy: what the rate term codes (:func:`rate_input`) and the law it is priced under
RATE_LAWS = {"ste": _discrete_laplace_bits, "noise": _interval_laplace_bits}


class ContextRate(torch.nn.Module):
    """Code length under a context entropy model by name (``tae-f2-ctx``, ``tae-f2-ft-ctx``, ``ctx:<folder>``): the
    float twin of its integer network (weights / 2¹², biases / 2¹⁸), frozen, run over its 2·G passes on the coded
    latent (:func:`rate_input`). Training against the model the streams will be coded with prices the bits the
    codec will spend."""

    def __init__(self, name: str = "tae-f2-ctx", proxy: str = "ste"):
        from latentarc.codec import context_model as cm

        super().__init__()
        self.law = RATE_LAWS[proxy]
        shipped = context_coder(name).model
        self.cfg = shipped.cfg
        self.net = cm.ContextNet(self.cfg)
        scale = float(1 << cm.WEIGHT_BITS)
        with torch.no_grad():
            for conv, w, b in zip(self.net.convs(), shipped.net.w, shipped.net.b):
                conv.weight.copy_(w / scale)
                conv.bias.copy_(b / (scale * (1 << cm.INPUT_BITS)))
        self.net.requires_grad_(False)
        self.masks = cm.pass_masks

    def forward(self, u: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """(B,) bits of ``u`` (B, C, h, w) in step units with per-channel ``steps`` (B, C)."""
        b, c, h, w = u.shape
        delta = steps[:, :, None, None]
        y = u * delta  # centred latent units, what the network sees of decoded symbols
        log2d = torch.log2(delta).expand(b, c, h, w)
        xs, coded = [], []
        for avail, code in self.masks(self.cfg, h, w):
            a = torch.from_numpy(np.array(avail, np.float32)).to(u)[None].expand(b, -1, -1, -1)
            xs.append(torch.cat([y * a, a, log2d], 1))
            coded.append(torch.from_numpy(np.array(code, np.float32)).to(u)[None].expand(b, -1, -1, -1))
        mu_y, log2_b = self.net(torch.cat(xs))  # all passes in one batch: (P·B, C, h, w)
        passes = len(xs)
        d = delta.repeat(passes, 1, 1, 1)
        lam = (d / torch.exp2(log2_b.clamp(-12, 14))).clamp(1e-4, 1e4)
        bits = self.law(u.repeat(passes, 1, 1, 1), mu_y / d, lam) * torch.cat(coded)
        return bits.reshape(passes, b, -1).sum(dim=(0, 2))


class LaplaceRate(torch.nn.Module):
    """Code length under one zero-centred discrete Laplacian per channel and example, its scale the (detached)
    mean |u| — a stand-in for the per-channel model of ``codec/entropy.py``."""

    def __init__(self, proxy: str = "ste"):
        super().__init__()
        self.law = RATE_LAWS[proxy]

    def forward(self, u: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        lam = 1.0 / u.detach().abs().mean(dim=(2, 3), keepdim=True).clamp_min(0.05)
        return self.law(u, torch.zeros_like(u), lam.expand_as(u)).sum(dim=(1, 2, 3))


def context_coder(name: str):
    """The context entropy model ``name`` names (the entropy-model registry: shipped names and ``ctx:<folder>``);
    ``ValueError`` for an unknown name or one that is not a context model (per-channel has no network to train
    against: ``--rate-model laplace`` stands in for it)."""
    from latentarc.codec.latent_coding import ContextCoder, coder

    c = coder(name)
    if not isinstance(c, ContextCoder):
        raise ValueError(f"--rate-model {name}: not a context entropy model; use {LAPLACE_RATE} for a per-channel "
                         "stand-in")
    return c


def rate_model(name: str, proxy: str = "ste") -> torch.nn.Module:
    """``--rate-model``: :data:`LAPLACE_RATE` or a context entropy model's name (:class:`ContextRate`), pricing
    ``--rate-proxy``'s input (:func:`rate_input`) under that proxy's law (:data:`RATE_LAWS`)."""
    return LaplaceRate(proxy) if name == LAPLACE_RATE else ContextRate(name, proxy)


def rate_input(u: torch.Tensor, eps: torch.Tensor | None, proxy: str) -> torch.Tensor:
    """What the rate term codes of ``u`` (step units): ``ste``, the symbols the coder writes (rounded, gradient
    straight through), so the term charges what the stream will spend; ``noise``, ``u`` + the uniform ``eps``."""
    return u + (torch.round(u) - u).detach() if proxy == "ste" else u + eps


def lpips_loss(weight: float):
    """The differentiable LPIPS (``codec.metrics.lpips_loss``: two (N, 3, H, W) images in [0, 1] → (N,)) when
    ``weight`` > 0, else None."""
    if not weight:
        return None
    from latentarc.codec.metrics import lpips_loss as loss

    return loss


def high_rate_slope(steps: torch.Tensor, latent_var: torch.Tensor, sens: torch.Tensor) -> torch.Tensor:
    """λ per unit of ``--rate-weight``: 4 ln 2 · MSE_q, MSE_q = Σ_c min(Δ_c²/12, var_c) · w_c / 192, the high-rate
    slope −dD/dbpp of the codec's RD curve at per-channel ``steps`` (the last axis is the channel's)."""
    mse_q = (torch.minimum(steps.pow(2) / 12, latent_var) * sens).sum(-1) / _VALUES_PER_LATENT
    return 4 * math.log(2) * mse_q


@dataclass(frozen=True)
class PerceptualSlope:
    """The perceptual term's share of ``--rate-slope objective``: the loss adds ``weight`` · f(P), f(P) = P
    (linear) or P / sg(P) (log), and at the example's point P = ``p``."""
    lpips: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # two (N, 3, H, W) images → (N,)
    p: torch.Tensor
    weight: float
    form: str

    def change(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(B,) Δf(P) from the example's point to ``x_hat``."""
        dp = self.lpips(x_hat.clamp(0, 1), x).float() - self.p
        return self.weight * (dp / self.p.clamp_min(1e-6) if self.form == "log" else dp)


def measured_slope(decoder, rate: torch.nn.Module, x: torch.Tensor, z: torch.Tensor, mu: torch.Tensor,
                   steps: torch.Tensor, eps: torch.Tensor | None, d: torch.Tensor, bpp: torch.Tensor, proxy: str,
                   rate_proxy: str, amp, perceptual: PerceptualSlope | None = None) -> torch.Tensor:
    """(B,) the secant −ΔD/ΔR of each example's RD curve, from its point (``d``, ``bpp`` at ``steps``) to ``x``'s
    latent ``z`` coded at ``steps`` × SLOPE_REL, decoded and priced as ``proxy`` and ``rate_proxy`` take it
    (:func:`rate_input`, with the same uniform noise ``eps`` in step units). With ``perceptual``, ΔD also counts
    the perceptual term's change in the loss's units (× ``d``, as the rate term is divided by sg(D)): a move along
    the curve then leaves the whole objective unchanged, not only its MSE."""
    coarse = steps * SLOPE_REL
    delta = coarse[:, :, None, None]
    u = (z - mu) / delta
    with amp:
        x_hat = decoder(mu + rate_input(u, eps, proxy) * delta).float()
        d_coarse = (x_hat - x).pow(2).mean(dim=(1, 2, 3))
        if perceptual is not None:
            d_coarse = d_coarse + d * perceptual.change(x_hat, x)
    bpp_coarse = rate(rate_input(u, eps, rate_proxy), coarse) / (x.shape[2] * x.shape[3])
    return (d_coarse - d).clamp_min(0) / (bpp - bpp_coarse).clamp_min(1e-6)


# ------------------------------------------------------------------ one step
@dataclass(frozen=True)
class StepFigures:
    loss: float
    psnr: float  # mean over the batch of the decoded crops' PSNR through Q̃ (with ste: the real rounding)
    bpp: float  # mean rate proxy
    quality: float  # mean sampled quality


def objective(encoder, decoder, rate: torch.nn.Module, x: torch.Tensor, quality: torch.Tensor, cfg: TrainConfig,
              gen: torch.Generator, lpips=None) -> tuple[torch.Tensor, StepFigures]:
    """The loss of one batch ``x`` (B, 3, H, W) in [0, 1] at per-example ``quality`` (B,) (module docstring).
    With ``cfg.precision`` bfloat16 the networks (encoder, decoder, its sensitivity probes, LPIPS) run under
    autocast; their outputs come back as float32 for the rate, the loss and the gradients' accumulation."""
    amp = torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bfloat16")
    with amp:
        z = encoder(x).float()
        sens = channel_sensitivity(decoder, z, cfg.sens_probes, gen, cfg.sens_window)
    base = torch.tensor([training_step(float(q)) for q in quality], device=z.device)
    steps = adaptive_steps(sens, base)
    delta = steps[:, :, None, None]
    mu = channel_means(z)[:, :, None, None]
    u = (z - mu) / delta
    eps = torch.rand(u.shape, generator=gen).to(u) - 0.5
    u_hat = rate_input(u, eps, cfg.proxy)  # --proxy: the latent the decoder sees, rounded or noisy
    with amp:
        x_hat = decoder(mu + u_hat * delta).float()
    d = (x_hat - x).pow(2).mean(dim=(1, 2, 3))
    bpp = rate(rate_input(u, eps, cfg.rate_proxy), steps) / (x.shape[2] * x.shape[3])
    p = None
    if lpips is not None:
        with amp:
            p = lpips(x_hat.clamp(0, 1), x).float()
    with torch.no_grad():  # the RD slope at each example's steps (module docstring)
        lam = high_rate_slope(steps, z.detach().var(dim=(2, 3)), sens.float())
        if cfg.rate_slope != "formula":
            perceptual = (PerceptualSlope(lpips, p.detach(), cfg.lpips_weight, cfg.lpips_form)
                          if cfg.rate_slope == "objective" and p is not None else None)
            lam = torch.maximum(lam * SLOPE_FLOOR, measured_slope(decoder, rate, x, z.detach(), mu, steps, eps,
                                                        d.detach(), bpp.detach(), cfg.proxy, cfg.rate_proxy,
                                                        amp, perceptual))
        lam = cfg.rate_weight * lam
    loss = ((d + lam * bpp) / d.detach().clamp_min(1e-10)).mean()
    if cfg.range_weight:
        loss = loss + cfg.range_weight * F.relu(z.abs() - LATENT_RANGE).pow(2).mean()
    if p is not None:
        if cfg.lpips_form == "log":
            p = p / p.detach().clamp_min(1e-6)
        loss = loss + cfg.lpips_weight * p.mean()
    psnr = float((-10 * torch.log10(d.detach().clamp_min(1e-10))).mean())
    return loss, StepFigures(float(loss.detach()), psnr, float(bpp.detach().mean()), float(quality.mean()))


def accumulated_backward(encoder, decoder, rate: torch.nn.Module, x: torch.Tensor, quality: torch.Tensor,
                         cfg: TrainConfig, gen: torch.Generator, lpips=None) -> list[StepFigures] | None:
    """Back-propagate the mean loss of ``x`` in micro-batches of ``cfg.batch`` (one graph held at a time), adding
    to the parameters' ``.grad``: the gradient of one optimiser step over an effective batch of ``len(x)``. Returns
    each micro-batch's figures, or None if a micro-batch's loss is not finite (the caller then drops the step)."""
    figures = []
    for xs, qs in zip(x.split(cfg.batch), quality.split(cfg.batch)):
        loss, fig = objective(encoder, decoder, rate, xs, qs, cfg, gen, lpips)
        if not torch.isfinite(loss):
            return None
        (loss * (len(xs) / len(x))).backward()  # the loss is a mean over its micro-batch
        figures.append(fig)
    return figures


# ------------------------------------------------------------------ training
def train(cfg: TrainConfig) -> TrainResult:
    """Train (or resume) to ``cfg.steps`` total steps; checkpoint, export and evaluate into ``cfg.out``."""
    from latentarc.codec.models import load_model

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if cfg.precision == "bfloat16" and not native_bfloat16(device):
        raise ValueError(f"--precision bfloat16: {device} has no native bfloat16, it would be slower than float32")
    out = Path(cfg.out)
    files = training_files(cfg.images, cfg.held_out)
    lpips = lpips_loss(cfg.lpips_weight)
    stock = load_model("tae-f2", weights=cfg.weights, device=device)
    encoder = copy.deepcopy(stock.encoder).train().requires_grad_(True)
    ck = load_checkpoint(out)
    parent = parent_decoder(ck, cfg.init)  # a fine-tuned decoder to start from (hash checked), or None (tae-f2's)
    frozen = None if cfg.train_decoder else parent
    if cfg.train_decoder or parent is not None:  # stage 2 (a copy, trained jointly), or a fine-tuned one frozen
        decoder = copy.deepcopy(stock.decoder).requires_grad_(cfg.train_decoder)
        if parent is not None:  # a frozen run continued as stage 2 trains on from it, not from tae-f2's
            decoder.load_state_dict(parent)
        decoder.train(cfg.train_decoder)
    else:  # stage 1: frozen (requires_grad False, shared with the stock model)
        decoder = stock.decoder
    rate = rate_model(cfg.rate_model, cfg.rate_proxy).to(device)
    base_lrs = [cfg.lr] + ([cfg.decoder_lr or cfg.lr] if cfg.train_decoder else [])
    groups = [{"params": list(encoder.parameters())}]
    if cfg.train_decoder:
        groups.append({"params": list(decoder.parameters())})
    opt = torch.optim.Adam(groups, lr=cfg.lr)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    step, seconds, history, chunks, init = 0, 0.0, [], [], None
    if ck is None and cfg.init:
        init = start_from(cfg.init, encoder, cfg.train_decoder)
    if ck is not None:
        encoder.load_state_dict(ck["encoder"])
        if ck.get("decoder") is not None:
            if not cfg.train_decoder:
                raise ValueError(f"{out} trains the decoder too (stage 2): resume it with --train-decoder")
            decoder.load_state_dict(ck["decoder"])
        if len(ck["optimizer"]["param_groups"]) == len(opt.param_groups):
            opt.load_state_dict(ck["optimizer"])
        else:  # a stage-1 run continued as stage 2: the decoder starts from tae-f2's, Adam afresh
            print(f"{out}: stage 1 → stage 2 (the decoder trains from here; the optimiser starts afresh)", flush=True)
        restore_rng(ck["rng"], rng, gen)
        step, seconds, history, chunks = ck["step"], ck["seconds"], ck["history"], ck["chunks"]
        init = ck.get("init")
        print(f"resuming {out} at step {step} ({seconds:.0f} s trained)", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    chunk = {"from_step": step, "config": _jsonable(cfg), "device": str(device), "threads": torch.get_num_threads()}
    sampler = CropSampler(files, cfg.crop, rng, cfg.cache_mb, cfg.scale_range)
    stop = {"signal": None}

    def on_term(signum, _frame):
        stop["signal"] = signum

    previous = signal.signal(signal.SIGTERM, on_term)
    t_chunk, t_saved, recent = time.perf_counter(), time.perf_counter(), []

    def checkpoint():
        nonlocal t_saved
        elapsed = seconds + time.perf_counter() - t_chunk
        current = [dict(chunk, to_step=step, seconds=round(elapsed - seconds, 1))] if step > chunk["from_step"] else []
        save_checkpoint(out, {"step": step, "encoder": encoder.state_dict(),
                               "decoder": decoder.state_dict() if cfg.train_decoder else None,
                               "frozen_decoder": frozen,
                               "optimizer": opt.state_dict(),
                               "rng": rng_state(rng, gen), "seconds": elapsed, "history": history,
                               "chunks": chunks + current, "init": init})
        t_saved = time.perf_counter()

    try:
        deadline = None if cfg.max_minutes is None else t_chunk + 60 * cfg.max_minutes
        while step < cfg.steps and stop["signal"] is None:
            if deadline is not None and time.perf_counter() > deadline:
                print(f"--max-minutes {cfg.max_minutes:g} reached at step {step}", flush=True)
                break
            for g, lr in zip(opt.param_groups, base_lrs):
                g["lr"] = lr * min(1.0, (step + 1) / max(1, cfg.warmup))
            n = cfg.batch * cfg.accumulate
            x = sampler.batch(n, device)
            quality = torch.from_numpy(rng.uniform(*cfg.quality_range, size=n))
            opt.zero_grad(set_to_none=True)
            figures = accumulated_backward(encoder, decoder, rate, x, quality, cfg, gen, lpips)
            if figures is None:  # a bad batch must not poison the weights
                print(f"step {step}: non-finite loss, batch skipped", flush=True)
                opt.zero_grad(set_to_none=True)
                step += 1
                continue
            torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
            opt.step()
            step += 1
            recent.extend(figures)
            if step % cfg.log_every == 0 or step == cfg.steps:
                row = {"step": step, "loss": _mean(recent, "loss"), "psnr": _mean(recent, "psnr"),
                       "bpp": _mean(recent, "bpp"), "quality": _mean(recent, "quality"),
                       "seconds": round(seconds + time.perf_counter() - t_chunk, 1)}
                history.append(row)
                recent = []
                print(f"step {step}/{cfg.steps}: loss {row['loss']:.4f} PSNR {row['psnr']:.2f} dB "
                      f"{row['bpp']:.4f} bpp (mean q {row['quality']:.0f}) {row['seconds']:.0f} s", flush=True)
            if step % cfg.save_every == 0 or time.perf_counter() - t_saved > 60 * cfg.save_minutes:
                checkpoint()
    finally:
        checkpoint()
        signal.signal(signal.SIGTERM, previous)
    if step > chunk["from_step"]:
        chunks.append(dict(chunk, to_step=step, seconds=round(time.perf_counter() - t_chunk, 1)))
    seconds += time.perf_counter() - t_chunk
    result = TrainResult(out, step, seconds, history, init=init)
    if stop["signal"] is not None:
        print(f"stopped by signal {stop['signal']} at step {step}; checkpoint saved", flush=True)
        return result
    if cfg.eval_photos:
        result.evaluation = evaluate(stock, encoder.state_dict(), cfg.held_out, cfg.eval_photos, cfg.eval_crop,
                                     cfg.eval_qualities,
                                     decoder_state=decoder.state_dict() if cfg.train_decoder else frozen)
    export(cfg, encoder.state_dict(), result, chunks, files, decoder.state_dict() if cfg.train_decoder else frozen,
           decoder_frozen=frozen is not None)
    return result


def parent_decoder(ck: dict | None, init: str | None) -> dict | None:
    """The fine-tuned decoder a run starts from: the frozen one its checkpoint keeps, else that of an ``--init``
    folder holding one (a stage-2 model: its decoder file checked against its hash); None → tae-f2's. A stage-1
    run trains its encoder for it, frozen: its streams keep that model's decoder, name and fingerprint, so every
    stream it wrote still decodes with it."""
    from latentarc.codec.encoders import decoder_state, folder_meta

    if ck is not None:
        return ck.get("frozen_decoder")
    if not init:
        return None
    sha = folder_meta(init).get("decoder_sha256")
    return decoder_state(init, sha) if sha else None


def start_from(folder: str | Path, encoder: torch.nn.Module, train_decoder: bool) -> dict:
    """Load a ``train-codec`` folder's encoder (hash checked) into ``encoder`` and return what the new run
    inherits (folder, stage, hashes, steps, wall time, and the folder's own ``init``), so a model trained in
    chained runs records every step it took. Its fine-tuned decoder, if any, comes through :func:`parent_decoder`:
    trained on with ``train_decoder``, else frozen."""
    from latentarc.codec.encoders import encoder_state, folder_meta

    meta = folder_meta(folder)
    encoder.load_state_dict(encoder_state(folder, meta["encoder_sha256"]))
    stage = meta.get("stage", 1)
    takes = ("encoder and decoder" if stage == 2 and train_decoder
             else "encoder, for its frozen decoder" if meta.get("decoder_sha256") else "encoder")
    print(f"starting from {folder} (stage {stage}: its {takes})", flush=True)
    t = meta.get("training", {})
    return {"from": str(folder), "stage": stage, "encoder_sha256": meta["encoder_sha256"],
            "decoder_sha256": meta.get("decoder_sha256"), "steps": t.get("steps"), "seconds": t.get("seconds"),
            "init": t.get("init")}


def _mean(rows: list[StepFigures], key: str) -> float:
    return float(np.mean([getattr(r, key) for r in rows]))


def _jsonable(cfg: TrainConfig) -> dict:
    return json.loads(json.dumps(asdict(cfg)))


# ------------------------------------------------------------------ export
def export(cfg: TrainConfig, state: dict, result: TrainResult, chunks: list[dict], files: list[Path],
           decoder_state: dict | None = None, *, decoder_frozen: bool = False) -> None:
    """``encoder.safetensors`` (+ ``decoder.safetensors`` for stage 2, or the frozen fine-tuned decoder,
    ``decoder_frozen``) + ``config.json`` + ``CARD.md``: a folder ``tae-f2-le:<folder>`` (with a decoder:
    ``tae-f2-ft:<folder>``) loads, and that can be shipped as ``codec/weights/<name>/`` (``codec/encoders.py``).
    A frozen decoder is written back bit for bit, so the model keeps its fingerprint."""
    from safetensors.torch import save_file

    from latentarc.codec.encoders import BASE_MODEL, DECODER_FILE, ENCODER_FILE, FT_PREFIX, PREFIX

    out = Path(cfg.out)
    tensors = {ENCODER_FILE: state} | ({DECODER_FILE: decoder_state} if decoder_state is not None else {})
    for file, st in tensors.items():
        save_file({k: v.detach().float().cpu().contiguous() for k, v in st.items()}, str(out / file))
        (out / file).chmod(0o644)  # safetensors writes 0600; the folder is meant to be shipped
    images = Path(cfg.images)
    sets = image_sets([p.relative_to(images).as_posix() for p in files])
    last = result.history[-1] if result.history else {}
    parent = (result.init or {}).get("decoder_sha256")
    if decoder_frozen and sha256_file(out / DECODER_FILE) != parent:
        raise RuntimeError(f"the frozen decoder written to {out} no longer has its SHA-256 {parent}")
    perceptual = "log-lpips" if cfg.lpips_form == "log" else "lpips"
    meta = {
        "name": cfg.name or ("tae-f2-ft" if decoder_state is not None else "tae-f2-le"),
        "base_model": BASE_MODEL,
        "encoder_sha256": sha256_file(out / ENCODER_FILE),
        "stage": 2 if decoder_state is not None and not decoder_frozen else 1,
        "decoder_sha256": sha256_file(out / DECODER_FILE) if decoder_state is not None else None,
        "decoder_frozen": decoder_frozen,
        "decoder": (f"the fine-tuned decoder of {_parent_text(result.init)}, frozen ({FT_PREFIX}:<folder>): streams "
                    "carry its fingerprint and decode with that model" if decoder_frozen else
                    f"fine-tuned jointly with the encoder: a model of its own, {FT_PREFIX}:<folder>, whose streams "
                    "name it and carry its decoder's fingerprint" if decoder_state is not None else
                    f"unchanged tae-f2 decoder ({PREFIX}:<folder>); streams carry its fingerprint and decode with "
                    "tae-f2"),
        "training": {
            "images": str(images), "image_sets": sets, "images_count": len(files), "held_out": cfg.held_out,
            "steps": result.step, "seconds": round(result.seconds, 1), "final": last, "chunks": chunks,
            "init": result.init,
            "objective": {"distortion": "mse" + (f" + {cfg.lpips_weight} {perceptual}" if cfg.lpips_weight else ""),
                          "proxy": cfg.proxy, "rate_proxy": cfg.rate_proxy, "rate_model": cfg.rate_model,
                          "rate_weight": cfg.rate_weight, "rate_slope": cfg.rate_slope,
                          "quality_range": list(cfg.quality_range),
                          "range_weight": cfg.range_weight},
        },
        "held_out_evaluation": result.evaluation,
    }
    (out / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
    (out / "CARD.md").write_text(_card(cfg, meta, images))


def _perceptual_text(cfg: TrainConfig) -> str:
    """The card's words for the LPIPS term of the objective (empty without one)."""
    if not cfg.lpips_weight:
        return ""
    if cfg.lpips_form == "log":
        return (f";\n  plus {cfg.lpips_weight} × LPIPS / sg(LPIPS) (the log form: relative LPIPS changes priced like "
                "MSE's)")
    return f";\n  plus {cfg.lpips_weight} × LPIPS"


def _card(cfg: TrainConfig, meta: dict, images: Path) -> str:
    t = meta["training"]
    sets = terms_lines(t["image_sets"], images)
    f = t["final"]
    final = (f"loss {f['loss']:.4f}, train-crop PSNR {f['psnr']:.2f} dB at {f['bpp']:.4f} bpp (rate proxy), "
             f"mean of the last {cfg.log_every} steps" if f else "none logged")
    chunks = "; ".join(f"{c['from_step']}→{c['to_step']} (batch {_batch_text(c['config'])}, "
                       f"crop {c['config']['crop']}, qualities {_range_text(c['config']['quality_range'])}, "
                       f"lr {_lr_text(c['config'])}, {c['device']}, {c['threads']} thread(s), {c['seconds']:.0f} s)"
                       for c in t["chunks"])
    ranges = {tuple(c["config"]["quality_range"]) for c in t["chunks"]}
    drawn = (f"drawn uniformly in {list(cfg.quality_range)}" if len(ranges) <= 1 else
             f"drawn uniformly in each chunk's range (listed under Training; this chunk {list(cfg.quality_range)})")
    if meta.get("decoder_frozen"):
        title = "learned encoder for a fine-tuned tae-f2 decoder, frozen"
        about = (f"fine-tuned from the encoder of\n{_parent_text(t['init'])}, for its decoder, unchanged: the\n"
                 "decoder file is that model's bit for bit, so streams carry its fingerprint and every stream it\n"
                 "wrote still decodes.")
    elif meta["stage"] == 2:
        title = "fine-tuned tae-f2 autoencoder (encoder and decoder)"
        about = ("fine-tuned from the tae-f2 encoder and decoder (madebyollin/taesd, MIT), jointly. The decoder is\n"
                 "its own: streams made with this model carry its name and its decoder's fingerprint, decode only\n"
                 "with it, and the stock decoder refuses them (as this one refuses stock streams).")
    else:
        title = "learned tae-f2 encoder for the frozen tae-f2 decoder"
        about = ("fine-tuned from the tae-f2 encoder (madebyollin/taesd, MIT). The decoder is the unchanged tae-f2\n"
                 "decoder: streams carry its fingerprint and the name `tae-f2`, and decode with today's decoder.")
    return f"""# {meta['name']}: {title}

Trained by latentarc (`latentarc train-codec`, jobs/research/train_codec.py), {about}

- **Data**: {t['images_count']} training photos under `{images}`, random crops rescaled by a factor in
  {list(cfg.scale_range)}:
{sets}

  Weights trained on these inherit their terms: **non-commercial research use**. Held out (never trained on,
  refused by path and content hash): `{t['held_out']}`.
- **Objective**: per example (D + λ·R) / sg(D), D = pixel MSE through the codec's adaptive quantization
  ({cfg.proxy} proxy) at a quality {drawn}, R the {cfg.rate_model} code
  length of the {RATE_PROXY_TEXT[cfg.rate_proxy]}, λ = {cfg.rate_weight} × the {SLOPE_TEXT[cfg.rate_slope]} at the
  example's steps{_perceptual_text(cfg)} (docs/training.md).
- **Training**: {t['steps']} steps, {t['seconds']:.0f} s wall time in all, seed {cfg.seed}; chunks: {chunks}.
  Final: {final}.{_lineage_text(t.get('init'), t['steps'], t['seconds'])}

Held-out figures (`latentarc train-codec --eval-only`):

{format_evaluation(meta['held_out_evaluation']) if meta['held_out_evaluation'] else 'not measured'}
"""


def _parent_text(init: dict | None) -> str:
    """The model a frozen decoder came from, as config and card name it."""
    init = init or {}
    return f"`{init.get('from')}` (decoder SHA-256 {str(init.get('decoder_sha256'))[:16]}…)"


def _lr_text(config: dict) -> str:
    """A chunk's learning rate(s) as the card states them: the encoder's, and the decoder's when it trains."""
    if not config.get("train_decoder"):
        return f"{config['lr']}"
    return f"{config['lr']} (decoder {config.get('decoder_lr') or config['lr']})"


def _range_text(quality_range: list) -> str:
    """A chunk's quality range as the card states it: ``0–100``."""
    lo, hi = quality_range
    return f"{lo:g}–{hi:g}"


def _batch_text(config: dict) -> str:
    """A chunk's batch as the card states it: ``4``, or ``4 × 4 accumulated`` (configs before --accumulate: 1)."""
    k = config.get("accumulate", 1)
    bf16 = ", bfloat16" if config.get("precision") == "bfloat16" else ""
    return f"{config['batch']}" + (f" × {k} accumulated" if k > 1 else "") + bf16


def _lineage_text(init: dict | None, steps: int, seconds: float) -> str:
    chain = lineage(init)
    if not chain:
        return ""
    runs = "; ".join(f"`{r['from']}` (stage {r['stage']}, {r['steps']} steps, {r['seconds']:.0f} s)" for r in chain)
    total = sum(r["steps"] or 0 for r in chain) + steps
    wall = sum(r["seconds"] or 0 for r in chain) + seconds
    return (f"\n- **Started from** (oldest first): {runs}; then this run. In all {total} steps, "
            f"{wall:.0f} s of training.")


# ------------------------------------------------------------------ held-out evaluation
def _held_out_crops(folder: str | Path, count: int, crop: int):
    from latentarc.codec.images import Picture, read_image

    paths = image_files(Path(folder))
    if not paths:
        raise ValueError(f"no held-out photos in {folder}")
    pick = sorted({int(round(i)) for i in np.linspace(0, len(paths) - 1, min(count, len(paths)))})
    out = []
    for i in pick:
        pic = read_image(paths[i].read_bytes())
        h, w = pic.rgb.shape[:2]
        s = min(crop, h, w) // 8 * 8
        y, x = (h - s) // 2, (w - s) // 2
        out.append((paths[i].name, Picture(np.ascontiguousarray(pic.rgb[y : y + s, x : x + s]), None, pic.mode)))
    return out


@torch.no_grad()
def _unquantized_psnr(model, pic) -> float:
    from latentarc.codec.metrics import psnr

    x = torch.from_numpy(pic.rgb).permute(2, 0, 1)[None].float().div(255).to(model.device)
    y = model.decode(model.encode(x))[0].mul(255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0)
    return psnr(pic.rgb, y.cpu().numpy())


def evaluate(stock, encoder_state: dict | None, held_out: str | Path, photos: int = 3, crop: int = 512,
             qualities=EVAL_QUALITIES, entropy_models=EVAL_ENTROPY_MODELS, *,
             decoder_state: dict | None = None) -> dict:
    """Stock encoder vs the fine-tuned one (``encoder_state``; None: stock only) on ``photos`` held-out photos
    (centre crops ≤ ``crop`` px): the unquantized PSNR (the autoencoder's ceiling) and, per entropy model and
    quality, the real codec's bpp and decoded PSNR (streams coded and decoded with the stock decoder, or with
    ``decoder_state``, a stage-2 decoder)."""
    from latentarc.codec.autoencoder import tensors_fingerprint
    from latentarc.codec.encoders import with_encoder, with_weights
    from latentarc.codec.neural import NeuralCodec

    if not qualities:  # the ceiling alone: no stream is coded
        entropy_models = ()
    models = {"stock": stock}
    if encoder_state is not None:
        enc = {k: v.detach().to("cpu") for k, v in encoder_state.items()}
        if decoder_state is None:
            models["learned"] = with_encoder(stock, enc)
        else:
            dec = {k: v.detach().to("cpu") for k, v in decoder_state.items()}
            models["learned"] = with_weights(stock, enc, dec, name="tae-f2-ft",
                                             fingerprint=tensors_fingerprint(dec))
        models["learned"].to(stock.device)
    crops = _held_out_crops(held_out, photos, crop)
    rows = []
    for label, model in models.items():
        for name, pic in crops:
            row = {"encoder": label, "photo": name, "size": pic.width,
                   "unquantized_psnr": _unquantized_psnr(model, pic)}
            for em in entropy_models:
                codec = NeuralCodec(model, entropy_model=em)
                a = codec.analyse(pic)
                for q in qualities:
                    r = codec.encode(pic, quality=q, analysis=a)
                    row[f"{em}@{q}"] = {"bpp": r.bpp, "psnr": r.psnr}
            rows.append(row)
            print(f"  eval {label} {name}: unquantized {row['unquantized_psnr']:.2f} dB", flush=True)
    summary = {}
    for label in models:
        mine = [r for r in rows if r["encoder"] == label]
        s = {"unquantized_psnr": float(np.mean([r["unquantized_psnr"] for r in mine]))}
        for em in entropy_models:
            for q in qualities:
                k = f"{em}@{q}"
                s[k] = {"bpp": float(np.mean([r[k]["bpp"] for r in mine])),
                        "psnr": float(np.mean([r[k]["psnr"] for r in mine]))}
        summary[label] = s
    return {"photos": [n for n, _ in crops], "crop": crop, "qualities": list(qualities),
            "entropy_models": list(entropy_models), "summary": summary, "rows": rows}


def format_evaluation(ev: dict) -> str:
    """A Markdown table of :func:`evaluate`'s summary (means over the photos)."""
    points = [f"{em}@{q}" for em in ev["entropy_models"] for q in ev["qualities"]]
    head = ["encoder", "unquantized PSNR"] + [f"{k.replace('@', ' q')} bpp / PSNR" for k in points]
    lines = [f"{len(ev['photos'])} held-out photos ({', '.join(ev['photos'])}), centre crops ≤ {ev['crop']} px; "
             "means over the photos.", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, s in ev["summary"].items():
        cells = [label, f"{s['unquantized_psnr']:.2f} dB"] + [f"{s[k]['bpp']:.4f} / {s[k]['psnr']:.2f}" for k in points]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def evaluate_folder(out: str | Path | None, cfg: TrainConfig) -> dict:
    """``--eval-only``: the stock encoder, and ``out``'s latest weights when it has any: its checkpoint, else the
    finished model it exported (a folder kept without its checkpoint, hashes checked)."""
    from latentarc.codec.encoders import decoder_state, encoder_state, folder_meta
    from latentarc.codec.models import load_model

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    stock = load_model("tae-f2", weights=cfg.weights, device=device)
    ck = load_checkpoint(out) if out else None
    enc = dec = None
    if ck:
        enc, dec = ck["encoder"], ck.get("decoder") or ck.get("frozen_decoder")
    elif out and (Path(out) / "config.json").is_file():
        meta = folder_meta(out)
        enc = encoder_state(out, meta["encoder_sha256"])
        dec = decoder_state(out, meta["decoder_sha256"]) if meta.get("decoder_sha256") else None
    ev = evaluate(stock, enc, cfg.held_out, cfg.eval_photos, cfg.eval_crop, cfg.eval_qualities, decoder_state=dec)
    if ck:
        ev["checkpoint_step"] = ck["step"]
    return ev


# ------------------------------------------------------------------ CLI edge
def config_from_args(a) -> TrainConfig:
    lo, hi = (float(v) for v in a.quality_range.split(","))
    s_lo, s_hi = (float(v) for v in a.scale_range.split(","))
    if not a.out and not a.eval_only:
        raise ValueError("train-codec needs --out FOLDER (checkpoints, the encoder and its card go there)")
    return TrainConfig(out=a.out or "", images=a.images, held_out=a.held_out, steps=a.steps, batch=a.batch,
                       accumulate=a.accumulate, crop=a.crop,
                       lr=a.lr, warmup=a.warmup, quality_range=(lo, hi), scale_range=(s_lo, s_hi),
                       rate_model=a.rate_model,
                       rate_weight=a.rate_weight, rate_slope=a.rate_slope, rate_proxy=a.rate_proxy,
                       proxy=a.proxy, lpips_weight=a.lpips_weight,
                       lpips_form=a.lpips_form, range_weight=a.range_weight,
                       sens_probes=a.sens_probes, sens_window=a.sens_window, save_every=a.save_every,
                       save_minutes=a.save_minutes, max_minutes=a.max_minutes, cache_mb=a.cache_mb,
                       train_decoder=a.train_decoder, decoder_lr=a.decoder_lr, init=a.init,
                       log_every=a.log_every, seed=a.seed, device=a.device, threads=a.threads, weights=a.weights,
                       precision=a.precision,
                       eval_photos=a.eval_photos, eval_crop=a.eval_crop,
                       eval_qualities=tuple(int(q) for q in a.eval_qualities.split(",") if q.strip()),
                       name=a.name)


def run_train_codec(a) -> int:
    cfg = config_from_args(a)
    if a.eval_only:
        ev = evaluate_folder(a.out, cfg)
        print(format_evaluation(ev))
        if a.eval_json:
            Path(a.eval_json).write_text(json.dumps(ev, indent=2) + "\n")
        return 0
    r = train(cfg)
    if r.evaluation:
        print(format_evaluation(r.evaluation))
    return 0
