"""Quality metrics on restored pixels, in the original's bit depth (peak 255 or 65535), and the registry
:data:`METRICS` that floors and benches measure through (name → :class:`Metric`)."""

from __future__ import annotations

import math
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, Iterator

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
        return x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[None]  # float32: 7× faster than float64, ±1e-7

    short = min(reference.shape[:2])
    if short < 11:
        return None
    a, b = t(reference), t(test)
    if short < 161:
        return float(_ss(a, b, data_range=1.0))
    return float(_ms(a, b, data_range=1.0))


LUMA = (0.299, 0.587, 0.114)  # Rec. 601 weights: the luma the sharpness figures are measured on


def gradient_energy(planes: np.ndarray) -> float:
    """Mean squared finite difference of the luma (or the single plane) on a [0, 1] scale: how much fine
    detail an image carries. Needs no reference, so it measures what a generative decoder *adds*."""
    peak = 65535.0 if planes.dtype == np.uint16 else 255.0
    x = planes.astype(np.float64) / peak
    if x.ndim == 3:
        x = x[..., :3] @ np.array(LUMA)[: x.shape[2]] if x.shape[2] >= 3 else x.mean(axis=2)
    if min(x.shape) < 2:
        return 0.0
    return float(np.mean(np.diff(x, axis=0) ** 2) + np.mean(np.diff(x, axis=1) ** 2))


def sharpness_ratio(reference: np.ndarray, test: np.ndarray) -> float | None:
    """Gradient energy of ``test`` relative to ``reference``: 1 = as sharp as the original, below 1 = blurred,
    above 1 = more (possibly invented) texture. None for a flat reference."""
    ref = gradient_energy(reference)
    return gradient_energy(test) / ref if ref > 0 else None


def closer_to_one(ratio: float, base: float) -> bool:
    """Whether sharpness ``ratio`` is strictly closer to 1 (the original's detail) than ``base``: the realism
    check's sharpness test, one definition for the encoder's choice and the bench."""
    return abs(1 - ratio) < abs(1 - base)


def _window_energy(luma: torch.Tensor, window: int) -> torch.Tensor:
    """:func:`gradient_energy` of every non-overlapping ``window``² block of (B, H, W) luma, (B, H//w, W//w)."""
    b, h, w = luma.shape
    x = luma[:, : h - h % window, : w - w % window].reshape(b, h // window, window, w // window, window)
    return (x.diff(dim=2) ** 2).mean((2, 4)) + (x.diff(dim=4) ** 2).mean((2, 4))


def detail_loss(reference: torch.Tensor, test: torch.Tensor, *, window: int = 16, scales: int = 3,
                floor: float = 1e-4) -> torch.Tensor:
    """The sharpness ratio made local and differentiable, per image, shape (B,), of Bx3xHxW tensors in [0, 1]:
    the mean over ``scales`` octaves (luma halved by 2×2 averaging each time) and over their non-overlapping
    ``window``-px blocks of ``log((E_test + floor) / (E_ref + floor))²``, E a block's :func:`gradient_energy`.

    Why: a pointwise loss (MSE, LPIPS) is lowest for the conditional mean, which is blur; this one asks each
    block to carry the original's detail energy, wherever its phase, so texture drawn in the wrong place costs
    nothing and missing or excess texture costs alike (log ratio). ``floor`` keeps flat blocks (sky) from
    demanding energy ratios that noise alone would set. One block per image, one scale and ``floor = 0`` give
    ``log(sharpness_ratio)²``."""
    _batch_pair(reference, test)
    coeffs = torch.tensor(LUMA, dtype=test.dtype, device=test.device).view(1, 3, 1, 1)
    ref, out = (reference * coeffs).sum(1), (test * coeffs).sum(1)
    terms = []
    for s in range(scales):
        if s:
            ref, out = F.avg_pool2d(ref[:, None], 2)[:, 0], F.avg_pool2d(out[:, None], 2)[:, 0]
        if min(ref.shape[1:]) < window:
            break
        with torch.no_grad():
            e_ref = _window_energy(ref, window)
        ratio = torch.log((_window_energy(out, window) + floor) / (e_ref + floor))
        terms.append((ratio ** 2).mean((1, 2)))
    if not terms:
        raise ValueError(f"images of {tuple(test.shape[2:])} px are smaller than one {window}-px block")
    return torch.stack(terms).mean(0)


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
#
# Scoring many tests against one image (a floor search's candidates, a bench's operating points) reuses the
# reference's side: :class:`Reference` keeps each tile's reference core features (DISTS: about 0.5 GB per MP, up
# to ``REFERENCE_CACHE_BYTES``), so every test after the first costs one network pass, not two.
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
#: longest tile core (px, a multiple of 16); a tile is at most this plus a context margin on each side (see
#: :func:`_spans`), which bounds the memory of one network pass (DISTS, 1280×1280 px: about 2 GiB)
PERCEPTUAL_TILE = 1024
#: how much of a reference's core features one :class:`Reference` keeps (beyond it, tiles are recomputed per test)
REFERENCE_CACHE_BYTES = 1 << 30
_ALIGN = 16

_NETS: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
_NETS_LOCK = threading.Lock()


def _weights(which: WeightFile, device: torch.device) -> dict[str, torch.Tensor]:
    """The verified tensors of ``which`` as float32 on ``device`` (conv kernels channels-last, the layout oneDNN
    runs fastest on CPU), loaded once per process."""
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
            _NETS[key] = {k: _channels_last(v.to(device=device, dtype=torch.float32)) for k, v in raw.items()}
        return _NETS[key]


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last) if t.ndim == 4 else t


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
    return _channels_last(torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None].to(device))


