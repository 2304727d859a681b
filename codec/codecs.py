"""Codecs by name: every codec name a stream, a table row or the command line can hold → a :class:`Codec`
(through the registry ``base.CODECS``, which importing this module completes), and the quality-floor search.

=================  ==========================================================================================
``tae-f2``, …      neural codecs of the model zoo (``codec.models``; ``diffusers:<ref>`` too)
``avif`` ``jxl``   classical codecs through Pillow (``codec.classical``)
``webp`` ``jpeg``
``passthrough``    the original file bytes, lossless by definition
``jpeg-exact``     JPEG files as JPEG XL lossless transcodes, rebuilt bit for bit (``codec.exact``);
                   passthrough where that is not exact or not smaller
``lossless``       the ``--lossless`` policy (``codec.lossless``): jpeg-exact for JPEG, else the smaller of
                   lossless JPEG XL / WebP whose decoded pixels equal the source's, else passthrough
``auto``           :class:`AutoCodec`: per image, the smallest stream among the enabled codecs whose *decoded*
                   quality meets the floors (``min_psnr``, ``min_ms_ssim``, ``max_lpips``, ``max_dists``: every
                   one given; ``codec.floors``); passthrough when none does, and
                   jpeg-exact for JPEG sources (it meets every floor)
=================  ==========================================================================================

Streams never say ``auto`` or ``lossless``: those encodes write the chosen codec's own stream, so
:func:`codec_for_stream` always dispatches to a concrete codec.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

from . import bitstream, classical, exact, lossless, neural  # noqa: F401  (each module registers its codecs)
from .base import CODECS, Capabilities, Codec
from .bracket import Probe, cheapest_passing
from .classical import PassthroughCodec, decoded_planes
from .errors import CorruptStream, LatentarcError, QualityFloorUnreachable
from .exact import JpegExactCodec, is_jpeg
from .floors import EXACT_SCORES, Floors, unreachable_message
from .images import Picture
from .metrics import Reference, ms_ssim, psnr
from .spec import DEFAULT_AUTO_CODECS, CodecSpec
from .types import Decoded, EncodeResult

__all__ = ["build", "get_codec", "capabilities", "check_weights", "codec_for_stream", "AutoCodec", "encode_with",
           "smallest_meeting", "DEFAULT_AUTO_CODECS", "names"]


# ------------------------------------------------------------------------------------------ registry
def build(spec: CodecSpec) -> Codec:
    """The codec ``spec`` describes (``UnknownModel`` for a name that is neither a codec nor a model)."""
    return CODECS.get(spec.name).from_spec(spec)


def get_codec(name: str, **options) -> Codec:
    """``build(CodecSpec(name, **options))``: options are :class:`CodecSpec` fields."""
    return build(CodecSpec(name, **options))


def capabilities(name: str) -> Capabilities:
    """What the codec ``name`` can do, without building it."""
    return CODECS.get(name).caps


def names() -> list[str]:
    """Codec names besides the model registry's (which are all accepted too)."""
    return list(CODECS)


def check_weights(spec: CodecSpec) -> None:
    """Resolve (and hash-check) the weights of every neural codec ``spec`` stands for — itself, or the
    members of ``auto`` — without loading a network. Raises ``WeightsNotFound`` / ``UnknownModel`` /
    ``WeightsChecksumMismatch`` as loading would."""
    from .metrics import METRICS
    from .models import resolve_weights

    for n in (_codec_list(spec.codecs) if spec.name == AutoCodec.name else [spec.name]):
        if n not in CODECS:
            resolve_weights(n, weights=spec.weights)
    if spec.verify_refine or spec.verify_realistic:  # the encoder's refinement checks measure LPIPS
        METRICS.get("lpips").check_weights()


def codec_for_stream(data: bytes, *, weights=None, device=None) -> Codec:
    """The codec a stream was made with, after the envelope (magic, version, CRC) checks out."""
    name = bitstream.parse(data).codec
    if name == AutoCodec.name:
        raise CorruptStream("a stream cannot name the codec 'auto'")
    return get_codec(name, weights=weights, device=device)


