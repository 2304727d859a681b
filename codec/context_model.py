"""Learned entropy model for autoencoder latents: channel-group × checkerboard context, integer inference.

Why this shape: the per-channel model (``entropy.py``) gives every symbol of a channel the same law, so it pays
for textured regions everywhere and ignores that neighbouring latents and other channels predict a symbol's
centre and spread. Here the symbols are coded in ``2·G`` passes — for each of ``G`` channel groups, first the
checkerboard "anchor" positions, then the rest (He et al., *Checkerboard context model*, CVPR 2021; ELIC's
channel groups, CVPR 2022). Before each pass a small convolutional network sees everything decoded so far
(dequantized, in latent units) and each channel's quantization step, and predicts per symbol a Laplacian centre
and scale (``laplace_tables``). Every pass is fully parallel, so decoding costs ``2·G`` network evaluations.

Bit-exactness across machines: the trained float network is converted to integers (weights ``× 2^12``,
activations in units of ``2^-6``) and evaluated in float64 on integer values whose partial sums stay far below
``2^53``, so every summation order gives the same exact result; rounding between layers is a floor division by a
power of two; the step and the table index come from integer arithmetic. Encoder and decoder therefore derive
identical table indices on any CPU, thread count or library version.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import constriction
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import laplace_tables as lt
from .errors import CorruptStream, ModelError

INPUT_BITS = 6  # features and activations in units of 2^-6
WEIGHT_BITS = 12
FEATURE_CLIP = 1 << 14  # |latent| ≤ 256
ACT_CLIP = 1 << 15
WEIGHT_CLIP = 1 << 15
BAND_ROWS = 32  # rows of latent per network band (memory bound on large images); exact by construction


@dataclass(frozen=True)
class ContextConfig:
    channels: int = 32
    groups: int = 4
    hidden: int = 48
    depth: int = 2  # 3×3 layers before the 1×1 output layer: the receptive field is (2·depth + 1)²

    @property
    def passes(self) -> int:
        return 2 * self.groups

    @property
    def layers(self) -> int:
        return self.depth + 1


class ContextNet(nn.Module):
    """The float network (training). Input: ``[ŷ · avail, avail, log2 Δ]`` (3C channels); output: centre (latent
    units) and log2 scale (latent units) for every channel. Layers ``c1 … c{depth}`` are 3×3 convolutions with
    ReLU, ``c{depth+1}`` the 1×1 output; the names are the safetensors keys."""

    def __init__(self, cfg: ContextConfig):
        super().__init__()
        if cfg.depth < 1:
            raise ValueError("a context network needs at least one 3×3 layer")
        c, h = cfg.channels, cfg.hidden
        self.cfg = cfg
        for i in range(1, cfg.depth + 1):
            self.add_module(f"c{i}", nn.Conv2d(3 * c if i == 1 else h, h, 3, padding=1))
        self.add_module(f"c{cfg.layers}", nn.Conv2d(h, 2 * c, 1))

    def convs(self) -> list[nn.Conv2d]:
        return [getattr(self, f"c{i}") for i in range(1, self.cfg.layers + 1)]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        *hidden, out = self.convs()
        for conv in hidden:
            x = F.relu(conv(x))
        o = out(x)
        c = self.cfg.channels
        return o[:, :c], o[:, c:]


# ------------------------------------------------------------------ the pass schedule and features
def pass_schedule(cfg: ContextConfig) -> list[tuple[int, int]]:
    """(channel group, phase) of each pass in coding order; phase 0 codes the checkerboard anchors
    (row + column even), phase 1 the rest."""
    return [(g, phase) for g in range(cfg.groups) for phase in (0, 1)]


def checkerboard(h: int, w: int, phase: int) -> np.ndarray:
    """(h, w) mask of the positions a pass of ``phase`` codes."""
    return (np.arange(h)[:, None] + np.arange(w)[None]) % 2 == phase


def pass_masks(cfg: ContextConfig, h: int, w: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each pass: (available-before-it, coded-in-it) boolean masks of shape (C, h, w)."""
    group = np.arange(cfg.channels) // (cfg.channels // cfg.groups)
    anchor = checkerboard(h, w, 0)
    out = []
    for g, phase in pass_schedule(cfg):
        before = group[:, None, None] < g
        same = group[:, None, None] == g
        avail = before | (same & anchor[None] if phase else np.zeros((1, 1, 1), bool))
        coded = same & (anchor[None] if phase == 0 else ~anchor[None])
        out.append((np.broadcast_to(avail, (cfg.channels, h, w)), np.broadcast_to(coded, (cfg.channels, h, w))))
    return out


