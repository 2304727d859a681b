"""Rate–distortion curve comparisons: Bjøntegaard delta rate (BD-rate).

``bd_rate(rate_a, psnr_a, rate_b, psnr_b)`` is the average rate difference of curve ``a`` relative to curve
``b`` at equal PSNR, in percent (negative: ``a`` needs fewer bits). The standard method (VCEG-M33) fits
log-rate as a cubic polynomial of PSNR for each curve and compares the integrals over the overlapping PSNR
interval; it needs at least 4 points per curve. With fewer points, log-rate is interpolated piecewise-linearly
over PSNR instead (``method="linear"``), which is what ``method="auto"`` picks then.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

CUBIC_MIN_POINTS = 4


def bd_method(n_a: int, n_b: int) -> str:
    """The method ``bd_rate(..., method="auto")`` uses for curves of ``n_a`` and ``n_b`` points."""
    return "cubic" if min(n_a, n_b) >= CUBIC_MIN_POINTS else "linear"


def _clean(rate: Sequence[float], psnr: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(rate, dtype=np.float64).ravel()
    p = np.asarray(psnr, dtype=np.float64).ravel()
    if r.shape != p.shape:
        raise ValueError(f"rate and PSNR lengths differ ({r.size} vs {p.size})")
    keep = np.isfinite(r) & np.isfinite(p) & (r > 0)
    r, p = r[keep], p[keep]
    if r.size < 2:
        raise ValueError("a curve needs at least 2 points with positive rate and finite PSNR")
    order = np.argsort(p, kind="stable")
    p, r = p[order], r[order]
    if np.any(np.diff(p) == 0):
        raise ValueError("PSNR values within a curve must be distinct")
    return np.log(r), p


def bd_rate(
    rate_a: Sequence[float],
    psnr_a: Sequence[float],
    rate_b: Sequence[float],
    psnr_b: Sequence[float],
    *,
    method: str = "auto",
) -> float:
    """BD-rate of curve ``a`` relative to curve ``b``, percent (negative: ``a`` is cheaper at equal PSNR).

    ``method``: ``"cubic"`` (standard Bjøntegaard, needs ≥ 4 points per curve), ``"linear"`` (piecewise-linear
    log-rate over PSNR) or ``"auto"`` (cubic when possible). Raises ``ValueError`` when the curves' PSNR
    ranges do not overlap.
    """
    la, pa = _clean(rate_a, psnr_a)
    lb, pb = _clean(rate_b, psnr_b)
    if method == "auto":
        method = bd_method(pa.size, pb.size)
    lo, hi = max(pa[0], pb[0]), min(pa[-1], pb[-1])
    if not hi > lo:
        raise ValueError(f"PSNR ranges do not overlap ({pa[0]:.2f}–{pa[-1]:.2f} vs {pb[0]:.2f}–{pb[-1]:.2f} dB)")
    if method == "cubic":
        if min(pa.size, pb.size) < CUBIC_MIN_POINTS:
            raise ValueError(f"the cubic fit needs at least {CUBIC_MIN_POINTS} points per curve")

        def area(lr: np.ndarray, p: np.ndarray) -> float:
            integral = np.polyint(np.polyfit(p, lr, 3))
            return float(np.polyval(integral, hi) - np.polyval(integral, lo))

    elif method == "linear":

        def area(lr: np.ndarray, p: np.ndarray) -> float:
            # exact integral of the piecewise-linear interpolant over [lo, hi]
            xs = np.unique(np.concatenate(([lo, hi], p[(p > lo) & (p < hi)])))
            ys = np.interp(xs, p, lr)
            return float(np.sum((ys[1:] + ys[:-1]) * np.diff(xs)) / 2.0)

    else:
        raise ValueError(f"unknown BD-rate method {method!r} (cubic, linear, auto)")
    avg_diff = (area(la, pa) - area(lb, pb)) / (hi - lo)
    return (math.exp(avg_diff) - 1.0) * 100.0


def cubic_fit_monotone(rate: Sequence[float], psnr: Sequence[float], lo: float, hi: float, samples: int = 201) -> bool:
    """Whether the cubic log-rate(PSNR) fit increases over ``[lo, hi]`` — when it does not (typically a curve
    that saturates, PSNR barely rising while rate climbs), the cubic BD-rate is unreliable."""
    lr, p = _clean(rate, psnr)
    xs = np.linspace(lo, hi, samples)
    return bool(np.all(np.diff(np.polyval(np.polyfit(p, lr, 3), xs)) >= 0))


def bd_report(
    rate_a: Sequence[float], psnr_a: Sequence[float], rate_b: Sequence[float], psnr_b: Sequence[float]
) -> dict:
    """BD-rate with the context a table needs: ``bd_rate_pct`` (auto method), ``method``, ``linear_pct``
    (piecewise-linear figure, always), ``psnr_interval`` and, for the cubic method, ``cubic_monotone`` (False
    means the cubic fit bends back inside the interval and ``linear_pct`` is the more trustworthy figure).
    Raises ``ValueError`` as :func:`bd_rate` does."""
    la, pa = _clean(rate_a, psnr_a)
    lb, pb = _clean(rate_b, psnr_b)
    lo, hi = max(pa[0], pb[0]), min(pa[-1], pb[-1])
    method = bd_method(pa.size, pb.size)
    out = {
        "bd_rate_pct": bd_rate(rate_a, psnr_a, rate_b, psnr_b, method=method),
        "method": method,
        "linear_pct": bd_rate(rate_a, psnr_a, rate_b, psnr_b, method="linear"),
        "psnr_interval": [float(lo), float(hi)],
    }
    if method == "cubic":
        out["cubic_monotone"] = cubic_fit_monotone(rate_a, psnr_a, lo, hi) and cubic_fit_monotone(
            rate_b, psnr_b, lo, hi
        )
    return out
