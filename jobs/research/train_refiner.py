"""``latentarc train-refiner``: train the latent denoiser used by ``--refine`` (codec/refine.py, Backend B) for one
model's latents (``--codec``: tae-f2 by default, or a fine-tuned model such as tae-f2-ft).

Data: the images under IMAGES (default ``../shared/data/train``; the evaluation photos in ``--held-out`` are
refused, by path and by content), each optionally downscaled so its longer side is at most ``--max-side``, encoded
once to the model's latents together with the codec's own per-channel decoder sensitivities; both are cached in one
``.npz`` (keyed by the file list, size and encoder fingerprint). A FIXED validation split is kept aside: every
``--holdout-every``-th file in name order (a fine-tune, ``--init``, keeps its parent's held-out files instead),
recorded in config.json and CARD.md and used only for the validation figures.

Model: a ``diffusers.UNet2DModel`` (32 channels in and out, timestep-conditioned) predicting **v**
(``prediction_type="v_prediction"`` in the DDIM scheduler config), from which the clean latent is
``x_0 = √ᾱ_t x_t − √(1−ᾱ_t) v``. That is a skip connection (EDM's preconditioning with σ_data = 1): at the low
noise levels of a high-quality stream the estimate stays close to the input and the network only supplies a
correction scaled by the noise level. Predicting x_0 directly (``--prediction sample``, the first version)
left an error floor: on held-out photos at quality ≈ 75 it made the latent *worse* (normalised MSE 0.005
dequantized → 0.074 "denoised"), because a small network cannot reproduce every detail it is handed.
For the quantization corruption, which is not Gaussian, v is computed from the actual pair: the effective
noise ``ε = (x_t − √ᾱ x_0)/√(1−ᾱ)``.

Conditioning (``--condition steps``, the default): beside x_t the U-Net sees each channel's quantization step as
a constant map (``refine.step_condition``; 64 input channels). One timestep cannot say how noisy each channel
is — the adaptive steps differ per channel and channels below their step quantize to zero — and without that
the v-prediction model still made mid-quality latents slightly worse on held-out photos (0.0386 → 0.0421).
Latents are normalised per channel by the training set's mean and std (stored in config.json;
``refine.timestep_for_steps`` uses the same std).

Corruption, per sample, on a random ``--crop``×``--crop`` latent window: a base step drawn log-uniformly over
the codec's quality range (0.12 … 6.8, quality 100 … 0), per-channel steps from
``codec.quantize.choose_params`` with the image's sensitivities (exactly what the encoder does), t* from the
same steps (``refine.timestep_for_steps``), then with probability ½ the codec's corruption at t*
(``x_t* = √ᾱ · (dequantize(quantize(z)) - μ)/σ``, the start sample the decoder builds) and otherwise
Gaussian noise at a timestep uniform in [1, t*] (the states the DDIM steps below t* visit).

Loss: MSE to the prediction target, weighted per channel by what an error there costs in *pixels*
(``--loss pixel``, the default): the decoder's sensitivity ``w_c`` (the same Hutchinson estimate the encoder
uses to set steps) times ``σ_c²`` (normalised units back to latent units), normalised to mean 1 per image. A
plain latent MSE (``--loss latent``) spends capacity on channels the decoder barely uses and lets the ones it
relies on stay noisy — the opposite of what PSNR and MS-SSIM at decode reward. ``--loss decoded`` goes all the
way: pixel MSE through the frozen decoder (:class:`DecodedLoss`), slower per step but the objective PSNR
measures; ``--loss decoded-ssim`` adds ``--ssim-weight`` × (1 − SSIM) on the same decoded pixels, because pixel
MSE alone is minimised by blur (the decoded-MSE model gained PSNR but lost MS-SSIM and sharpness). AdamW,
``--steps`` iterations of ``--batch-size``; CUDA when available.

``--loss decoded-lpips`` adds ``--lpips-weight`` × LPIPS (codec.metrics.lpips_loss) instead: MSE and SSIM are
both minimised by the conditional mean, LPIPS pays for texture. ``--dists-weight`` adds W × DISTS
(codec.metrics.dists_loss) to any decoded loss: its structure term compares feature variances, so detail averaged
away is charged for without a discriminator. ``--detail-weight`` adds W × codec.metrics.detail_loss, each block's
gradient energy against the reference's: the sharpness figure, made local. ``--base-steps LO,HI`` narrows the
corruption to a rate range (e.g. the low rates where refinement matters).

The decoded losses cost ~1.3 s a step on 2 CPU cores even at batch 8 with 16×16 latent crops, so denoisers are
trained in stages: ``--init DIR`` continues from a trained folder (its latent statistics and network come with it;
a folder trained on images that are validation images here is refused), and ``--quantized-fraction`` sets the
share of samples at the codec's own corruption (1: only the state a one-step faithful decode sees). With
``--save-every N`` a run checkpoints into ``--out`` (and on SIGTERM); started again with the same arguments it
resumes there, ``--steps`` being the total. Weights are stored as float16 by default (``--dtype``); the
validation figures are computed on the stored weights.
"""

from __future__ import annotations

import copy
import json
import math
import signal
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from latentarc.codec.refine import STEP_CONDITION
from latentarc.jobs.research.adversary import Adversary, patch_size
from latentarc.jobs.research.checkpoints import lineage, load_checkpoint, restore_rng, rng_state, save_checkpoint
from latentarc.jobs.research.latent_cache import encode_latents
from latentarc.jobs.research.training_data import (DEFAULT_HELD_OUT, DEFAULT_TRAIN, image_sets, terms_lines,
                                                   training_files, validation_split)