def _codec_list(codecs: str | Sequence[str] | None) -> list[str]:
    if codecs is None:
        return list(DEFAULT_AUTO_CODECS)
    if isinstance(codecs, str):
        codecs = codecs.split(",")
    out = list(dict.fromkeys(c.strip() for c in codecs if c.strip()))
    if not out:
        raise ValueError("no codecs given")
    return out


_EXACT_TIER = ("passthrough", "jpeg-exact")


# ------------------------------------------------------------------------------------------ quality floors
def _measure(codec, pic: Picture, data: bytes, want_ms_ssim: bool = True) -> tuple[float, float | None]:
    planes = decoded_planes(codec.decode(data), pic.mode)
    ref = pic.reference()
    return psnr(ref, planes), (ms_ssim(ref, planes) if want_ms_ssim else None)


def smallest_meeting(codec, pic: Picture, *, min_psnr: float | None = None, min_ms_ssim: float | None = None,
                     max_lpips: float | None = None, max_dists: float | None = None,
                     iterations: int = 7, size_gap: float = 0.01) -> tuple[EncodeResult, float, float | None]:
    """The smallest stream of ``codec`` whose decoded quality meets every given floor: ``(result, psnr,
    ms_ssim)`` (``ms_ssim`` None when there is no MS-SSIM floor; the LPIPS / DISTS measured for their floors are
    in ``result.params``). Raises :class:`QualityFloorUnreachable` with the best figures the codec reached.

    A PSNR floor alone uses the codec's own ``min_psnr`` search. Otherwise classical codecs search their ladder
    (``encode_floor``); other codecs search ``quality`` 0–100, every candidate decoded and scored
    (``codec.floors``), after first trying the PSNR-floor stream when there is a PSNR floor too (if it meets all
    floors, nothing smaller can). That search (:func:`~latentarc.codec.bracket.cheapest_passing` on
    :meth:`Floors.margin`) starts at quality 50, then 100 if 50 misses (a miss at 100 is unreachable), and stops
    after ``iterations + 1`` candidates, when the bracket is narrower than bisection's ``100 / 2**iterations``, or
    when the passing stream is within ``size_gap`` of the failing one's size. Each candidate costs a decode and its
    metrics, the neural codec's ~15 s/MP decode on one core included, so fewer candidates is most of a floor's cost.
    """
    floors = Floors(min_psnr, min_ms_ssim, max_lpips, max_dists)
    if not floors:
        raise ValueError("give min_psnr, min_ms_ssim, max_lpips and/or max_dists")
    if floors.psnr_only:
        res = codec.encode(pic, min_psnr=min_psnr)
        return res, res.psnr, None
    if codec.caps.floor_search:
        res = codec.encode_floor(pic, **floors.knob())
        return res, res.psnr, res.params.get("ms_ssim")
    ref = Reference(pic.reference())  # its perceptual features computed once for every candidate
    # a codec whose encode splits off a quality-independent analysis (the neural encoder pass and sensitivities)
    # runs it once for every candidate: the same streams, one encoder pass instead of up to ten
    shared = {"analysis": codec.analyse(pic)} if codec.caps.analysis else {}

    def scored(res: EncodeResult) -> tuple[EncodeResult, dict]:
        return res, floors.scores(ref, decoded_planes(codec.decode(res.data), pic.mode))

    if min_psnr is not None:
        res, scores = scored(codec.encode(pic, min_psnr=min_psnr, **shared))
        if floors.met(scores):
            return _with(res, scores, floors)

    def probe(x: float) -> Probe:
        res, scores = scored(codec.encode(pic, quality=x, measure=False, **shared))
        return Probe(x, floors.margin(scores), len(res.data), (res, scores))

    # 50 first, then 100 if 50 misses: a miss at 100 means the floor is unreachable
    search = cheapest_passing(probe, passing=100.0, failing=0.0, start=(50.0,), max_probes=max(iterations, 1) + 1,
                              min_width=100.0 / 2**iterations, size_gap=size_gap)
    if search.best is None:
        raise QualityFloorUnreachable(unreachable_message(codec.name, search.probes[-1].payload[1], floors))
    return _with(*search.best.payload, floors)


