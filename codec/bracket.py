"""The cheapest setting of a codec knob that meets a floor: a bracketed secant search on the floor's margin.

A quality floor's margin (how far the decoded figures clear it, ≥ 0 when met) is monotone and close to linear in
a codec's rate knob over a bracket, so the chord between a passing and a failing setting predicts where the
margin crosses zero far better than the middle does. Illinois regula falsi keeps that speed when one end stays
put (the kept end's margin is halved, so the chord swings toward it) and never loses the bracket. Every probe is
a real encode, decode and measurement, so the number of probes is the cost; the stops say when another probe
cannot pay for itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Generic, Sequence, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Probe(Generic[T]):
    """One measured setting: the knob ``x``, the floor's ``margin`` (≥ 0 passes), the stream's ``size`` in bytes
    and whatever the caller needs back (the stream, its figures)."""

    x: float
    margin: float
    size: int
    payload: T

    @property
    def passed(self) -> bool:
        return self.margin >= 0


@dataclass
class Search(Generic[T]):
    """What a search measured: ``best`` (the smallest passing probe, None when even the passing end failed) and
    every probe in order (the last is the passing end's when ``best`` is None)."""

    best: Probe[T] | None = None
    probes: list[Probe[T]] = field(default_factory=list)


def cheapest_passing(evaluate: Callable[[float], Probe[T]], *, passing: float, failing: float,
                     start: Sequence[float] = (), max_probes: int, min_width: float,
                     size_gap: float | None = None) -> Search[T]:
    """Search the knob between ``passing`` (the setting most likely to meet the floor: the finest) and
    ``failing`` (the cheapest) for the smallest stream that meets it.

    The probes are ``start`` in order, then the ``passing`` end while nothing has passed (if it fails too, the
    floor is unreachable and the search ends), then the root of the margin's chord between the nearest passing
    and failing probes, kept 10% inside the bracket so it always shrinks (the middle while either end is
    unmeasured or a margin is infinite). It stops after ``max_probes``, when a probe at the ``failing`` end
    passes (nothing is cheaper), when the bracket is narrower than ``min_width``, or (``size_gap``) when the
    best passing stream is within that fraction of the largest failing one's size: no setting between them could
    save more.
    """
    if max_probes < 1:
        raise ValueError(f"max_probes must be ≥ 1, got {max_probes}")
    out: Search[T] = Search()
    x_pass, x_fail = passing, failing
    m_pass: float | None = None
    m_fail: float | None = None
    failed_size, side = 0, 0
    queue = list(start)
    while len(out.probes) < max_probes:
        if queue:
            x = queue.pop(0)
        elif out.best is None:
            if any(p.x == passing for p in out.probes):
                break  # the finest setting fails: unreachable
            x = passing
        else:
            w = x_pass - x_fail
            if m_pass is None or m_fail is None or not (math.isfinite(m_pass) and math.isfinite(m_fail)) \
                    or m_pass == m_fail:
                x = x_fail + 0.5 * w
            else:
                x = x_pass - m_pass * w / (m_pass - m_fail)
            lo, hi = min(x_pass, x_fail), max(x_pass, x_fail)
            x = min(max(x, lo + 0.1 * (hi - lo)), hi - 0.1 * (hi - lo))
        p = evaluate(x)
        out.probes.append(p)
        if p.passed:
            x_pass, m_pass = x, p.margin
            if out.best is None or p.size <= out.best.size:
                out.best = p
            if side == 1 and m_fail is not None:
                m_fail /= 2  # Illinois: the end kept twice pulls the chord less
            side = 1
            if x == failing:
                break
        else:
            if x == passing:
                break
            x_fail, m_fail, failed_size = x, p.margin, max(failed_size, p.size)
            if side == -1 and m_pass is not None:
                m_pass /= 2
            side = -1
        if out.best is None or queue:
            continue
        if abs(x_pass - x_fail) < min_width or (size_gap is not None and out.best.size <= failed_size * (1 + size_gap)):
            break
    return out