def step_log8(steps: np.ndarray) -> np.ndarray:
    """⌊8·log2(Δ)⌋ per channel from the integer steps (units 2^-12): integer arithmetic only."""
    return np.array([lt.log2_eighths(int(s)) - 8 * 12 for s in steps], dtype=np.int64)


def features(symbols: np.ndarray, steps: np.ndarray, avail: np.ndarray, log8: np.ndarray | None = None) -> np.ndarray:
    """Integer network input (3C, h, w) in units of 2^-6: dequantized centred latent where available (⌊qΔ⌋,
    clipped), the availability mask and log2 Δ (``log8``: :func:`step_log8` of ``steps``, if already known)."""
    c = symbols.shape[0]
    log8 = step_log8(steps) if log8 is None else log8
    s = steps.astype(np.int64)[:, None, None]
    yh = np.clip((symbols.astype(np.int64) * s) >> (12 - INPUT_BITS), -FEATURE_CLIP, FEATURE_CLIP)
    a = avail.astype(np.int64)
    ls = np.broadcast_to((log8 << (INPUT_BITS - 3))[:, None, None], symbols.shape)
    return np.concatenate([yh * a, a << INPUT_BITS, ls]).reshape(3 * c, *symbols.shape[1:])


# ------------------------------------------------------------------ integer network
class IntegerContextNet:
    """The trained network in integers; see the module docstring for why this is exact."""

    def __init__(self, cfg: ContextConfig, tensors: dict[str, np.ndarray]):
        self.cfg = cfg
        try:
            layers = range(1, cfg.layers + 1)
            self.w = [torch.from_numpy(tensors[f"c{i}.weight"].astype(np.float64)) for i in layers]
            self.b = [torch.from_numpy(tensors[f"c{i}.bias"].astype(np.float64)) for i in layers]
        except KeyError as e:
            raise ModelError(f"context model weights lack {e}") from None
        for w in self.w:
            if w.abs().max() > WEIGHT_CLIP:
                raise ModelError("context model weight outside the integer range")

    @classmethod
    def from_float(cls, net: ContextNet) -> tuple["IntegerContextNet", dict[str, np.ndarray]]:
        scale_w, tensors = float(1 << WEIGHT_BITS), {}
        for i, conv in enumerate(net.convs(), 1):
            w = conv.weight.detach().double()
            b = conv.bias.detach().double()
            tensors[f"c{i}.weight"] = torch.clamp(torch.round(w * scale_w), -WEIGHT_CLIP, WEIGHT_CLIP).numpy().astype(np.int32)
            tensors[f"c{i}.bias"] = torch.round(b * scale_w * (1 << INPUT_BITS)).numpy().astype(np.int64)
        return cls(net.cfg, tensors), tensors

    def _layer(self, x: torch.Tensor, i: int, pad: int, last: bool = False) -> torch.Tensor:
        acc = F.conv2d(x, self.w[i], self.b[i], padding=pad)
        if last:
            return acc  # units 2^-(WEIGHT_BITS + INPUT_BITS)
        return self._act(acc)

    @staticmethod
    def _act(acc: torch.Tensor) -> torch.Tensor:
        return torch.clamp(torch.floor(acc / (1 << WEIGHT_BITS)), 0, ACT_CLIP)

    @staticmethod
    def _outputs(o: torch.Tensor, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Output-layer accumulators (2n, …) → centre (units of 2^-6 latent) and ⌊8·log2 b⌉ of n channels."""
        k = WEIGHT_BITS + INPUT_BITS
        mu = torch.floor((o[:n] + (1 << (WEIGHT_BITS - 1))) / (1 << WEIGHT_BITS))
        l8 = torch.floor((o[n:] * 8 + (1 << (k - 1))) / (1 << k))
        return mu.numpy().astype(np.int64), l8.numpy().astype(np.int64)

    @torch.no_grad()
    def passes(self, symbols: np.ndarray, steps: np.ndarray, log8: np.ndarray):
        """For each pass of :func:`pass_schedule`: (mu, l8) equal to what :meth:`__call__` gives on that pass's
        :func:`features`, at the channels and positions the pass codes (0 elsewhere), with about a third of the
        arithmetic. The first layer is linear, so its pre-activation is kept and updated with only the inputs
        the previous pass made available (2·C/G of the 3·C channels); the last 3×3 layer and the output layer
        run only at the pass's checkerboard half, and the output layer only for its channel group. Every value
        is the same exact integer sum, so the laws — and the streams — are identical. ``symbols`` is read when
        each pass starts: a decoder fills in the previous pass's symbols before asking for the next."""
        cfg = self.cfg
        c, h, w = symbols.shape
        gs = c // cfg.groups
        none = np.zeros((c, h, w), bool)
        acc1 = self.b[0][:, None, None].repeat(1, h, w)
        self._accumulate(acc1, features(symbols, steps, none, log8)[2 * c :], self.w[0][:, 2 * c :])
        prev = None
        for g, phase in pass_schedule(cfg):
            if prev is not None:  # the previous pass's symbols are now context
                pg, pmask = prev
                ch = slice(pg * gs, (pg + 1) * gs)
                feats = features(symbols[ch], steps[ch], np.broadcast_to(pmask, (gs, h, w)), log8[ch])
                w1 = torch.cat([self.w[0][:, ch], self.w[0][:, c + pg * gs : c + (pg + 1) * gs]], 1)
                self._accumulate(acc1, feats[: 2 * gs], w1)
            mu = np.zeros((c, h, w), np.int64)
            l8 = np.zeros((c, h, w), np.int64)
            rows = torch.cat([torch.arange(g * gs, (g + 1) * gs), torch.arange(c + g * gs, c + (g + 1) * gs)])
            w_out, b_out = self.w[cfg.depth][rows], self.b[cfg.depth][rows]
            for r0 in range(0, h, BAND_ROWS):
                r1 = min(h, r0 + BAND_ROWS)
                for rr, cc, hid in self._last_hidden(acc1, r0, r1, phase):
                    m, sc = self._outputs(F.conv2d(hid, w_out, b_out)[0], gs)
                    mu[g * gs : (g + 1) * gs, r0 + rr : r1 : 2, cc::2] = m
                    l8[g * gs : (g + 1) * gs, r0 + rr : r1 : 2, cc::2] = sc
            yield mu, l8
            prev = (g, checkerboard(h, w, phase))

    @staticmethod
    def _accumulate(acc: torch.Tensor, x: np.ndarray, weight: torch.Tensor) -> None:
        """``acc += conv3×3(x, weight)`` (zero padding at the image's edges), band by band."""
        xt = torch.from_numpy(x.astype(np.float64))
        for r0 in range(0, acc.shape[1], BAND_ROWS):
            r1 = min(acc.shape[1], r0 + BAND_ROWS)
            acc[:, r0:r1] += F.conv2d(_rows(xt, r0, r1, 1)[None], weight)[0]

    def _last_hidden(self, acc1: torch.Tensor, r0: int, r1: int, phase: int):
        """The last hidden activations at the checkerboard positions of ``phase`` in rows [r0, r1), as two
        strided grids: (row offset, first column, activations (1, hidden, rows, cols)) for rows r0 + offset,
        r0 + offset + 2, … and columns first, first + 2, …"""
        depth, h, w = self.cfg.depth, acc1.shape[1], acc1.shape[2]
        if depth > 1:
            a0, a1 = max(0, r0 - depth + 1), min(h, r1 + depth - 1)
            y = self._act(acc1[:, a0:a1])[None]
            for i in range(1, depth - 1):  # each layer's band edges spoil one row: the halo covers them
                y = self._layer(y, i, 1)
            t0, t1 = max(0, r0 - 1), min(h, r1 + 1)
            y = F.pad(y[:, :, t0 - a0 : t1 - a0], (1, 1, t0 - (r0 - 1), (r1 + 1) - t1))  # rows r0-1 … r1
        for rr in (0, 1):
            cc = (phase - r0 - rr) % 2
            if r0 + rr >= r1 or cc >= w:
                continue
            if depth == 1:
                yield rr, cc, self._act(acc1[:, r0 + rr : r1 : 2, cc::2])[None]
            else:
                last = depth - 1
                yield rr, cc, self._act(F.conv2d(y[:, :, rr:, cc:], self.w[last], self.b[last], stride=2))

    @torch.no_grad()
    def __call__(self, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Integer features (3C, h, w) → centre in units of 2^-6 latent, scale as ⌊8·log2 b⌉ (int64 each): the whole
        network on one pass's features, the definition :meth:`passes` (what coding runs) must equal."""
        _, h, w = feats.shape
        c = self.cfg.channels
        mu = np.empty((c, h, w), np.int64)
        l8 = np.empty((c, h, w), np.int64)
        x_all = torch.from_numpy(feats.astype(np.float64))
        halo = self.cfg.depth  # one row per 3×3 layer: each band's layers see exactly their whole-image inputs
        for r0 in range(0, h, BAND_ROWS):
            r1 = min(h, r0 + BAND_ROWS)
            a0, a1 = max(0, r0 - halo), min(h, r1 + halo)
            y = x_all[None, :, a0:a1]
            for i in range(self.cfg.depth):
                y = self._layer(y, i, 1)
            y = self._layer(y, self.cfg.depth, 0, last=True)[0, :, r0 - a0 : r1 - a0]
            mu[:, r0:r1], l8[:, r0:r1] = self._outputs(y, c)
        return mu, l8


def _rows(x: torch.Tensor, r0: int, r1: int, halo: int) -> torch.Tensor:
    """Rows [r0 − halo, r1 + halo) of ``x`` (…, h, w) and ``halo`` columns either side, zeros outside the image."""
    h = x.shape[-2]
    a0, a1 = max(0, r0 - halo), min(h, r1 + halo)
    return F.pad(x[..., a0:a1, :], (halo, halo, a0 - (r0 - halo), (r1 + halo) - a1))


def table_indices(mu: np.ndarray, l8: np.ndarray, steps: np.ndarray,
                  log8: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Network outputs → (⌊μ_q⌋, fractional quarter f, scale index j) in step units, integers only."""
    s = steps.astype(np.int64).reshape(-1, *([1] * (mu.ndim - 1)))
    log8 = step_log8(steps) if log8 is None else log8
    # μ_q = μ_y / Δ = (mu / 64) / (s / 4096) = mu · 64 / s; in quarters, rounded half up
    mu4 = np.floor_divide(2 * mu * 64 * lt.FRAC_STEPS + s, 2 * s)
    j = l8 - log8.reshape(s.shape) + lt.SCALE_OFFSET
    return mu4 >> 2, mu4 & 3, np.clip(j, 0, lt.SCALES - 1)


# ------------------------------------------------------------------ coding
@lru_cache(maxsize=None)
def _categorical(j: int, f: int):
    return constriction.stream.model.Categorical(lt.frequencies(j, f).astype(np.float64) / lt.TOTAL, perfect=False)


@lru_cache(maxsize=None)
def _bit_costs(j: int, f: int) -> np.ndarray:
    """Code length in bits of each entry of table (j, f)."""
    return lt.PRECISION_BITS - np.log2(lt.frequencies(j, f).astype(np.float64))


def _residual_bits(j: int, f: int, r: np.ndarray) -> np.ndarray:
    """Bits per residual ``r`` (symbol − ⌊μ⌋) under table (j, f): the table entry, plus two escape words where
    ``|r|`` is beyond the table's support — what ``encode`` writes for it."""
    big = lt.support(j)
    return _bit_costs(j, f)[np.clip(r, -big - 1, big + 1) + big + 1] + np.where(np.abs(r) > big, 2 * lt.ESCAPE_WORD_BITS, 0)


_ESCAPE_WORD = constriction.stream.model.Uniform(1 << lt.ESCAPE_WORD_BITS)


class ContextEntropyModel:
    """A trained context model, addressed by the id streams carry."""

    def __init__(self, name: str, model_id: int, cfg: ContextConfig, net: IntegerContextNet, latent_model: str):
        self.name, self.id, self.cfg, self.net, self.latent_model = name, model_id, cfg, net, latent_model

    @classmethod
    def load(cls, folder: str | Path, sha256: str | None = None) -> "ContextEntropyModel":
        """The model saved in ``folder``; with ``sha256`` (shipped models) the weight file is checked first."""
        from safetensors.numpy import load_file

        from .weights import verified_file

        folder = Path(folder)
        if sha256 is not None:
            verified_file(folder / "model.safetensors", sha256)
        try:
            meta = json.loads((folder / "config.json").read_text())
            cfg = ContextConfig(**meta["config"])
            tensors = load_file(str(folder / "model.safetensors"))
        except (OSError, KeyError, TypeError, ValueError) as e:
            raise ModelError(f"cannot load the context entropy model in {folder}: {e}") from None
        return cls(meta["name"], int(meta["id"]), cfg, IntegerContextNet(cfg, tensors), meta["latent_model"])

    def save(self, folder: str | Path, tensors: dict[str, np.ndarray], extra: dict | None = None) -> None:
        from safetensors.numpy import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(folder / "model.safetensors"))
        (folder / "model.safetensors").chmod(0o644)  # safetensors writes 0600; the folder is meant to be shipped
        meta = {"name": self.name, "id": self.id, "latent_model": self.latent_model, "config": asdict(self.cfg),
                **(extra or {})}
        (folder / "config.json").write_text(json.dumps(meta, indent=2) + "\n")

    # -------------------------------------------------------------- the pass loop shared by all three uses
    def _passes(self, symbols: np.ndarray, steps: np.ndarray, decode_pass=None):
        """Yield, per pass: flat indices coded in it, ⌊μ⌋, f, j. With ``decode_pass`` the symbols are filled in
        pass by pass (decode) — the network only ever sees what the decoder has."""
        c, h, w = symbols.shape
        log8 = step_log8(steps)
        for (_, coded), (mu, l8) in zip(pass_masks(self.cfg, h, w), self.net.passes(symbols, steps, log8)):
            base, f, j = table_indices(mu, l8, steps, log8)
            idx = np.flatnonzero(coded)
            yield idx, base.ravel()[idx], f.ravel()[idx], j.ravel()[idx]
            if decode_pass is not None:
                decode_pass(idx)

    @staticmethod
    def _runs(f: np.ndarray, j: np.ndarray):
        key = j * lt.FRAC_STEPS + f
        order = np.argsort(key, kind="stable")
        ks = key[order]
        cuts = np.flatnonzero(np.diff(ks)) + 1
        for sel in np.split(order, cuts):
            k = int(key[sel[0]])
            yield sel, k // lt.FRAC_STEPS, k % lt.FRAC_STEPS

    def _coded_runs(self, symbols: np.ndarray, steps: np.ndarray, laws: list | None = None):
        """Encoder side, in decoding order: per run of one table, (j, f, residuals r, table entries of r).
        ``laws``: the per-pass (idx, ⌊μ⌋, f, j) that :meth:`rd_quantize` recorded for these very symbols — the
        network is then not run again (same symbols, same context, same laws)."""
        symbols = symbols.astype(np.int64)
        flat = symbols.ravel()
        for idx, base, f, j in (laws if laws is not None else self._passes(symbols, steps)):
            r_all = flat[idx] - base
            for sel, jj, ff in self._runs(f, j):
                big = lt.support(jj)
                r = r_all[sel]
                yield jj, ff, r, np.clip(r, -big - 1, big + 1) + big + 1

    def encode(self, symbols: np.ndarray, steps: np.ndarray, laws: list | None = None) -> bytes:
        """ANS-code (C, h, w) int symbols given the stream's integer steps (``laws``: see :meth:`_coded_runs`)."""
        chunks = []  # (model, values) in decoding order
        for jj, ff, r, sym in self._coded_runs(symbols, steps, laws):
            big = lt.support(jj)
            chunks.append((_categorical(jj, ff), sym.astype(np.int32)))
            esc = np.abs(r[np.abs(r) > big]) - big - 1
            if esc.size:
                if esc.max() >= 1 << (2 * lt.ESCAPE_WORD_BITS):
                    raise ValueError("latent symbol too large for the context model")
                words = np.stack([esc >> lt.ESCAPE_WORD_BITS, esc & ((1 << lt.ESCAPE_WORD_BITS) - 1)], 1)
                chunks.append((_ESCAPE_WORD, words.ravel().astype(np.int32)))
        coder = constriction.stream.stack.AnsCoder()
        for model, values in reversed(chunks):
            coder.encode_reverse(values, model)
        return coder.get_compressed().astype("<u4").tobytes()

    def decode(self, payload: bytes, steps: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
        if len(payload) % 4:
            raise CorruptStream("entropy-coded payload is not a whole number of 32-bit words")
        symbols = np.zeros(shape, np.int64)
        flat = symbols.reshape(-1)
        try:
            coder = constriction.stream.stack.AnsCoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))
            pending: dict = {}

            def fill(idx):
                flat[idx] = pending.pop("values")

            for idx, base, f, j in self._passes(symbols, steps, decode_pass=fill):
                out = np.empty(idx.size, np.int64)
                for sel, jj, ff in self._runs(f, j):
                    big = lt.support(jj)
                    sym = coder.decode(_categorical(jj, ff), sel.size).astype(np.int64) - big - 1
                    esc = np.flatnonzero(np.abs(sym) > big)
                    if esc.size:
                        words = coder.decode(_ESCAPE_WORD, 2 * esc.size).astype(np.int64).reshape(-1, 2)
                        extra = (words[:, 0] << lt.ESCAPE_WORD_BITS) | words[:, 1]
                        sym[esc] = np.sign(sym[esc]) * (big + 1 + extra)
                    out[sel] = sym + base[sel]
                pending["values"] = out
        except CorruptStream:
            raise
        except Exception as e:  # noqa: BLE001 - constriction reports bad data with its own exceptions
            raise CorruptStream(f"entropy decoding failed: {e}") from None
        if not coder.is_empty():
            raise CorruptStream("entropy-coded payload has data left after the last symbol")
        return symbols.astype(np.int32)

    def rd_quantize(self, u: np.ndarray, steps: np.ndarray, lam: float, laws: list | None = None) -> np.ndarray:
        """Rate–distortion optimised rounding of ``u`` (C, h, w): the centred latent in step units.

        Each symbol takes whichever of ⌊u⌋ and ⌊u⌋+1 minimises ``(u − q)² + lam · bits(q)``, the bits priced by
        the very law the entropy coder will use for it. Quantization runs pass by pass in decoding order, so each
        pass's laws come from the symbols already chosen — the decoder sees the same context. Distortion is in
        step² units; because the adaptive steps equalise each channel's weighted distortion, one ``lam`` serves
        every channel (``lam = ln 2 / 6`` is the slope of a high-rate uniform quantizer). The stream format is
        unchanged: this is an encoder choice only.

        ``laws``, a list, receives each pass's (idx, ⌊μ⌋, f, j): hand it to :meth:`encode` / :meth:`ideal_bits`
        with the returned symbols and they skip the 2·G network passes this already ran."""
        u = np.asarray(u, np.float64)
        symbols = np.zeros(u.shape, np.int64)
        flat, uf = symbols.reshape(-1), u.reshape(-1)
        lo_all = np.floor(uf).astype(np.int64)
        for idx, base, f, j in self._passes(symbols, steps):  # it reads ``symbols`` as this loop fills them
            if laws is not None:
                laws.append((idx, base, f, j))
            lo, uu = lo_all[idx], uf[idx]
            bits_lo, bits_hi = np.empty(idx.size), np.empty(idx.size)
            for sel, jj, ff in self._runs(f, j):
                r = lo[sel] - base[sel]
                bits_lo[sel] = _residual_bits(jj, ff, r)
                bits_hi[sel] = _residual_bits(jj, ff, r + 1)
            cost_lo = (uu - lo) ** 2 + lam * bits_lo
            cost_hi = (uu - lo - 1) ** 2 + lam * bits_hi
            flat[idx] = np.where(cost_hi < cost_lo, lo + 1, lo)
        return symbols

    def symbol_bits(self, symbols: np.ndarray, steps: np.ndarray):
        """Per pass, in decoding order: (flat indices coded in it, residuals ``r``, table key ``j·4 + f`` and
        bits of each symbol) — what :meth:`ideal_bits` sums, kept apart to see where the bits go."""
        flat = symbols.astype(np.int64).ravel()
        for idx, base, f, j in self._passes(symbols.astype(np.int64), steps):
            r = flat[idx] - base
            bits = np.empty(idx.size)
            for sel, jj, ff in self._runs(f, j):
                bits[sel] = _residual_bits(jj, ff, r[sel])
            yield idx, r, j * lt.FRAC_STEPS + f, bits

    def ideal_bits(self, symbols: np.ndarray, steps: np.ndarray, laws: list | None = None) -> float:
        """Ideal code length (bits) under the integer tables, escapes included."""
        return sum(float(_residual_bits(jj, ff, r).sum()) for jj, ff, r, _ in self._coded_runs(symbols, steps, laws))