def _with(res: EncodeResult, scores: dict, floors: Floors) -> tuple[EncodeResult, float, float | None]:
    """``res`` with the floors and the measured figures (ms_ssim / lpips / dists) in its params."""
    measured = {k: v for k, v in scores.items() if k != "psnr"}
    out = EncodeResult(res.data, res.width, res.height, scores["psnr"], dict(res.params, **floors.knob(), **measured))
    return out, scores["psnr"], scores.get("ms_ssim")


def encode_with(codec, pic: Picture, *, quality=None, target_bpp=None, min_psnr=None, min_ms_ssim=None,
                max_lpips=None, max_dists=None, measure: bool = True) -> EncodeResult:
    """``codec.encode`` with three more floors, ``min_ms_ssim``, ``max_lpips`` and ``max_dists``, for any codec
    (combinable with each other and with ``min_psnr``: all must hold)."""
    floors = Floors(min_psnr, min_ms_ssim, max_lpips, max_dists)
    if isinstance(codec, AutoCodec):
        return codec.encode(pic, quality=quality, target_bpp=target_bpp, measure=measure, **floors.knob())
    if not floors or floors.psnr_only:
        return codec.encode(pic, quality=quality, target_bpp=target_bpp, min_psnr=min_psnr, measure=measure)
    if quality is not None or target_bpp is not None:
        raise ValueError("MS-SSIM, LPIPS and DISTS floors combine with each other and min_psnr, "
                         "not with quality or target_bpp")
    return smallest_meeting(codec, pic, **floors.knob())[0]


def _num(x: float | None):
    """JSON-safe number (tables keep params as strict JSON)."""
    if x is None:
        return None
    return round(x, 4) if math.isfinite(x) else ("inf" if x > 0 else "-inf")


