"""The encoder's refinement checks: what it measured against the original, recorded in the stream.

A decoder cannot tell which images a denoiser trained for the average photo improves; the encoder, holding the
original, can. With ``encode --verify-refine`` (faithful) or ``--verify-realistic`` it decodes the stream
unrefined and with each candidate setting, measures the result against the original, and writes its choice into a
stream section; ``decode --refine <mode>`` then follows it (``refine.effective``). The payload is untouched, so
older decoders read these streams unchanged and the unrefined decode is the same with or without a section.

* :class:`Verdict` (section ``RFNV``, 9 bytes): the faithful K that raised PSNR or MS-SSIM without lowering
  either and without raising LPIPS — faithful then never returns less than the unrefined decode.
* :class:`RealisticVerdict` (section ``RFNR``, 14 bytes): the realistic setting (K, eta, seed) that lowered LPIPS
  the most, preferring those that also brought the sharpness ratio (gradient energy against the original's)
  closer to 1 (:func:`choose_realistic`) — realistic then never returns a decode further from the original in
  LPIPS than the unrefined one. Realistic's steps draw seeded noise, so the seed is part of what was measured and
  is recorded.

Both record which refiner they measured with (4 bytes of ``Refiner.fingerprint``): a decoder running another
refiner refines as asked instead.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .errors import CorruptStream
from .metrics import closer_to_one

__all__ = ["REALISTIC_CANDIDATES", "REALISTIC_SECTION", "RealisticVerdict", "VERDICTS", "VERDICT_SECTION",
           "VERIFY_SEED", "VERIFY_STEPS", "Verdict", "choose_realistic", "choose_verified_steps"]

#: stream section of the faithful check (absent: the stream was not checked)
VERDICT_SECTION = "RFNV"
#: faithful step counts the encoder tries
VERIFY_STEPS = (1, 2)
#: stream section of the realistic check
REALISTIC_SECTION = "RFNR"
#: realistic (K, eta) settings the encoder tries: one deterministic step (the mode's default) and stochastic
#: samplers from gentle to ancestral — the settings that won on some rate in docs/refinement.md's eta study
REALISTIC_CANDIDATES = ((1, 1.0), (2, 0.3), (2, 1.0), (3, 0.6))
#: the seed the encoder samples realistic candidates with (recorded, so the decoder draws the same noise)
VERIFY_SEED = 0


def _clip(v: float, lo: int, hi: int) -> int:
    return int(max(lo, min(hi, round(v))))


def _unpack(fmt: str, body: bytes, what: str) -> tuple:
    if len(body) != struct.calcsize(fmt):
        raise CorruptStream(f"{what} section has {len(body)} bytes")
    return struct.unpack(fmt, body)


@dataclass(frozen=True)
class Verdict:
    """The faithful check for one image: ``steps`` = the K that lowered neither PSNR nor MS-SSIM, raised at least
    one, and raised PSNR the most (0: no K did — decode the image unrefined), the changes it measured, and which
    refiner it measured with (``fingerprint``)."""

    fingerprint: bytes
    steps: int
    d_psnr: float  # dB
    d_ms_ssim: float

    SECTION = VERDICT_SECTION
    _FORMAT = "<4sBhh"

    def pack(self) -> bytes:
        return struct.pack(self._FORMAT, self.fingerprint, self.steps, _clip(self.d_psnr * 100, -32768, 32767),
                           _clip(self.d_ms_ssim * 1e5, -32768, 32767))

    @classmethod
    def unpack(cls, body: bytes) -> "Verdict":
        fp, k, dp, dm = _unpack(cls._FORMAT, body, "refinement verdict")
        return cls(fp, k, dp / 100, dm / 1e5)

    def info(self) -> dict:
        return {"refiner_fingerprint": self.fingerprint.hex(), "steps": self.steps, "d_psnr": self.d_psnr,
                "d_ms_ssim": self.d_ms_ssim}

    def setting(self, seed: int) -> dict:
        """The ``RefineConfig`` fields the decoder takes from this check (faithful draws no noise: ``seed`` as
        asked)."""
        return {"steps": self.steps, "seed": seed}

    def describe(self, label: str) -> str:
        """What a decode that followed this check says it did (``label``: the refinement it ran)."""
        return f"{label} (verified: {self.d_psnr:+.2f} dB PSNR, {self.d_ms_ssim:+.5f} MS-SSIM)"


@dataclass(frozen=True)
class RealisticVerdict:
    """The realistic check for one image: the setting chosen (``steps`` 0: none qualified — decode unrefined),
    its ``eta`` and ``seed``, the LPIPS change it measured and the sharpness ratio of the unrefined and of the
    chosen decode, and the refiner's ``fingerprint``."""

    fingerprint: bytes
    steps: int
    eta: float
    seed: int
    d_lpips: float
    sharpness_none: float
    sharpness: float

    SECTION = REALISTIC_SECTION
    _FORMAT = "<4sBBHhHH"

    def pack(self) -> bytes:
        return struct.pack(self._FORMAT, self.fingerprint, self.steps, _clip(self.eta * 100, 0, 100),
                           self.seed, _clip(self.d_lpips * 1e4, -32768, 32767),
                           _clip(self.sharpness_none * 1000, 0, 65535), _clip(self.sharpness * 1000, 0, 65535))

    @classmethod
    def unpack(cls, body: bytes) -> "RealisticVerdict":
        fp, k, eta, seed, dl, s0, s1 = _unpack(cls._FORMAT, body, "realistic refinement verdict")
        if eta > 100:
            raise CorruptStream(f"realistic refinement verdict has eta {eta / 100} > 1")
        return cls(fp, k, eta / 100, seed, dl / 1e4, s0 / 1000, s1 / 1000)

    def info(self) -> dict:
        return {"refiner_fingerprint": self.fingerprint.hex(), "steps": self.steps, "eta": self.eta,
                "seed": self.seed, "d_lpips": self.d_lpips, "sharpness_none": self.sharpness_none,
                "sharpness": self.sharpness}

    def setting(self, seed: int) -> dict:
        """The ``RefineConfig`` fields the decoder takes from this check: the measured sample, so the recorded seed
        and eta, whatever ``seed`` was asked for."""
        return {"steps": self.steps, "seed": self.seed, "eta": self.eta}

    def describe(self, label: str) -> str:
        """What a decode that followed this check says it did (``label``: the refinement it ran)."""
        return (f"{label} seed {self.seed} (verified: {self.d_lpips:+.4f} LPIPS, sharpness {self.sharpness_none:.3f} "
                f"→ {self.sharpness:.3f})")


