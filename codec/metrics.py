"""Quality metrics on restored pixels, in the original's bit depth (peak 255 or 65535), and the registry
:data:`METRICS` that floors and benches measure through (name → :class:`Metric`)."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F


def _same_shape(reference: np.ndarray, test: np.ndarray) -> None:
    if reference.shape != test.shape:
        raise ValueError(f"shape mismatch {reference.shape} vs {test.shape}")


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """PSNR in dB; ``inf`` for identical arrays. Peak follows the dtype (uint8: 255, uint16: 65535)."""
    _same_shape(reference, test)
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


# ------------------------------------------------------------------------------------------ perceptual (LPIPS, DISTS)
# Both networks follow ``models/perceptual/README.md`` (LPIPS v0.1 AlexNet, Zhang et al. 2018; DISTS, Ding et al.
# 2020), written with torch.nn.functional on a dict of tensors: no module state, so one loaded copy serves every
# thread. Inputs are RGB in [0, 1]; grey is replicated to three channels, alpha is ignored.
#
# Tiling (bounded memory, exact): a full-resolution feature map of a 24 MP photo is gigabytes (VGG16's first stage
# alone is 64 float32 planes), so both metrics run the network on tiles and sum per-tap statistics over each tile's
# *core*. Every tile starts on a multiple of 16 px (the deepest stride of both networks), so its feature grid is
# the full image's grid shifted by a whole number of cells, and it carries ``margin`` px of context on every side
# that has image there — more than the receptive-field radius (AlexNet conv5: 163 px field; VGG16 relu5_3 with
# L2 pooling: 211 px), so core features equal the untiled ones. LPIPS is a spatial mean per tap and DISTS needs
# only per-channel sums (Σx, Σy, Σx², Σy², Σxy) per stage, so summing cores over the tiles (in float64) gives the
# untiled value up to float rounding (~1e-6), deterministically, for any tile size.
from .registry import Registry  # noqa: E402
from .weights import WeightFile, resolve  # noqa: E402

_PERCEPTUAL_URL = "https://github.com/latentarc/latentarc/releases/download/weights-v1/"
LPIPS_WEIGHTS = WeightFile(
    "lpips_alex_v0.1.safetensors",
    _PERCEPTUAL_URL + "lpips_alex_v0.1.safetensors",
    "958072034460d1ad7d3c982f12af3076735e481f336ea9be86bb3740297b2b88",
    subdir="perceptual",
)
DISTS_WEIGHTS = WeightFile(
    "dists_vgg16_fp16.safetensors",
    _PERCEPTUAL_URL + "dists_vgg16_fp16.safetensors",
    "7e36d90cf9c1bdada75b6aaac7d9a00d5cb099c9de88f91d7150059ce7d8213f",
    subdir="perceptual",
)

#: shortest side both metrics accept: below 32 px AlexNet's second max-pool has nothing left to pool
PERCEPTUAL_MIN_SIDE = 32
#: tile core (px, a multiple of 16) and context margin of the tiled evaluation; see the comment above
PERCEPTUAL_TILE = 512
_ALIGN = 16
_LPIPS_MARGIN = 96
_DISTS_MARGIN = 128

_NETS: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
_NETS_LOCK = threading.Lock()


def _weights(which: WeightFile, device: torch.device) -> dict[str, torch.Tensor]:
    """The verified tensors of ``which`` as float32 on ``device``, loaded once per process."""
    key = (which.filename, str(device))
    with _NETS_LOCK:
        if key not in _NETS:
            from safetensors.torch import load_file

            from .errors import ModelError

            path = resolve(which)
            try:
                raw = load_file(str(path))
            except Exception as e:  # noqa: BLE001 - a damaged file is one typed error
                raise ModelError(f"{path}: not a loadable safetensors file ({type(e).__name__})") from None
            _NETS[key] = {k: v.to(device=device, dtype=torch.float32) for k, v in raw.items()}
        return _NETS[key]


def _unit_rgb(a: np.ndarray) -> np.ndarray:
    """HxW or HxWxC (C = 1–4; alpha dropped) → HxWx3 view/copy in the input dtype; checks the layout."""
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"expected HxW or HxWxC (C ≤ 4), got shape {a.shape}")
    a = a[..., :1] if a.shape[2] in (1, 2) else a[..., :3]
    return np.broadcast_to(a, (*a.shape[:2], 3)) if a.shape[2] == 1 else a


def _tensor(a: np.ndarray, device: torch.device) -> torch.Tensor:
    """A tile of an HxWx3 array → 1x3xHxW float32 in [0, 1] (uint8 / 255, uint16 / 65535, floats as given)."""
    x = a.astype(np.float32)
    if a.dtype == np.uint8:
        x /= 255.0
    elif a.dtype == np.uint16:
        x /= 65535.0
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None].to(device)


def _spans(n: int, core: int, margin: int) -> list[tuple[int, int, int, int]]:
    """Tiles along one axis: (start, stop, core_start, core_stop); starts are multiples of ``_ALIGN``."""
    return [(max(0, a - margin), min(n, a + core + margin), a, min(n, a + core)) for a in range(0, n, core)]


def _core(start: int, core_start: int, core_stop: int, n: int, stride: int, size: int) -> slice:
    """The local indices of a tile's feature map (``size`` cells, ``stride`` px each) that its core owns."""
    stop = size if core_stop == n else (core_stop - start) // stride
    return slice((core_start - start) // stride, stop)


def _tiled(reference: np.ndarray, test: np.ndarray, tile: int, margin: int, device, features, strides, accumulate):
    """Run ``features`` (1×2 batch → list of maps) over aligned tiles; ``accumulate(k, x, y)`` gets the core cells
    of map ``k`` (stride ``strides[k]``) of the reference (x) and the test (y)."""
    _same_shape(reference, test)
    if tile <= 0 or tile % _ALIGN:
        raise ValueError(f"tile must be a positive multiple of {_ALIGN}, got {tile}")
    ref, tst = _unit_rgb(reference), _unit_rgb(test)
    h, w = ref.shape[:2]
    with torch.inference_mode():
        for y0, y1, cy0, cy1 in _spans(h, tile, margin):
            for x0, x1, cx0, cx1 in _spans(w, tile, margin):
                batch = torch.cat([_tensor(ref[y0:y1, x0:x1], device), _tensor(tst[y0:y1, x0:x1], device)])
                for k, f in enumerate(features(batch)):
                    s = strides[k]
                    ys = _core(y0, cy0, cy1, h, s, f.shape[2])
                    xs = _core(x0, cx0, cx1, w, s, f.shape[3])
                    if ys.start < min(ys.stop, f.shape[2]) and xs.start < min(xs.stop, f.shape[3]):
                        accumulate(k, f[0:1, :, ys, xs], f[1:2, :, ys, xs])


def _measurable(reference: np.ndarray, test: np.ndarray) -> bool:
    """True when the pair is big enough for the perceptual networks; ValueError when the shapes differ."""
    _same_shape(reference, test)
    return min(reference.shape[:2]) >= PERCEPTUAL_MIN_SIDE


# --- LPIPS v0.1 (AlexNet) -------------------------------------------------------------------------------------------
_LPIPS_SHIFT = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
_LPIPS_SCALE = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
_LPIPS_STRIDES = (4, 8, 16, 16, 16)


def _alexnet_taps(x: torch.Tensor, w: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    x = (x * 2 - 1 - _LPIPS_SHIFT.to(x.device)) / _LPIPS_SCALE.to(x.device)
    conv = lambda x, i, **kw: F.relu(F.conv2d(x, w[f"alexnet.conv{i}.weight"], w[f"alexnet.conv{i}.bias"], **kw))  # noqa: E731
    t1 = conv(x, 1, stride=4, padding=2)
    t2 = conv(F.max_pool2d(t1, 3, 2), 2, padding=2)
    t3 = conv(F.max_pool2d(t2, 3, 2), 3, padding=1)
    t4 = conv(t3, 4, padding=1)
    return [t1, t2, t3, t4, conv(t4, 5, padding=1)]


def _lpips_cells(k: int, x: torch.Tensor, y: torch.Tensor, w: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-cell weighted distance of tap ``k``: channel-normalised features, squared difference, linear layer."""
    nx = x / (torch.sqrt((x * x).sum(1, keepdim=True)) + 1e-10)
    ny = y / (torch.sqrt((y * y).sum(1, keepdim=True)) + 1e-10)
    return F.conv2d((nx - ny) ** 2, w[f"lpips.lin{k}.weight"])


def lpips_loss(reference: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
    """Differentiable LPIPS per image, shape (B,), of Bx3xHxW tensors in [0, 1] (a training loss: no tiling, the
    whole batch in memory). Same network and value as :func:`lpips` on one untiled image."""
    if reference.shape != test.shape or reference.ndim != 4 or reference.shape[1] != 3:
        raise ValueError(f"expected two Bx3xHxW tensors of one shape, got {tuple(reference.shape)}, "
                         f"{tuple(test.shape)}")
    w = _weights(LPIPS_WEIGHTS, reference.device)
    taps = _alexnet_taps(torch.cat([reference, test]), w)
    b = reference.shape[0]
    return sum(_lpips_cells(k, t[:b], t[b:], w).mean((1, 2, 3)) for k, t in enumerate(taps))


def lpips(reference: np.ndarray, test: np.ndarray, *, device: str | torch.device | None = None,
          tile: int = PERCEPTUAL_TILE) -> float | None:
    """LPIPS v0.1 (AlexNet) distance, 0 = identical (higher = more different; ~0.01 at JPEG q90, ~0.3 at q10).

    Arrays as for :func:`psnr` (HxW grey or HxWx3/4, uint8 or uint16; float arrays are taken as [0, 1]).
    Evaluated in exact aligned tiles of ``tile`` px (bounded memory, same value for any tile size up to float
    rounding; see the module comment). None when the short side is under :data:`PERCEPTUAL_MIN_SIDE` px.
    """
    if not _measurable(reference, test):
        return None
    device = torch.device(device or "cpu")
    w = _weights(LPIPS_WEIGHTS, device)
    sums = np.zeros(5)
    counts = np.zeros(5)

    def accumulate(k, x, y):
        d = _lpips_cells(k, x, y, w)
        sums[k] += float(d.double().sum())
        counts[k] += d.numel()

    _tiled(reference, test, tile, _LPIPS_MARGIN, device, lambda b: _alexnet_taps(b, w), _LPIPS_STRIDES, accumulate)
    return float(np.sum(sums / counts))


# --- DISTS (VGG16 with L2 pooling) ----------------------------------------------------------------------------------
_DISTS_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
_DISTS_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
_DISTS_STAGES = ((), ("1_1", "1_2"), ("2_1", "2_2"), ("3_1", "3_2", "3_3"), ("4_1", "4_2", "4_3"), ("5_1", "5_2", "5_3"))
_DISTS_STRIDES = (1, 1, 2, 4, 8, 16)
_HANN = torch.tensor([0.5, 1.0, 0.5])  # np.hanning(5)[1:-1]


def _l2pool(x: torch.Tensor) -> torch.Tensor:
    g = _HANN[:, None] * _HANN[None, :]
    g = (g / g.sum()).to(x.device).expand(x.shape[1], 1, 3, 3)
    return torch.sqrt(F.conv2d(x * x, g, stride=2, padding=1, groups=x.shape[1]) + 1e-12)


def _vgg_stages(x: torch.Tensor, w: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    out = [x]
    h = (x - _DISTS_MEAN.to(x.device)) / _DISTS_STD.to(x.device)
    for k, convs in enumerate(_DISTS_STAGES[1:]):
        if k:
            h = _l2pool(h)
        for c in convs:
            h = F.relu(F.conv2d(h, w[f"vgg16.conv{c}.weight"], w[f"vgg16.conv{c}.bias"], padding=1))
        out.append(h)
    return out


def dists(reference: np.ndarray, test: np.ndarray, *, device: str | torch.device | None = None,
          tile: int = PERCEPTUAL_TILE) -> float | None:
    """DISTS distance, 0 = identical (higher = more different; ~0.07 at JPEG q90, ~0.3 at q10).

    Arrays as for :func:`lpips`. The per-channel means, variances and covariance are global over the image;
    they come from float64 sums over exact aligned tiles (see the module comment), so tiling changes nothing
    but float rounding. None when the short side is under :data:`PERCEPTUAL_MIN_SIDE` px.
    """
    if not _measurable(reference, test):
        return None
    device = torch.device(device or "cpu")
    w = _weights(DISTS_WEIGHTS, device)
    # per stage: [Σx, Σy, Σx², Σy², Σxy] per channel, and the cell count
    moments: list[torch.Tensor | None] = [None] * len(_DISTS_STAGES)
    counts = [0] * len(_DISTS_STAGES)

    def accumulate(k, x, y):
        x, y = x[0].flatten(1).double(), y[0].flatten(1).double()
        m = torch.stack([x.sum(1), y.sum(1), (x * x).sum(1), (y * y).sum(1), (x * y).sum(1)])
        moments[k] = m if moments[k] is None else moments[k] + m
        counts[k] += x.shape[1]

    _tiled(reference, test, tile, _DISTS_MARGIN, device, lambda b: _vgg_stages(b, w), _DISTS_STRIDES, accumulate)
    s1, s2 = [], []
    c1 = c2 = 1e-6
    for m, n in zip(moments, counts):
        mx, my, exx, eyy, exy = m / n
        vx, vy, cxy = exx - mx * mx, eyy - my * my, exy - mx * my
        s1.append((2 * mx * my + c1) / (mx * mx + my * my + c1))
        s2.append((2 * cxy + c2) / (vx + vy + c2))
    alpha, beta = w["dists.alpha"].flatten().double(), w["dists.beta"].flatten().double()
    total = alpha.sum() + beta.sum()
    return float(1 - ((alpha * torch.cat(s1)).sum() + (beta * torch.cat(s2)).sum()) / total)


# --- registry -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Metric:
    """One quality figure: how to compute it, which way is better, what an exact restore scores, and the weight
    file it needs (checked before a job starts)."""

    name: str
    label: str
    score: Callable[..., float | None]  # (reference, test) -> figure, or None where it cannot be measured
    higher_is_better: bool
    exact: float  # the figure of a restore identical to the original
    weights: "WeightFile | None" = None
    uses_device: bool = False  # takes ``device=`` (the perceptual networks)

    def check_weights(self) -> None:
        """Resolve and hash-check the weight file, if any, without loading it (``WeightsNotFound`` /
        ``WeightsChecksumMismatch``): jobs call it before their first image."""
        if self.weights is not None:
            resolve(self.weights)

    def __call__(self, reference: np.ndarray, test: np.ndarray, *, device=None) -> float | None:
        if self.uses_device:
            return self.score(reference, test, device=device)
        return self.score(reference, test)


METRICS: Registry[Metric] = Registry("metric", error=ValueError)
for _m in (Metric("psnr", "PSNR", psnr, True, math.inf),
           Metric("ms_ssim", "MS-SSIM", ms_ssim, True, 1.0),
           Metric("lpips", "LPIPS", lpips, False, 0.0, LPIPS_WEIGHTS, True),
           Metric("dists", "DISTS", dists, False, 0.0, DISTS_WEIGHTS, True)):
    METRICS.add(_m.name, _m)
#: the order every table lists them in
METRIC_ORDER = ("psnr", "ms_ssim", "lpips", "dists")


def measure(reference: np.ndarray, test: np.ndarray, names, *, device=None) -> dict[str, float | None]:
    """``{name: figure}`` for each metric named (registry names), in :data:`METRIC_ORDER`."""
    wanted = set(names)
    return {n: METRICS.get(n)(reference, test, device=device) for n in METRIC_ORDER if n in wanted}
