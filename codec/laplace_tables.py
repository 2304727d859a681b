"""Integer probability tables of the learned entropy model: a discrete Laplacian at a fractional centre.

The learned model predicts, for every latent symbol, a centre ``μ`` and a scale ``b`` (in quantization-step
units). It codes ``r = q - ⌊μ⌋`` with ``P(r) ∝ θ^|r - δ|``, where ``δ = μ - ⌊μ⌋`` is kept to quarters and
``θ = exp(-1/b)`` lies on a grid of eighth-octave scales. The tables are built here from Python integers
only — ``2^(k/8)`` by integer square roots, ``exp`` by an integer series — so the same (scale, offset) index
gives the same frequencies on every machine, thread count and library version; nothing in them depends on
floating point. A golden hash in the tests pins them.

Symbols beyond ``±R`` (``R`` grows with the scale, at most :data:`MAX_SUPPORT`) take one of two escape
entries, and their excess is coded after them with uniform 16-bit words.
"""

from __future__ import annotations

from functools import lru_cache
from math import isqrt

import numpy as np

PRECISION_BITS = 24
TOTAL = 1 << PRECISION_BITS
FRAC_STEPS = 4  # the centre's fractional part is kept to quarters
SCALES = 112  # scale index j: b = 2^((j - SCALE_OFFSET) / 8), from 1/8 to 2^10.875 steps
SCALE_OFFSET = 24
MAX_SUPPORT = 1024
ESCAPE_WORD_BITS = 16
_FP = 60  # fixed-point bits of the table arithmetic (Python ints: no overflow)
_ONE = 1 << _FP


@lru_cache(maxsize=None)
def _eighth_root_two() -> int:
    """2^(1/8) in fixed point, by three integer square roots."""
    x = 2 << _FP
    for _ in range(3):
        x = isqrt(x << _FP)
    return x


@lru_cache(maxsize=None)
def pow2_eighths(k: int) -> int:
    """2^(k/8) in fixed point for any integer k (integer arithmetic only)."""
    r, x = _eighth_root_two(), _ONE
    if k >= 0:
        for _ in range(k):
            x = (x * r) >> _FP
    else:
        for _ in range(-k):
            x = (x << _FP) // r
    return x


def _exp_neg(x: int) -> int:
    """exp(-x) for fixed-point x ≥ 0: halve until small, series, then square back (integers only)."""
    halvings = 0
    while x > _ONE >> 4:
        x >>= 1
        halvings += 1
    term, acc, n = _ONE, _ONE, 1
    while term:
        term = (term * x) // (n * _ONE)
        acc += -term if n % 2 else term
        n += 1
    for _ in range(halvings):
        acc = (acc * acc) >> _FP
    return acc


def scale_of(j: int) -> float:
    """The scale (in steps) of index ``j`` — for documentation and training; coding uses integers only."""
    return 2.0 ** ((j - SCALE_OFFSET) / 8)


@lru_cache(maxsize=None)
def theta(j: int) -> int:
    """θ_j = exp(-1 / b_j) in fixed point."""
    inv_b = pow2_eighths(SCALE_OFFSET - j)  # 1 / b_j
    return _exp_neg(inv_b)


def support(j: int) -> int:
    """Half-width ``R`` of the table: the Laplacian tail beyond it is below 2^-20 (or R hits the cap)."""
    return int(min(MAX_SUPPORT, max(2, -(-int(14.0 * scale_of(j)) // 1) + 2)))


@lru_cache(maxsize=None)
def frequencies(j: int, f: int) -> np.ndarray:
    """Frequencies (int64, sum 2²⁴, every entry ≥ 1) over ``[esc-, -R..R, esc+]`` for scale ``j`` and centre
    offset ``δ = f/4``."""
    if not (0 <= j < SCALES and 0 <= f < FRAC_STEPS):
        raise ValueError(f"table index out of range: {(j, f)}")
    t, r = theta(j), support(j)
    # θ^(f/4) and θ^(1 - f/4) by integer square roots: θ^(1/4) = √√θ
    t_half = isqrt(t << _FP)
    t_quarter = isqrt(t_half << _FP)
    powers = [_ONE, t_quarter, t_half, (t_half * t_quarter) >> _FP, t]
    up, down = powers[FRAC_STEPS - f], powers[f]  # θ^(1-δ) for r ≥ 1, θ^δ for r ≤ 0
    w = [0] * (2 * r + 1)
    x = down
    for k in range(r + 1):  # r = 0, -1, ..., -R: θ^(δ + k)
        w[r - k] = x
        x = (x * t) >> _FP
    x = up
    for k in range(1, r + 1):  # r = 1..R: θ^(k - δ)
        w[r + k] = x
        x = (x * t) >> _FP
    tail_lo = (w[0] * t) // max(1, _ONE - t)  # Σ beyond -R: the geometric tail, given to the escapes
    tail_hi = (w[-1] * t) // max(1, _ONE - t)
    weights = [tail_lo] + w + [tail_hi]
    s = sum(weights)
    n = len(weights)
    budget = TOTAL - n  # every entry gets 1, the rest in proportion
    freq = [1 + (budget * x) // s for x in weights]
    freq[r + 1] += TOTAL - sum(freq)  # rounding remainder to the centre entry
    return np.array(freq, dtype=np.int64)


def table_hash() -> str:
    """SHA-256 over every table (golden test)."""
    import hashlib

    h = hashlib.sha256()
    for j in range(SCALES):
        for f in range(FRAC_STEPS):
            h.update(frequencies(j, f).astype("<i8").tobytes())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------ integer log of the quantization step
@lru_cache(maxsize=None)
def _eighth_thresholds() -> tuple[int, ...]:
    return tuple(pow2_eighths(k) for k in range(1, 8))


def log2_eighths(n: int) -> int:
    """⌊8 · log2(n)⌋ for an integer n ≥ 1, by integer comparisons only."""
    if n < 1:
        raise ValueError("log of a non-positive step")
    e = n.bit_length() - 1
    m = (n << _FP) >> e  # n / 2^e in fixed point, in [1, 2)
    return 8 * e + sum(m >= t for t in _eighth_thresholds())