#: each refinement mode's check (its class names its stream section)
VERDICTS = {"faithful": Verdict, "realistic": RealisticVerdict}


def choose_verified_steps(base: tuple, measured: dict[int, tuple]):
    """(K, ΔPSNR, ΔMS-SSIM) from {K: (PSNR, MS-SSIM[, LPIPS])} against the unrefined ``base``: the K with the
    largest PSNR gain among those that lower neither PSNR nor MS-SSIM, raise at least one, and do not raise LPIPS
    (a perceptual distance; figures that could not be measured, None, are not compared); (0, 0, 0) when none
    qualifies."""
    def delta(got, was):
        return got - was if got is not None and was is not None else 0.0

    best = (0, 0.0, 0.0)
    for k, figs in sorted(measured.items()):
        dp, dm = figs[0] - base[0], delta(figs[1], base[1])
        dl = delta(figs[2], base[2]) if len(figs) > 2 and len(base) > 2 else 0.0
        if dp >= 0 and dm >= 0 and dl <= 0 and (dp > 0 or dm > 0) and (best[0] == 0 or dp > best[1]):
            best = (k, dp, dm)
    return best


def choose_realistic(base: tuple, measured: dict[tuple[int, float], tuple]) -> tuple[int, float, float, float]:
    """(K, eta, ΔLPIPS, sharpness) from {(K, eta): (LPIPS, sharpness)} against the unrefined ``base`` (LPIPS,
    sharpness). Only settings that lower LPIPS qualify; among them, those that also bring the sharpness ratio
    strictly closer to 1 come first (the whole realism check), and the lowest LPIPS wins. (0, 0, 0, base
    sharpness) when none lowers LPIPS, or when LPIPS could not be measured (a tiny image: nothing verifies a
    generative change there).

    Why sharpness ranks but does not veto: at low rates much of the unrefined decode's gradient energy is the
    quantization grid, which refinement removes (docs/refinement.md); a hard sharpness test would refuse
    perceptually closer decodes for that reason alone. The verdict records both sharpness figures, so the choice
    stays visible in ``info`` and at decode."""
    b_lpips, b_sharp = base
    none = (0, 0.0, 0.0, b_sharp if b_sharp is not None else 0.0)
    if b_lpips is None:
        return none

    def rank(item):
        (k, eta), (lp, sharp) = item
        closer = sharp is not None and b_sharp is not None and closer_to_one(sharp, b_sharp)
        return (not closer, lp, k, eta)

    ok = sorted(((c, f) for c, f in measured.items() if f[0] is not None and f[0] < b_lpips), key=rank)
    if not ok:
        return none
    (k, eta), (lp, sharp) = ok[0]
    return k, eta, lp - b_lpips, sharp if sharp is not None else 0.0