def _spans(n: int, tile: int, margin: int) -> list[tuple[int, int, int, int]]:
    """Tiles along one axis, ``(start, stop, core_start, core_stop)``: as few as keep every tile within
    ``tile + 2·margin`` px (one when the axis fits), with balanced cores starting on multiples of ``_ALIGN``, so
    the overlap is the least the memory bound allows."""
    bound = tile + 2 * margin
    if n <= bound:
        return [(0, n, 0, n)]
    k = 2
    while True:
        core = -(-(-(-n // k)) // _ALIGN) * _ALIGN  # ceil(n / k), rounded up to the alignment
        if core + (margin if k == 2 else 2 * margin) <= bound:
            break
        k += 1
    return [(max(0, a - margin), min(n, a + core + margin), a, min(n, a + core)) for a in range(0, n, core)]


def _core(start: int, core_start: int, core_stop: int, n: int, stride: int, size: int) -> slice:
    """The local indices of a tile's feature map (``size`` cells, ``stride`` px each) that its core owns."""
    stop = size if core_stop == n else (core_stop - start) // stride
    return slice((core_start - start) // stride, stop)


def _measurable(reference: np.ndarray, test: np.ndarray) -> bool:
    """True when the pair is big enough for the perceptual networks; ValueError when the shapes differ."""
    _same_shape(reference, test)
    return min(reference.shape[:2]) >= PERCEPTUAL_MIN_SIDE


_F64 = torch.float64


class PerceptualNet(ABC):
    """A perceptual distance computed tile by tile (see the module comment): the feature maps it taps, what it
    keeps of the reference's core cells, the float64 sums one tile's cores add, and the distance the sums give."""

    name: str
    weights: WeightFile
    margin: int  # context px on each side of a tile core: more than the deepest tap's receptive-field radius
    strides: tuple[int, ...]  # px per cell of each tapped map

    @abstractmethod
    def maps(self, x: torch.Tensor, w: dict[str, torch.Tensor]) -> Iterator[torch.Tensor]:
        """The tapped feature maps of a 1x3xHxW batch in [0, 1], one at a time (so each can be freed)."""

    @abstractmethod
    def keep(self, k: int, x: torch.Tensor, w: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """What :meth:`add` needs of the reference's core cells ``x`` of map ``k`` (owning its memory)."""

    @abstractmethod
    def add(self, k: int, kept: tuple[torch.Tensor, ...], y: torch.Tensor, w: dict[str, torch.Tensor]) -> torch.Tensor:
        """The float64 sums of map ``k`` over one tile's core: reference ``kept``, test cells ``y``."""

    @abstractmethod
    def distance(self, sums: list[torch.Tensor], w: dict[str, torch.Tensor]) -> float:
        """The distance from the per-map sums over every tile."""


# --- LPIPS v0.1 (AlexNet) -------------------------------------------------------------------------------------------
_LPIPS_SHIFT = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
_LPIPS_SCALE = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)


def _unit_norm(x: torch.Tensor) -> torch.Tensor:
    return x / (torch.sqrt((x * x).sum(1, keepdim=True)) + 1e-10)


class _Lpips(PerceptualNet):
    name = "lpips"
    weights = LPIPS_WEIGHTS
    margin = 96  # AlexNet conv5: 163 px field
    strides = (4, 8, 16, 16, 16)

    def maps(self, x, w):
        x = (x * 2 - 1 - _LPIPS_SHIFT.to(x.device)) / _LPIPS_SCALE.to(x.device)
        conv = lambda x, i, **kw: F.relu(F.conv2d(x, w[f"alexnet.conv{i}.weight"], w[f"alexnet.conv{i}.bias"], **kw))  # noqa: E731
        x = conv(x, 1, stride=4, padding=2)
        yield x
        x = conv(F.max_pool2d(x, 3, 2), 2, padding=2)
        yield x
        x = conv(F.max_pool2d(x, 3, 2), 3, padding=1)
        yield x
        x = conv(x, 4, padding=1)
        yield x
        yield conv(x, 5, padding=1)

    def cells(self, k, nx, ny, w):
        """Per-cell weighted distance of tap ``k`` from channel-normalised features: squared difference, linear."""
        return F.conv2d((nx - ny) ** 2, w[f"lpips.lin{k}.weight"])

    def keep(self, k, x, w):
        return (_unit_norm(x),)

    def add(self, k, kept, y, w):
        d = self.cells(k, kept[0], _unit_norm(y), w)
        return torch.stack([d.sum(dtype=_F64), torch.tensor(float(d.numel()), dtype=_F64, device=d.device)])

    def distance(self, sums, w):
        return float(sum(s[0] / s[1] for s in sums))


# --- DISTS (VGG16 with L2 pooling) ----------------------------------------------------------------------------------
_DISTS_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
_DISTS_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
_DISTS_STAGES = ((), ("1_1", "1_2"), ("2_1", "2_2"), ("3_1", "3_2", "3_3"), ("4_1", "4_2", "4_3"), ("5_1", "5_2", "5_3"))
_HANN = torch.tensor([0.5, 1.0, 0.5])  # np.hanning(5)[1:-1]


def _l2pool(x: torch.Tensor) -> torch.Tensor:
    g = _HANN[:, None] * _HANN[None, :]
    g = (g / g.sum()).to(x.device).expand(x.shape[1], 1, 3, 3)
    return torch.sqrt(F.conv2d(x * x, g, stride=2, padding=1, groups=x.shape[1]) + 1e-12)


def _rows(x: torch.Tensor) -> torch.Tensor:
    """1xCxHxW cells → (H·W, C) rows: a view of a channels-last map, whose per-channel sums then run fastest."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def _channel_sums(x: torch.Tensor, y: torch.Tensor, rows: int = 8192) -> tuple[torch.Tensor, ...]:
    """Per-channel float64 Σy, Σy², Σxy of two (N, C) row tables, in blocks of ``rows`` rows: each block's
    products stay in cache (8× faster than whole-map temporaries, same float64 sums)."""
    out = torch.zeros(3, y.shape[1], dtype=_F64, device=y.device)
    for i in range(0, y.shape[0], rows):
        a, b = x[i : i + rows], y[i : i + rows]
        out[0] += b.sum(0, dtype=_F64)
        out[1] += (b * b).sum(0, dtype=_F64)
        out[2] += (a * b).sum(0, dtype=_F64)
    return out[0], out[1], out[2]


class _Dists(PerceptualNet):
    """Per map, the per-channel sums Σx, Σy, Σx², Σy², Σxy (products in float32, summed in float64) and the cell
    count: DISTS needs only global means, variances and covariances, so the sums of the tiles' cores give them."""

    name = "dists"
    weights = DISTS_WEIGHTS
    margin = 128  # VGG16 relu5_3 with L2 pooling: 211 px field
    strides = (1, 1, 2, 4, 8, 16)

    def maps(self, x, w):
        yield x
        h = (x - _DISTS_MEAN.to(x.device)) / _DISTS_STD.to(x.device)
        for k, convs in enumerate(_DISTS_STAGES[1:]):
            if k:
                h = _l2pool(h)
            for c in convs:
                h = F.relu(F.conv2d(h, w[f"vgg16.conv{c}.weight"], w[f"vgg16.conv{c}.bias"], padding=1))
            yield h

    def keep(self, k, x, w):
        x = _rows(x).clone()
        return x, *_channel_sums(x, x)[:2]

    def add(self, k, kept, y, w):
        x, sx, sxx = kept
        y = _rows(y)
        sy, syy, sxy = _channel_sums(x, y)
        return torch.stack([sx, sy, sxx, syy, sxy, torch.full_like(sx, float(y.shape[0]))])

    def distance(self, sums, w):
        s1, s2 = [], []
        for m in sums:
            mx, my, exx, eyy, exy = m[:5] / m[5]
            t, s = self.similarities(mx, my, exx - mx * mx, eyy - my * my, exy - mx * my)
            s1.append(t), s2.append(s)
        return float(self.combine(torch.cat(s1), torch.cat(s2), w))

    @staticmethod
    def similarities(mx, my, vx, vy, cxy) -> tuple[torch.Tensor, torch.Tensor]:
        """Per channel, DISTS's texture term (of the feature means) and structure term (of the variances and the
        covariance: a test with less variance than the reference, a blur, scores lower)."""
        c = 1e-6
        return (2 * mx * my + c) / (mx * mx + my * my + c), (2 * cxy + c) / (vx + vy + c)

    @staticmethod
    def combine(s1: torch.Tensor, s2: torch.Tensor, w) -> torch.Tensor:
        """The distance from every map's terms (channels on the last axis): 1 − their learnt weighted mean."""
        alpha, beta = w["dists.alpha"].flatten().to(s1.dtype), w["dists.beta"].flatten().to(s1.dtype)
        return 1 - ((alpha * s1).sum(-1) + (beta * s2).sum(-1)) / (alpha.sum() + beta.sum())


LPIPS_NET = _Lpips()
DISTS_NET = _Dists()


# --- a prepared reference -------------------------------------------------------------------------------------------
class Reference:
    """A reference image prepared for scoring many tests against it (a floor search's candidates, a bench's
    operating points): each tile's reference features are computed once and kept while they fit ``cache_bytes``,
    so a further test costs one network pass instead of two. The distances equal :func:`lpips` / :func:`dists`
    (same tiles, same arithmetic). Not thread-safe: one search, one thread."""

    def __init__(self, image: np.ndarray, *, device: str | torch.device | None = None, tile: int = PERCEPTUAL_TILE,
                 cache_bytes: int = REFERENCE_CACHE_BYTES):
        if tile <= 0 or tile % _ALIGN:
            raise ValueError(f"tile must be a positive multiple of {_ALIGN}, got {tile}")
        self.image = image
        self.device = torch.device(device or "cpu")
        self.tile = tile
        self.cache_bytes = cache_bytes
        self._rgb = _unit_rgb(image)
        self._kept: dict[tuple[str, int, int], dict[int, tuple[torch.Tensor, ...]]] = {}
        self.kept_bytes = 0

    def distance(self, net: PerceptualNet, test: np.ndarray) -> float | None:
        """``net``'s distance of ``test`` from this reference; None below :data:`PERCEPTUAL_MIN_SIDE`."""
        if not _measurable(self.image, test):
            return None
        w = _weights(net.weights, self.device)
        tst = _unit_rgb(test)
        h, wd = self._rgb.shape[:2]
        sums: dict[int, torch.Tensor] = {}
        with torch.inference_mode():
            for y0, y1, cy0, cy1 in _spans(h, self.tile, net.margin):
                for x0, x1, cx0, cx1 in _spans(wd, self.tile, net.margin):
                    def cores(pixels: np.ndarray):
                        for k, f in enumerate(net.maps(_tensor(pixels[y0:y1, x0:x1], self.device), w)):
                            s = net.strides[k]
                            ys = _core(y0, cy0, cy1, h, s, f.shape[2])
                            xs = _core(x0, cx0, cx1, wd, s, f.shape[3])
                            if ys.start < min(ys.stop, f.shape[2]) and xs.start < min(xs.stop, f.shape[3]):
                                yield k, f[:, :, ys, xs]

                    kept = self._kept.get((net.name, y0, x0))
                    if kept is None:
                        kept = {k: net.keep(k, c, w) for k, c in cores(self._rgb)}
                        size = sum(t.numel() * t.element_size() for ts in kept.values() for t in ts)
                        if self.kept_bytes + size <= self.cache_bytes:
                            self._kept[(net.name, y0, x0)] = kept
                            self.kept_bytes += size
                    for k, c in cores(tst):
                        s = net.add(k, kept[k], c, w)
                        sums[k] = s if k not in sums else sums[k] + s
        return net.distance([sums[k] for k in sorted(sums)], w)


def _batch_pair(reference: torch.Tensor, test: torch.Tensor) -> None:
    if reference.shape != test.shape or reference.ndim != 4 or reference.shape[1] != 3:
        raise ValueError(f"expected two Bx3xHxW tensors of one shape, got {tuple(reference.shape)}, "
                         f"{tuple(test.shape)}")


def lpips_loss(reference: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
    """Differentiable LPIPS per image, shape (B,), of Bx3xHxW tensors in [0, 1] (a training loss: no tiling, the
    whole batch in memory). Same network and value as :func:`lpips` on one untiled image."""
    _batch_pair(reference, test)
    w = _weights(LPIPS_WEIGHTS, reference.device)
    b = reference.shape[0]
    return sum(LPIPS_NET.cells(k, _unit_norm(t[:b]), _unit_norm(t[b:]), w).mean((1, 2, 3))
               for k, t in enumerate(LPIPS_NET.maps(torch.cat([reference, test]), w)))


def dists_loss(reference: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
    """Differentiable DISTS per image, shape (B,), of Bx3xHxW tensors in [0, 1] (a training loss: no tiling, the
    whole batch in memory). Same network and value as :func:`dists` on one untiled image. Its structure term
    compares each feature map's variance, so unlike a pointwise loss it charges for detail averaged away."""
    _batch_pair(reference, test)
    w = _weights(DISTS_WEIGHTS, reference.device)
    s1, s2 = [], []
    with torch.set_grad_enabled(torch.is_grad_enabled() and reference.requires_grad):  # a target: no backward
        refs = list(DISTS_NET.maps(reference, w))
    for x, y in zip(refs, DISTS_NET.maps(test, w)):
        mx, my = x.mean((2, 3), keepdim=True), y.mean((2, 3), keepdim=True)
        vx, vy = ((x - mx) ** 2).mean((2, 3)), ((y - my) ** 2).mean((2, 3))
        t, s = DISTS_NET.similarities(mx.flatten(1), my.flatten(1), vx, vy, ((x - mx) * (y - my)).mean((2, 3)))
        s1.append(t), s2.append(s)
    return DISTS_NET.combine(torch.cat(s1, 1), torch.cat(s2, 1), w)


def lpips(reference: np.ndarray, test: np.ndarray, *, device: str | torch.device | None = None,
          tile: int = PERCEPTUAL_TILE) -> float | None:
    """LPIPS v0.1 (AlexNet) distance, 0 = identical (higher = more different; ~0.01 at JPEG q90, ~0.3 at q10).

    Arrays as for :func:`psnr` (HxW grey or HxWx3/4, uint8 or uint16; float arrays are taken as [0, 1]).
    Evaluated in exact aligned tiles of at most ``tile`` px plus margins (bounded memory, same value for any tile
    size up to float rounding; see the module comment). None when the short side is under
    :data:`PERCEPTUAL_MIN_SIDE` px. To score many tests against one reference, use :class:`Reference`.
    """
    return Reference(reference, device=device, tile=tile, cache_bytes=0).distance(LPIPS_NET, test)


def dists(reference: np.ndarray, test: np.ndarray, *, device: str | torch.device | None = None,
          tile: int = PERCEPTUAL_TILE) -> float | None:
    """DISTS distance, 0 = identical (higher = more different; ~0.07 at JPEG q90, ~0.3 at q10).

    Arrays as for :func:`lpips`. The per-channel means, variances and covariance are global over the image;
    they come from float64 sums over exact aligned tiles (see the module comment), so tiling changes nothing
    but float rounding. None when the short side is under :data:`PERCEPTUAL_MIN_SIDE` px.
    """
    return Reference(reference, device=device, tile=tile, cache_bytes=0).distance(DISTS_NET, test)

# --- registry -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Metric:
    """One quality figure: how to compute it (a pixel formula, or a perceptual network scored through a
    :class:`Reference`), which way is better, and what an exact restore scores."""

    name: str
    label: str
    higher_is_better: bool
    exact: float  # the figure of a restore identical to the original
    score: Callable[[np.ndarray, np.ndarray], float | None] | None = None  # pixel metrics
    net: PerceptualNet | None = None  # perceptual metrics

    @property
    def weights(self) -> WeightFile | None:
        """The weight file this metric needs (checked before a job starts), if any."""
        return None if self.net is None else self.net.weights

    def check_weights(self) -> None:
        """Resolve and hash-check the weight file, if any, without loading it (``WeightsNotFound`` /
        ``WeightsChecksumMismatch``): jobs call it before their first image."""
        if self.weights is not None:
            resolve(self.weights)

    def __call__(self, reference: np.ndarray | Reference, test: np.ndarray, *, device=None) -> float | None:
        """The figure of ``test`` against ``reference`` (an array, or a :class:`Reference` whose kept features are
        reused; ``device`` only applies to an array), None where it cannot be measured."""
        if self.net is not None:
            if not isinstance(reference, Reference):
                reference = Reference(reference, device=device, cache_bytes=0)
            return reference.distance(self.net, test)
        return self.score(reference.image if isinstance(reference, Reference) else reference, test)


METRICS: Registry[Metric] = Registry("metric", error=ValueError)
for _m in (Metric("psnr", "PSNR", True, math.inf, score=psnr),
           Metric("ms_ssim", "MS-SSIM", True, 1.0, score=ms_ssim),
           Metric("lpips", "LPIPS", False, 0.0, net=LPIPS_NET),
           Metric("dists", "DISTS", False, 0.0, net=DISTS_NET)):
    METRICS.add(_m.name, _m)
#: the order every table lists them in
METRIC_ORDER = ("psnr", "ms_ssim", "lpips", "dists")


def measure(reference: np.ndarray | Reference, test: np.ndarray, names, *, device=None) -> dict[str, float | None]:
    """``{name: figure}`` for each metric named (registry names), in :data:`METRIC_ORDER`. Pass a
    :class:`Reference` when scoring several tests against one image."""
    wanted = set(names)
    return {n: METRICS.get(n)(reference, test, device=device) for n in METRIC_ORDER if n in wanted}