# ------------------------------------------------------------------------------------------ auto
@CODECS.register("auto")
class AutoCodec(Codec):
    """Per image, the smallest stream among ``codecs`` whose decoded quality meets the floor.

    Every enabled codec runs its own floor search (:func:`smallest_meeting`); the smallest qualifying stream
    wins. ``passthrough`` (the original file) is the fallback when no codec reaches the floor, and also wins
    when the original file is smaller than every qualifying stream — an archive never stores an image in more
    bytes than its source. The chosen stream is the chosen codec's own, so decoding never needs ``auto``.

    ``EncodeResult.params`` = the chosen stream's params plus ``{"auto": {"chosen", "candidates" (name → stream
    bytes, "unreachable", or "error: …"), "floor", "psnr", "ms_ssim"}}``; ``psnr`` and ``ms_ssim`` are measured
    on the chosen stream by decoding it, and so are ``lpips`` / ``dists`` when they have a floor.

    For a JPEG source ``jpeg-exact`` is a candidate too: the original rebuilt bit for bit meets every floor, in
    fewer bytes than the file where the transcode helps (its candidate entry is then its stream size, else
    ``"fallback: <reason>"``).
    """

    name = "auto"
    caps = Capabilities(keeps_source=True)

    def __init__(self, codecs: Sequence[Codec], *, min_psnr: float | None = None,
                 min_ms_ssim: float | None = None, max_lpips: float | None = None, max_dists: float | None = None,
                 passthrough: PassthroughCodec | None = None):
        self.codecs: dict[str, Codec] = {c.name: c for c in codecs if c.name not in _EXACT_TIER}
        self.passthrough = passthrough or PassthroughCodec()
        self.exact = JpegExactCodec(passthrough=self.passthrough)
        self.floors = Floors(min_psnr, min_ms_ssim, max_lpips, max_dists)  # defaults; encode's own override them

    @classmethod
    def from_spec(cls, spec: CodecSpec) -> "AutoCodec":
        names = _codec_list(spec.codecs)
        bad = [n for n in names if n in (cls.name, "lossless")]
        if bad:
            raise ValueError(f"{bad[0]!r} cannot be one of the codecs auto chooses from")
        # the exact tier (passthrough, jpeg-exact) is always considered; listing it changes nothing
        return cls([build(spec.member(n)) for n in names if n not in _EXACT_TIER])

    def member(self, name: str) -> Codec | None:
        """The enabled codec called ``name`` (``passthrough`` and ``jpeg-exact`` included), else None."""
        tier: dict[str, Codec] = {self.passthrough.name: self.passthrough, self.exact.name: self.exact}
        return tier.get(name) or self.codecs.get(name)

    def encode(self, pic: Picture, *, quality: float | None = None, target_bpp: float | None = None,
               min_psnr: float | None = None, min_ms_ssim: float | None = None, max_lpips: float | None = None,
               max_dists: float | None = None, measure: bool = True) -> EncodeResult:
        if quality is not None or target_bpp is not None:
            raise ValueError("codec auto chooses by quality floors (min_psnr / min_ms_ssim / max_lpips / "
                             "max_dists), not quality or target_bpp")
        floors = dataclasses.replace(self.floors, **Floors(min_psnr, min_ms_ssim, max_lpips, max_dists).knob())
        if not floors:
            raise ValueError("codec auto needs a quality floor: min_psnr, min_ms_ssim, max_lpips and/or max_dists")
        floor = floors.knob()
        candidates: dict[str, object] = {}
        best: tuple[EncodeResult, str, float, float | None] | None = None
        for name, codec in self.codecs.items():
            try:
                res, p, m = smallest_meeting(codec, pic, **floor)
            except QualityFloorUnreachable:
                candidates[name] = "unreachable"
                continue
            except (LatentarcError, ValueError, OSError, RuntimeError) as e:  # e.g. a size a format cannot hold
                candidates[name] = f"error: {type(e).__name__}: {e}"[:300]
                continue
            candidates[name] = len(res.data)
            if best is None or len(res.data) < len(best[0].data):
                best = (res, name, p, m)
        pt = self.passthrough.encode(pic)
        candidates[self.passthrough.name] = len(pt.data)
        if best is None or len(pt.data) < len(best[0].data):
            best = (pt, self.passthrough.name, math.inf, 1.0)
        if is_jpeg(pic.source_bytes):
            ex = self.exact.encode(pic)
            fallback = ex.params["exact"].get("fallback")
            candidates[self.exact.name] = len(ex.data) if fallback is None else f"fallback: {fallback}"
            if fallback is None and len(ex.data) < len(best[0].data):
                best = (ex, self.exact.name, math.inf, 1.0)
        res, name, p, m = best
        if m is None and measure:
            p, m = _measure(self.member(name), pic, res.data)
        auto = {"chosen": name, "candidates": candidates, "floor": floor, "psnr": _num(p), "ms_ssim": _num(m)}
        for metric, ceiling in (("lpips", floors.max_lpips), ("dists", floors.max_dists)):
            if ceiling is not None:  # the exact tier restores the original: distance 0 (finite: kept unrounded)
                auto[metric] = EXACT_SCORES[metric] if name in _EXACT_TIER else res.params.get(metric)
        return EncodeResult(res.data, res.width, res.height, p, dict(res.params, auto=auto))

    def decode(self, data: bytes, refine=None, refiner=None) -> Decoded:
        return self._for(data).decode(data, refine, refiner)

    def info(self, data: bytes) -> dict:
        return self._for(data).info(data)

    def _for(self, data: bytes) -> Codec:
        name = bitstream.parse(data).codec
        return self.member(name) or codec_for_stream(data)
