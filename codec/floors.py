"""Quality floors on *decoded* pixels: ``min_psnr``, ``min_ms_ssim``, ``max_lpips``, ``max_dists``; all given
ones must hold.

A floor search (``ClassicalCodec.encode_floor``, ``codecs.smallest_meeting``, ``AutoCodec``) decodes every
candidate stream and scores it with :meth:`Floors.scores`; a figure that cannot be measured (MS-SSIM under
11 px, LPIPS / DISTS under 32 px: None) never counts as meeting its floor. PSNR is always measured; the other
metrics only when they have a floor, because on one CPU thread LPIPS costs ~0.4 s and DISTS ~9 s per megapixel
for each candidate, the reference's features computed once per image (:class:`metrics.Reference`;
``docs/perceptual.md``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .metrics import METRIC_ORDER, METRICS, Reference, measure

#: what a stream that restores the original exactly scores (passthrough, jpeg-exact, lossless)
EXACT_SCORES = {n: METRICS.get(n).exact for n in METRIC_ORDER}
#: floor field → the metric it bounds
_FLOORED = {"min_psnr": "psnr", "min_ms_ssim": "ms_ssim", "max_lpips": "lpips", "max_dists": "dists"}


@dataclass(frozen=True)
class Floors:
    min_psnr: float | None = None
    min_ms_ssim: float | None = None
    max_lpips: float | None = None
    max_dists: float | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in asdict(self).values())

    @property
    def psnr_only(self) -> bool:
        """Only a PSNR floor: every codec's own ``min_psnr`` search applies."""
        return self.min_psnr is not None and not Floors(None, self.min_ms_ssim, self.max_lpips, self.max_dists)

    def knob(self) -> dict:
        """The given floors, as recorded in ``EncodeResult.params``."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    def _given(self) -> dict[str, float]:
        """metric name → its floor, for the floors given."""
        return {metric: v for f, metric in _FLOORED.items() if (v := getattr(self, f)) is not None}

    def scores(self, reference: Reference, planes: np.ndarray) -> dict:
        """PSNR, plus each metric that has a floor (others are left out, not measured)."""
        return measure(reference, planes, {"psnr", *self._given()})

    def met(self, scores: dict) -> bool:
        """Every floor holds; a figure that could not be measured (None) never does."""
        for name, bound in self._given().items():
            got = scores.get(name)
            if got is None or (got < bound if METRICS.get(name).higher_is_better else got > bound):
                return False
        return True

    def margin(self, scores: dict) -> float:
        """How far the scores clear their floors, on one scale: the smallest log ratio of allowed to measured
        error over the given floors (PSNR as MSE, MS-SSIM as 1 − MS-SSIM, LPIPS and DISTS as they are). ≥ 0 exactly
        when :meth:`met`; −inf for a figure that could not be measured, +inf for an exact one. A floor search
        interpolates on it: it is close to linear in a codec's quality knob over a bracket."""
        worst = math.inf
        for name, bound in self._given().items():
            got = scores.get(name)
            if got is None:
                return -math.inf
            if name == "psnr":
                m = (got - bound) * math.log(10.0) / 10.0 if math.isfinite(got) else math.inf
            else:
                allowed, measured = (1.0 - bound, 1.0 - got) if name == "ms_ssim" else (bound, got)
                m = (math.inf if measured <= 0 else -math.inf if allowed <= 0 else math.log(allowed / measured))
            worst = min(worst, m)
        return worst

    def check_weights(self) -> None:
        """Resolve and hash-check the weights of each floored metric without loading them, so a job fails before
        its first image (``WeightsNotFound`` / ``WeightsChecksumMismatch``)."""
        for name in self._given():
            METRICS.get(name).check_weights()

    def describe(self) -> str:
        parts = [f"PSNR ≥ {self.min_psnr:.2f} dB" if self.min_psnr is not None else None,
                 f"MS-SSIM ≥ {self.min_ms_ssim}" if self.min_ms_ssim is not None else None,
                 f"LPIPS ≤ {self.max_lpips}" if self.max_lpips is not None else None,
                 f"DISTS ≤ {self.max_dists}" if self.max_dists is not None else None]
        return " and ".join(p for p in parts if p)


def describe_scores(scores: dict) -> str:
    """``31.20 dB, MS-SSIM 0.9712, LPIPS 0.0841`` (only what was measured; unmeasurable as n/a)."""
    out = [f"{scores['psnr']:.2f} dB"]
    for name, label in (("ms_ssim", "MS-SSIM"), ("lpips", "LPIPS"), ("dists", "DISTS")):
        if name in scores:
            out.append(f"{label} " + ("n/a" if scores[name] is None else f"{scores[name]:.4f}"))
    return ", ".join(out)


def unreachable_message(codec_name: str, best: dict, floors: Floors) -> str:
    return f"best achievable with {codec_name} is {describe_scores(best)}, below the floor {floors.describe()}"