BASE_STEP_RANGE = (0.12, 6.8)  # quality 100 … 0 (codec.neural.quality_to_step)


PREDICTIONS = ("v_prediction", "sample")
#: losses computed on decoded pixels (through the frozen decoder)
DECODED_LOSSES = ("decoded", "decoded-ssim", "decoded-lpips")


def make_scheduler(prediction: str = "v_prediction"):
    from diffusers import DDIMScheduler

    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {', '.join(PREDICTIONS)}; got {prediction!r}")
    return DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type=prediction)


def target(prediction: str, x_t, x0, alpha_bar):
    """The training target for ``prediction`` given the noisy input, the clean latent and ᾱ_t (broadcastable)."""
    if prediction == "sample":
        return x0
    eps = (x_t - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()
    return alpha_bar.sqrt() * eps - (1 - alpha_bar).sqrt() * x0


def x0_from(prediction: str, out, x_t, alpha_bar):
    """The clean-latent estimate from the network's output (the scheduler's own conversion)."""
    if prediction == "sample":
        return out
    return alpha_bar.sqrt() * x_t - (1 - alpha_bar).sqrt() * out


def ddim_eta1_step(x_t: torch.Tensor, x0: torch.Tensor, ab_t: torch.Tensor, ab_prev: torch.Tensor,
                   noise: torch.Tensor) -> torch.Tensor:
    """One DDIM step with eta = 1 (the realistic sampler's, ``DDIMScheduler.step``) from x_t at ᾱ_t to ᾱ_prev,
    given the clean-latent estimate ``x0`` and fresh ``noise``; differentiable, per-example ᾱ (broadcastable)."""
    eps = (x_t - ab_t.sqrt() * x0) / (1 - ab_t).sqrt()
    var = (1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)
    return ab_prev.sqrt() * x0 + (1 - ab_prev - var).clamp_min(0).sqrt() * eps + var.sqrt() * noise


def make_unet(channels: tuple[int, ...], layers: int, crop: int, latent_channels: int = 32, conditioned: bool = True):
    """``conditioned``: the input also holds the per-channel step map (refine.step_condition), 2C channels."""
    from diffusers import UNet2DModel

    n = len(channels)
    return UNet2DModel(sample_size=crop, in_channels=latent_channels * (2 if conditioned else 1),
                       out_channels=latent_channels,
                       block_out_channels=tuple(channels), layers_per_block=layers,
                       down_block_types=("DownBlock2D",) * n, up_block_types=("UpBlock2D",) * n,
                       norm_num_groups=min(32, min(channels)))


class Corruptor:
    """The codec's corruption of a latent crop, in the denoiser's normalised units."""

    def __init__(self, scheduler, mean: np.ndarray, std: np.ndarray, rng: np.random.Generator,
                 quantized_fraction: float = 0.5, base_steps: tuple[float, float] = BASE_STEP_RANGE):
        if not 0.0 <= quantized_fraction <= 1.0:
            raise ValueError(f"quantized fraction must be in [0, 1]; got {quantized_fraction}")
        if not 0 < base_steps[0] <= base_steps[1]:
            raise ValueError(f"base steps must be 0 < low ≤ high; got {base_steps}")
        self.scheduler, self.mean, self.std, self.rng = scheduler, mean, std, rng
        self.quantized_fraction, self.base_steps = quantized_fraction, base_steps
        self.ac = scheduler.alphas_cumprod.double().numpy()
        self._grid = None  # grid_scheduler()'s copy

    def quantized(self, z: np.ndarray, sens: np.ndarray, base: float) -> tuple[np.ndarray, int, np.ndarray]:
        """(dequantized latent, t*, per-channel steps) as the codec produces them at ``base``."""
        from latentarc.codec.quantize import choose_params, dequantize, quantize
        from latentarc.codec.refine import timestep_for_steps

        qp = choose_params(z, base, sens)
        zq = dequantize(quantize(z, qp), qp)
        steps = qp.step_values()
        return zq, timestep_for_steps(self.scheduler, steps, self.std), steps

    def grid_scheduler(self):
        """A private copy of the scheduler for ``refine.sampling_timesteps`` (which sets its timesteps)."""
        if self._grid is None:
            self._grid = copy.deepcopy(self.scheduler)
        return self._grid

    def condition(self, steps: np.ndarray, shape) -> np.ndarray:
        """The step map a conditioned denoiser sees beside x_t (refine.step_condition)."""
        from latentarc.codec.refine import step_condition

        return step_condition(steps, self.std, tuple(shape))[0].numpy()

    def weights(self, sens: np.ndarray, loss: str) -> np.ndarray:
        """Per-channel loss weights (mean 1): pixel cost of a unit error in normalised units, or all ones."""
        if loss == "latent":
            return np.ones_like(self.std, dtype=np.float32)
        w = np.asarray(sens, dtype=np.float64) * self.std.astype(np.float64) ** 2
        return (w / w.mean()).astype(np.float32)

    def norm(self, z):
        return (z - self.mean[:, None, None]) / self.std[:, None, None]

    def sample(self, z: np.ndarray, sens: np.ndarray, *,
               quantized: bool = False) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
        """(x_t, t, x_0, steps) for one crop (``quantized``: always the codec's state at t*, as a decode starts).
        The Gaussian states keep the stream's steps: at decode every DDIM step below t* still sees the steps the
        stream carries."""
        lo, hi = np.log(self.base_steps[0]), np.log(self.base_steps[1])
        zq, t_star, steps = self.quantized(z, sens, float(np.exp(self.rng.uniform(lo, hi))))
        x0 = self.norm(z).astype(np.float32)
        if t_star > 0 and (self.rng.random() < self.quantized_fraction or quantized):
            return (np.sqrt(self.ac[t_star]) * self.norm(zq)).astype(np.float32), t_star, x0, steps
        t = int(self.rng.integers(1, max(t_star, 1) + 1))
        eps = self.rng.standard_normal(x0.shape)
        return (np.sqrt(self.ac[t]) * x0 + np.sqrt(1 - self.ac[t]) * eps).astype(np.float32), t, x0, steps


def latent_stats(latents: dict, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of the named latents: the denoiser's normalisation."""
    flat = np.concatenate([latents[n][0].reshape(latents[n][0].shape[0], -1) for n in names], axis=1)
    return flat.mean(axis=1), np.maximum(flat.std(axis=1), 1e-3)


def _crop(z: np.ndarray, size: int, rng) -> np.ndarray:
    _, h, w = z.shape
    y, x = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
    return z[:, y : y + size, x : x + size]


class DecodedLoss:
    """Pixel MSE through the frozen decoder, ``‖D(ẑ) − D(z)‖²`` on [0, 1] pixels (``--loss decoded``).

    Why: a latent MSE — even weighted by the decoder's first-order sensitivity — is not what PSNR at decode
    measures; the decoder is nonlinear, and a denoiser that lowered the held-out latent error by 17% still cost
    0.56 dB PSNR in pixels. The target is the decoder's image of the clean latent (the codec's ceiling), so
    no pixels need to be stored beside the latent cache."""

    SCALE = 100.0  # keeps the loss near 1 for the optimiser's epsilon

    def __init__(self, model, mean: np.ndarray, std: np.ndarray, device, ssim_weight: float = 0.0,
                 lpips_weight: float = 0.0, dists_weight: float = 0.0, detail_weight: float = 0.0):
        self.model, self.ssim_weight, self.lpips_weight = model, ssim_weight, lpips_weight
        self.dists_weight, self.detail_weight = dists_weight, detail_weight
        self.mean = torch.from_numpy(mean).float().to(device).view(1, -1, 1, 1)
        self.std = torch.from_numpy(std).float().to(device).view(1, -1, 1, 1)

    def pixels(self, x0_norm: torch.Tensor) -> torch.Tensor:
        return self.model.decode(x0_norm * self.std + self.mean)

    def __call__(self, x0_pred: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        return self.with_pixels(x0_pred, x0)[0]

    def with_pixels(self, x0_pred: torch.Tensor, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, decoded prediction, decoded clean latent), the pixels clipped to [0, 1] as the perceptual terms
        and the adversarial one see them (the MSE term compares them unclipped)."""
        with torch.no_grad():
            ref = self.pixels(x0)
        pred = self.pixels(x0_pred)
        loss = self.SCALE * torch.nn.functional.mse_loss(pred, ref)
        pred, ref = pred.clamp(0, 1), ref.clamp(0, 1)
        if self.ssim_weight:
            # Why: pixel MSE alone is minimised by blur — the first decoded-loss denoiser gained PSNR at quality
            # 50 while its held-out sharpness fell to 0.8 and MS-SSIM dropped; SSIM charges for lost structure.
            from pytorch_msssim import ssim

            loss = loss + self.ssim_weight * (1 - ssim(pred, ref, data_range=1.0))
        if self.lpips_weight:
            # Why: MSE and SSIM both reward the conditional mean, which is blur; LPIPS compares deep features,
            # so texture the decoder can draw from the latent is paid for instead of averaged away.
            from latentarc.codec.metrics import lpips_loss

            loss = loss + self.lpips_weight * lpips_loss(ref, pred).mean()
        if self.dists_weight:
            # Why: LPIPS is pointwise in feature space, so a blurred estimate of uncertain texture still scores
            # well; DISTS's structure term compares each feature map's variance, which blur lowers.
            from latentarc.codec.metrics import dists_loss

            loss = loss + self.dists_weight * dists_loss(ref, pred).mean()
        if self.detail_weight:
            # Why: every term above is lowest for some average of the texture the latent leaves uncertain; this
            # one asks each block for the reference's detail energy, so drawn texture is paid for, not blur.
            from latentarc.codec.metrics import detail_loss

            loss = loss + self.detail_weight * detail_loss(ref, pred).mean()
        return loss, pred, ref


def _psnr(mse: float) -> float:
    return 10 * math.log10(1.0 / mse) if mse > 0 else math.inf


@torch.no_grad()
def validate(unet, corr: Corruptor, latents: dict, names: list[str], crop: int, device, loss: str = "pixel",
             conditioned: bool = True, decoded: DecodedLoss | None = None) -> dict:
    """Held-out weighted latent MSE (normalised units, the training loss's channel weights) of the dequantized
    latent vs the denoiser's one-shot x_0 at t*, on the centre crop, at three base steps (quality ≈ 75, 50, 25);
    with ``decoded``, also the PSNR of both decoded through the frozen decoder against the clean latent's
    decode — the figure that decides whether refinement helps."""
    out = {}
    for base in (0.32, 0.87, 2.4):
        before = after = 0.0
        pix_before = pix_after = 0.0
        n = 0
        for name in names:
            z, sens = latents[name]
            _, h, w = z.shape
            if h < crop or w < crop:
                continue
            y, x = (h - crop) // 2, (w - crop) // 2
            zc = z[:, y : y + crop, x : x + crop]
            zq, t, steps = corr.quantized(zc, sens, base)
            x0, xq = corr.norm(zc), corr.norm(zq)
            w = corr.weights(sens, "latent" if loss in DECODED_LOSSES else loss)[:, None, None]
            before += float((w * (xq - x0) ** 2).mean())
            if t > 0:
                xt = torch.from_numpy((np.sqrt(corr.ac[t]) * xq).astype(np.float32))[None].to(device)
                inp = xt
                if conditioned:
                    inp = torch.cat([xt, torch.from_numpy(corr.condition(steps, xt.shape[-2:]))[None].to(device)], 1)
                out_ = unet(inp, torch.tensor([t], device=device)).sample
                ab = torch.tensor(corr.ac[t], dtype=torch.float32, device=device)
                pred = x0_from(corr.scheduler.config.prediction_type, out_, xt, ab)[0].float().cpu().numpy()
                after += float((w * (pred - x0) ** 2).mean())
            else:
                pred = xq
                after += float((w * (xq - x0) ** 2).mean())
            if decoded is not None:
                as_t = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float32))[None].to(device)  # noqa: E731
                ref = decoded.pixels(as_t(x0))
                pix_before += float(torch.mean((decoded.pixels(as_t(xq)) - ref) ** 2))
                pix_after += float(torch.mean((decoded.pixels(as_t(pred)) - ref) ** 2))
            n += 1
        if n:
            out[f"base_step_{base}"] = {"mse_dequantized": before / n, "mse_denoised": after / n, "images": n}
            if decoded is not None:
                out[f"base_step_{base}"] |= {"psnr_dequantized": _psnr(pix_before / n),
                                             "psnr_denoised": _psnr(pix_after / n)}
    return out


def inherited_split(names: list[str], folder: Path) -> list[str]:
    """The validation names of a fine-tune of the denoiser in ``folder`` (``--init``): its own held-out names that
    are present here, so the figures come from images neither model was trained on, whatever subset of the
    photos the fine-tune sees. A parent whose own record says it trained on one of them is refused: its figures
    would not be held out."""
    parent = json.loads((folder / "config.json").read_text())
    hold = sorted(set(names) & set(parent.get("held_out", [])))
    if not hold:
        raise ValueError(f"--init {folder}: none of its held-out images is among the training images, so the "
                         "fine-tune could not be validated on images neither model saw")
    leaked = sorted(set(parent.get("trained_on", [])) & set(hold))
    if leaked:
        raise ValueError(f"--init {folder} was trained on {', '.join(leaked)}, which its config also holds out")
    return hold


def load_init(folder: Path):
    """(U-Net, scheduler, mean, std, conditioned, config) of a denoiser folder to fine-tune (``--init``).

    The latent statistics come with it: the weights only mean something in the units they were trained in."""
    import diffusers

    from latentarc.codec.refine import load_denoiser_folder

    cfg = json.loads((folder / "config.json").read_text())
    r = load_denoiser_folder(folder)  # the loader decode uses: same network, weights and statistics
    # the stored training schedule, not the refiner's sampling copy (that one ends on ᾱ = 1)
    sched = diffusers.DDIMScheduler.from_config(cfg["scheduler"])
    return (r.unet.train().requires_grad_(True), sched, r.latent_mean.numpy(), r.latent_std.numpy(),
            r.condition == STEP_CONDITION, cfg)


def _train_step(a: RefinerTrainConfig, it: int, unet, opt, corr: Corruptor, decoded: DecodedLoss, latents: dict, usable: list[str],
                conditioned: bool, device, rng: np.random.Generator, losses: list[float],
                adversary: Adversary | None = None, progress: float = 0.0) -> None:
    """One AdamW step on a fresh batch of corrupted crops, then (with an ``adversary``) one discriminator step on
    the same decoded pixels; appends the denoiser's loss to ``losses``. ``progress`` (0 → 1) sets the cosine
    learning rate: the share of the steps, or of ``max_minutes``, already spent, whichever is larger."""
    xs, ts, x0s, ws, cs = [], [], [], [], []
    unrolled = a.unrolled_fraction > 0 and a.loss in DECODED_LOSSES and rng.random() < a.unrolled_fraction
    for _ in range(a.batch_size):
        z, sens = latents[usable[rng.integers(len(usable))]]
        xt, t, x0, steps = corr.sample(_crop(z, a.crop, rng), sens, quantized=unrolled)
        xs.append(xt), ts.append(t), x0s.append(x0)
        ws.append(corr.weights(sens, "latent" if a.loss in DECODED_LOSSES else a.loss))
        if conditioned:
            cs.append(corr.condition(steps, xt.shape[-2:]))
    xt = torch.from_numpy(np.stack(xs)).to(device)
    inp = torch.cat([xt, torch.from_numpy(np.stack(cs)).to(device)], 1) if conditioned else xt
    x0 = torch.from_numpy(np.stack(x0s)).to(device)
    w = torch.from_numpy(np.stack(ws)).to(device)[:, :, None, None]
    lr = a.lr * min(1.0, (it + 1) / max(1, a.steps // 20)) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    for g in opt.param_groups:
        g["lr"] = lr
    ab = torch.from_numpy(corr.ac[np.asarray(ts)]).float().to(device)[:, None, None, None]
    goal = target(a.prediction, xt, x0, ab)
    pred = unet(inp, torch.tensor(ts, device=device)).sample
    fake = real = None  # decoded pixels in [0, 1], for the adversary (which needs a decoded loss)
    if a.loss in DECODED_LOSSES:
        x0_hat = x0_from(a.prediction, pred, xt, ab)
        if unrolled:
            x0_hat = _second_step(a, unet, corr, x0_hat, xt, ts, ab, inp[:, xt.shape[1]:], rng)
        loss, fake, real = decoded.with_pixels(x0_hat, x0)
        if adversary is not None and it >= a.disc_warmup:
            loss = loss + adversary.generator_term(fake)
    else:
        loss = (w * (pred - goal) ** 2).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
    opt.step()
    losses.append(float(loss.detach()))
    if adversary is not None:
        adversary.step(real, fake)


def _second_step(a, unet, corr: Corruptor, x0_hat: torch.Tensor, xt: torch.Tensor, ts: list[int],
                 ab: torch.Tensor, cond: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """The realistic sampler's second step (K = 2, eta = 1: ``refine.sampling_timesteps``), trained through: fresh
    seeded noise after the first estimate, then the network again at the lower timestep. Examples whose grid has
    one step keep their first estimate. Why: the stochastic steps left noise the model never learned to finish
    (docs/refinement.md); trained on its own samples, the second step is what it learns."""
    from latentarc.codec.refine import sampling_timesteps

    sched = corr.grid_scheduler()
    t2 = [(g[1] if len(g) > 1 else 0) for g in (sampling_timesteps(sched, t, 2) for t in ts)]
    two = torch.tensor([t > 0 for t in t2], device=xt.device)
    if not bool(two.any()):
        return x0_hat
    ab2 = torch.from_numpy(corr.ac[np.maximum(np.asarray(t2), 0)]).float().to(xt.device)[:, None, None, None]
    noise = torch.from_numpy(rng.standard_normal(xt.shape).astype(np.float32)).to(xt.device)
    x2 = ddim_eta1_step(xt, x0_hat, ab, torch.where(two[:, None, None, None], ab2, torch.ones_like(ab2)), noise)
    inp = torch.cat([x2, cond], 1) if cond.shape[1] else x2
    out = unet(inp, torch.tensor([max(t, 1) for t in t2], device=xt.device)).sample
    second = x0_from(a.prediction, out, x2, ab2)
    return torch.where(two[:, None, None, None], second, x0_hat)


@dataclass(frozen=True)
class RefinerTrainConfig:
    """What ``train-refiner`` trains, on what, for how long (the CLI builds it: :func:`config_from_args`)."""

    out: str
    images: str = str(DEFAULT_TRAIN)
    held_out: str = str(DEFAULT_HELD_OUT)
    steps: int = 2000
    batch_size: int = 16
    lr: float = 2e-4
    crop: int = 32  # latents
    channels: tuple[int, ...] = (64, 128, 128)
    layers: int = 1
    limit: int | None = None
    max_side: int | None = 1024
    holdout_every: int = 5
    probes: int = 2
    cache: str | None = None
    seed: int = 0
    log_every: int = 100
    loss: str = "pixel"
    ssim_weight: float = 1.0
    lpips_weight: float = 1.0
    dists_weight: float = 0.0  # > 0: add W × DISTS to a decoded loss
    detail_weight: float = 0.0  # > 0: add W × the local detail-energy loss (codec.metrics.detail_loss)
    adversarial_weight: float = 0.0  # > 0: train a patch discriminator beside the denoiser (decoded losses only)
    disc_steps: int = 1  # discriminator updates per denoiser step
    disc_width: int = 32  # its first layer's channels (doubling per layer)
    disc_layers: int = 3  # its stride-2 layers: 3 → 38-px patches, 4 → 78
    disc_lr: float | None = None  # None: the denoiser's --lr
    disc_warmup: int = 0  # first N steps: the discriminator learns, the denoiser gets no adversarial term yet
    base_steps: tuple[float, float] | None = None  # None: BASE_STEP_RANGE
    save_every: int = 0
    max_minutes: float | None = None  # stop after M minutes of training (the cosine schedule ends there too)
    unrolled_fraction: float = 0.0  # share of batches trained through the realistic sampler's two steps
    name: str = "tae-f2-denoiser"  # written into config.json and the card
    codec: str = "tae-f2"  # the model (registry name) whose latents it denoises and whose decoder it is bound to
    threads: int | None = None
    prediction: str = "v_prediction"
    condition: str = "steps"
    init: str | None = None
    quantized_fraction: float = 0.5
    dtype: str = "float16"
    weights: str | None = None
    device: str | None = None

    def __post_init__(self):
        b = self.base_steps
        if b is not None and (len(b) != 2 or not 0 < b[0] <= b[1]):
            raise ValueError(f"base steps must be LO,HI with 0 < LO ≤ HI, got {b}")
        for label, w in (("DISTS", self.dists_weight), ("detail", self.detail_weight)):
            if w < 0 or (w and self.loss not in DECODED_LOSSES):
                raise ValueError(f"the {label} weight must be ≥ 0 and needs a decoded loss (it compares pixels)")
        if self.adversarial_weight < 0 or (self.adversarial_weight and self.loss not in DECODED_LOSSES):
            raise ValueError("the adversarial weight must be ≥ 0 and needs a decoded loss (the discriminator sees "
                             "pixels)")
        if self.disc_steps < 1 or self.disc_width < 1 or not 1 <= self.disc_layers <= 6 or self.disc_warmup < 0 \
                or (self.disc_lr is not None and self.disc_lr <= 0):
            raise ValueError("discriminator: steps ≥ 1, width ≥ 1, layers 1–6, warm-up ≥ 0 and lr > 0")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"--max-minutes must be > 0, got {self.max_minutes}")
        if not 0.0 <= self.unrolled_fraction <= 1.0 or (self.unrolled_fraction and self.loss not in DECODED_LOSSES):
            raise ValueError("--unrolled-fraction must be in [0, 1] and needs a decoded loss")


def config_from_args(a) -> RefinerTrainConfig:
    base = tuple(float(v) for v in a.base_steps.split(",")) if a.base_steps else None
    return RefinerTrainConfig(
        out=a.out, images=a.images, held_out=a.held_out, steps=a.steps, batch_size=a.batch_size, lr=a.lr,
        crop=a.crop, channels=tuple(int(c) for c in a.channels.split(",")), layers=a.layers, limit=a.limit,
        max_side=a.max_side, holdout_every=a.holdout_every, probes=a.probes, cache=a.cache, seed=a.seed,
        log_every=a.log_every, loss=a.loss, ssim_weight=a.ssim_weight, lpips_weight=a.lpips_weight,
        dists_weight=a.dists_weight, detail_weight=a.detail_weight, adversarial_weight=a.adversarial_weight,
        disc_steps=a.disc_steps, disc_width=a.disc_width, disc_layers=a.disc_layers, disc_lr=a.disc_lr,
        disc_warmup=a.disc_warmup,
        base_steps=base,
        save_every=a.save_every, max_minutes=a.max_minutes, name=a.name, codec=a.codec,
        unrolled_fraction=a.unrolled_fraction,
        threads=a.threads,
        prediction=a.prediction, condition=a.condition, init=a.init,
        quantized_fraction=a.quantized_fraction, dtype=a.dtype, weights=a.weights, device=a.device)


def train(a: RefinerTrainConfig) -> dict:
    from safetensors.torch import save_file

    from latentarc.codec.models import load_model

    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    src = Path(a.images)
    paths = training_files(src, a.held_out)  # refuses the held-out evaluation photos, by path or by content
    if a.limit:
        paths = paths[: a.limit]
    names = [p.relative_to(src).as_posix() for p in paths]
    # a fine-tune keeps its parent's validation images; a new model takes every --holdout-every-th
    hold = inherited_split(names, Path(a.init)) if a.init else validation_split(names, a.holdout_every)
    train_names = [n for n in names if n not in hold]
    if not train_names:
        raise ValueError(f"no training images in {src}")
    t0 = time.perf_counter()
    model = load_model(a.codec, weights=a.weights, device=device)
    cache = Path(a.cache) if a.cache else Path.home() / ".cache" / "latentarc" / "refiner-latents"
    latents = encode_latents(paths, model, a.max_side, cache, a.probes, root=src)
    encode_s = time.perf_counter() - t0
    usable = [n for n in train_names if min(latents[n][0].shape[1:]) >= a.crop]
    if not usable:
        raise ValueError(f"no training latent is at least {a.crop}x{a.crop}; lower --crop or raise --max-side")
    if a.init:
        unet, sched, mean, std, conditioned, init_cfg = load_init(Path(a.init))
        unet = unet.to(device)
        a = replace(a, prediction=sched.config.prediction_type)
        stats_from = "the parent's"
        if init_cfg.get("decoder_sha256") != model.fingerprint:
            # another model's latents (e.g. tae-f2-ft's: offsets of several σ, 1.7× the spread): the network starts
            # from the parent, the normalisation is this latent space's, so its inputs are distributed as it learnt
            mean, std = latent_stats(latents, train_names)
            stats_from = f"recomputed on {a.codec}'s training latents (the parent was trained for another decoder)"
            print(f"--init {a.init} was trained for another decoder: latent statistics recomputed for {a.codec}",
                  flush=True)
    else:
        mean, std = latent_stats(latents, train_names)
        stats_from = "its training latents'"
        sched = make_scheduler(a.prediction)
        channels = a.channels
        conditioned = a.condition == "steps"
        unet = make_unet(channels, a.layers, a.crop, latents[usable[0]][0].shape[0], conditioned).to(device)
        init_cfg = None
    opt = torch.optim.AdamW(unet.parameters(), lr=a.lr, weight_decay=1e-4)
    base_steps = a.base_steps or BASE_STEP_RANGE
    corr = Corruptor(sched, mean, std, rng, a.quantized_fraction, base_steps)
    decoded = DecodedLoss(model, mean, std, device, ssim_weight=a.ssim_weight if a.loss == "decoded-ssim" else 0.0,
                          lpips_weight=a.lpips_weight if a.loss == "decoded-lpips" else 0.0,
                          dists_weight=a.dists_weight, detail_weight=a.detail_weight)
    adversary = (Adversary(a.adversarial_weight, device, lr=a.disc_lr or a.lr, width=a.disc_width,
                           layers=a.disc_layers, steps=a.disc_steps) if a.adversarial_weight else None)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    losses, start, trained_s = [], 0, 0.0
    ck = load_checkpoint(out)
    if ck is not None:  # same folder, same arguments: continue the same run (``--steps`` is the total)
        unet.load_state_dict(ck["unet"])
        opt.load_state_dict(ck["optimizer"])
        if adversary is not None:
            adversary.load(ck["adversary"])
        restore_rng(ck["rng"], rng)
        start, trained_s, losses = ck["step"], ck["seconds"], ck["losses"]
        print(f"resuming {out} at step {start} ({trained_s:.0f} s trained)", flush=True)
    stop = {"signal": None}
    previous = signal.signal(signal.SIGTERM, lambda signum, _frame: stop.update(signal=signum))
    t1, t_saved = time.perf_counter(), time.perf_counter()
    it = start

    def checkpoint():
        nonlocal t_saved
        save_checkpoint(out, {"step": it, "unet": unet.state_dict(), "optimizer": opt.state_dict(),
                              "rng": rng_state(rng), "seconds": trained_s + time.perf_counter() - t1,
                              "losses": losses, "adversary": adversary.state() if adversary else None})
        t_saved = time.perf_counter()

    unet.train()
    try:
        budget = None if a.max_minutes is None else 60 * a.max_minutes
        while it < a.steps and stop["signal"] is None:
            progress = it / max(1, a.steps)
            if budget is not None:
                spent = time.perf_counter() - t1
                if spent >= budget:
                    print(f"--max-minutes {a.max_minutes:g} reached at step {it}", flush=True)
                    break
                progress = max(progress, spent / budget)
            _train_step(a, it, unet, opt, corr, decoded, latents, usable, conditioned, device, rng, losses,
                        adversary, progress)
            it += 1
            if a.log_every and it % a.log_every == 0:
                adv = f" (D {adversary.last['d']:.3f}, G {adversary.last['g']:.3f})" if adversary else ""
                print(f"step {it}/{a.steps} loss {np.mean(losses[-a.log_every:]):.5f}{adv} "
                      f"({trained_s + time.perf_counter() - t1:.0f} s)", flush=True)
            if a.save_every and (it % a.save_every == 0 or time.perf_counter() - t_saved > 600):
                checkpoint()
    finally:
        if a.save_every or stop["signal"] is not None:
            checkpoint()
        signal.signal(signal.SIGTERM, previous)
    if stop["signal"] is not None:
        print(f"stopped by signal {stop['signal']} at step {it}; checkpoint saved in {out}", flush=True)
        return {"stopped_at": it}
    train_s = trained_s + time.perf_counter() - t1
    unet.eval()
    if a.dtype == "float16":  # validate exactly the weights that are stored
        with torch.no_grad():
            for t in unet.state_dict().values():
                if t.is_floating_point():
                    t.copy_(t.half().float())
    val = validate(unet, corr, latents, hold, a.crop, device, a.loss, conditioned, decoded)
    store = torch.float16 if a.dtype == "float16" else torch.float32
    save_file({k: (v.to(store) if v.is_floating_point() else v).detach().cpu().contiguous()
               for k, v in unet.state_dict().items()}, str(out / "model.safetensors"))
    final = float(np.mean(losses[-max(1, min(50, len(losses))):]))
    from latentarc.codec.weights import sha256_file

    cfg = {
        "name": a.name,
        "codec": a.codec,
        "decoder_sha256": model.fingerprint,
        "model_sha256": sha256_file(out / "model.safetensors"),  # checked on every load
        "unet": {k: v for k, v in dict(unet.config).items()},
        "scheduler": dict(sched.config),
        "latent_mean": mean.tolist(),
        "latent_std": std.tolist(),
        "latent_stats": stats_from,  # whose mean and spread normalise its inputs
        "prediction": a.prediction,
        "condition": STEP_CONDITION if conditioned else None,
        "data": str(src),
        "max_side": a.max_side,
        "trained_on": train_names,
        "held_out": hold,
        "holdout_rule": (f"the held-out files of {a.init} present here" if a.init
                         else f"every {a.holdout_every}th file in name order"),
        "evaluation_photos_refused": str(a.held_out),
        "steps": it,
        "init": ({"from": str(a.init), "steps": init_cfg.get("steps"), "loss": init_cfg.get("loss"),
                  "train_seconds": init_cfg.get("train_seconds"), "init": init_cfg.get("init")}
                 if init_cfg else None),
        "quantized_fraction": a.quantized_fraction,
        "batch_size": a.batch_size,
        "dtype": a.dtype,
        "crop": a.crop,
        "lr": a.lr,
        "loss": a.loss,
        "ssim_weight": a.ssim_weight if a.loss == "decoded-ssim" else None,
        "lpips_weight": a.lpips_weight if a.loss == "decoded-lpips" else None,
        "dists_weight": a.dists_weight or None,
        "detail_weight": a.detail_weight or None,
        "adversarial_weight": a.adversarial_weight or None,
        "discriminator": ({"steps": a.disc_steps, "width": a.disc_width, "layers": a.disc_layers,
                           "patch_px": patch_size(a.disc_layers), "lr": a.disc_lr or a.lr, "warmup": a.disc_warmup}
                          if a.adversarial_weight else None),
        "unrolled_fraction": a.unrolled_fraction or None,
        "base_steps": list(base_steps),
        "seed": a.seed,
        "device": str(device),
        "encode_seconds": round(encode_s, 1),
        "train_seconds": round(train_s, 1),
        "final_loss": final,
        "validation": val,
    }
    (out / "config.json").write_text(json.dumps(cfg, indent=2, default=list))
    (out / "CARD.md").write_text(_card(cfg))
    print(f"trained {it} steps in {train_s:.0f} s (+{encode_s:.0f} s encoding) on {device}; "
          f"final loss {final:.5f}; validated on {len(hold)} images → {out}")
    for k, v in val.items():
        print(f"  validation {k}: latent MSE {v['mse_dequantized']:.5f} dequantized → {v['mse_denoised']:.5f} denoised; "
              f"decoded PSNR {v['psnr_dequantized']:.2f} → {v['psnr_denoised']:.2f} dB")
    return cfg


LOSS_TEXT = {
    "pixel": "MSE to the {target} target, channels weighted by decoder sensitivity × σ_c² (mean 1)",
    "latent": "flat MSE to the {target} target",
    "decoded-lpips": "pixel MSE plus {lpips_weight} × LPIPS (AlexNet) through the frozen {codec} decoder, D(x̂_0) "
                     "against D(x_0) (the {target} output converted to x̂_0)",
    "decoded-ssim": "pixel MSE plus (1 − SSIM) through the frozen {codec} decoder, D(x̂_0) against D(x_0) (the "
                    "{target} output converted to x̂_0)",
    "decoded": "pixel MSE through the frozen {codec} decoder, D(x̂_0) against D(x_0) (the {target} output "
               "converted to x̂_0)",
}


def _init_text(c: dict) -> str:
    """The chain of runs a fine-tune started from, newest first (:func:`lineage`)."""
    parts = [f"`{i['from']}` ({i['steps']} steps, {i['loss']} loss, {i['train_seconds']} s)"
             for i in reversed(lineage(c.get("init")))]
    return f"fine-tuned from {', itself from '.join(parts)}, then " if parts else ""


def _pixel_terms_text(c: dict) -> str:
    """The card's words for the terms added to a decoded loss (DISTS, detail energy)."""
    w = c.get("dists_weight")
    d = c.get("detail_weight")
    return ((f", plus {w} × DISTS (VGG16 structure and texture terms) on the same decoded pixels" if w else "")
            + (f", plus {d} × the local detail-energy loss (squared log ratio of the luma's gradient energy in "
               "16-px blocks over 3 octaves, `codec.metrics.detail_loss`)" if d else ""))


def _adversary_text(c: dict) -> str:
    w, u = c.get("adversarial_weight"), c.get("unrolled_fraction")
    d = c.get("discriminator") or {"steps": 1, "width": 32, "patch_px": 38, "warmup": 0}  # older configs: the default
    lr = f", lr {d['lr']:g}" if d.get("lr") else ""
    warm = f", the first {d['warmup']} steps without the term" if d["warmup"] else ""
    text = (f", plus {w} × a hinge adversarial term from a patch discriminator (spectral norm, {d['patch_px']}-px "
            f"patches, width {d['width']}, {d['steps']} update(s) per denoiser step{lr}{warm}) "
            "trained beside it on decoded clean against decoded denoised crops") if w else ""
    return text + (f"; {u:.0%} of the batches are trained through the realistic sampler's two steps (the codec's "
                   "state at t*, the network, fresh noise, the network again), the loss on the second estimate"
                   if u else "")


def _names(names: list[str], most: int = 12) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more (config.json)" if len(names) > most else "")


def _card(c: dict) -> str:
    sets = terms_lines(image_sets(c["trained_on"]), Path(c["data"]))
    loss = (LOSS_TEXT[c["loss"]].format(target=c["prediction"], lpips_weight=c.get("lpips_weight"),
                                        codec=c.get("codec", "tae-f2"))
            + _pixel_terms_text(c) + _adversary_text(c))
    rows = "\n".join(f"| {k} | {v['mse_dequantized']:.5f} | {v['mse_denoised']:.5f} | "
                     f"{v.get('psnr_dequantized', float('nan')):.2f} | {v.get('psnr_denoised', float('nan')):.2f} | "
                     f"{v['images']} |" for k, v in c["validation"].items())
    return f"""# {c.get('name', 'tae-f2-denoiser')}

Latent denoiser for `latentarc decode --refine` with the `{c.get('codec', 'tae-f2')}` codec (codec/refine.py, Backend B), for the
decoder with SHA-256 `{c.get('decoder_sha256', 'unrecorded')}` (refinement refuses streams of another decoder):
a diffusers `UNet2DModel` (blocks {c['unet']['block_out_channels']}, {c['unet']['layers_per_block']} layer(s)
per block), timestep-conditioned{' and step-map-conditioned (' + c['condition'] + ')' if c.get('condition') else ''}, predicting `{c['prediction']}` in per-channel normalised latent units (statistics: {c.get('latent_stats', 'unrecorded')}), DDIM
schedule (scaled_linear, 1000 steps).

* Data: {len(c['trained_on'])} photos from `{c['data']}` (longer side ≤ {c['max_side']} px), random
  {c['crop']}×{c['crop']} latent crops. Its sets, whose terms the weights inherit:
{sets}
* Validation ({c['holdout_rule']}, never trained on): {_names(c['held_out'])}. The evaluation photos in
  `{c.get('evaluation_photos_refused', '../shared/data/photos')}` are refused as training data (by path and by content).
* Corruption: the codec's own adaptive quantization at log-uniform base steps {c.get('base_steps', BASE_STEP_RANGE)[0]}–{c.get('base_steps', BASE_STEP_RANGE)[1]}
  at the matched timestep t* ({c.get('quantized_fraction', 0.5):.0%} of samples), otherwise Gaussian noise at t ~ U[1, t*].
* Loss: {loss}.
* Training: {_init_text(c)}{c['steps']} AdamW steps of batch {c['batch_size']}, lr {c['lr']}, seed {c['seed']}, on {c['device']};
  {c['train_seconds']} s training (+{c['encode_seconds']} s encoding). Final loss (mean of the last steps): {c['final_loss']:.5f}.
  Weights stored as {c.get('dtype', 'float32')} (the figures below use the stored weights).

Validation weighted latent MSE (the loss's weights, normalised units, centre crop, one x_0 prediction at t*):

PSNR: both decoded through the frozen decoder, against the clean latent's decode.

| base step | dequantized | denoised | PSNR dequantized | PSNR denoised | images |
| --- | --- | --- | --- | --- | --- |
{rows}
"""


def run_train_refiner(a) -> int:
    train(config_from_args(a))
    return 0
