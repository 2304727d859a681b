"""``latentarc bench IMAGES --codecs tae-f2,avif,jxl,webp,jpeg --out DIR``: multi-codec rate–distortion and speed.

For every image (sorted, first ``limit``, centre-cropped to at most ``crop``×``crop``), every codec and every
operating point (a quality 0–100, or a rate such as ``0.03bpp`` reached by the codec's rate control): encode (timed,
``measure=False``), decode (timed), PSNR, MS-SSIM, LPIPS and DISTS of the decoded colour planes against the
original's (exactly as the codecs measure them), bits per pixel of the whole LARC stream (container included, for
every codec alike). One untimed warm-up encode/decode per codec and process on a 64×64 crop runs first.

An image is the unit of work: all its codecs and points are scored against one
:class:`~latentarc.codec.metrics.Reference` (the original's perceptual features computed once), and each finished
(image, codec) is appended to ``rows.jsonl`` in the output folder, so a run that is stopped resumes where it was (same
settings), and ``workers`` processes can share the images.

Per codec and point the *mean curve* averages bpp, PSNR, MS-SSIM, LPIPS and DISTS over the images; speeds are
total megapixels / total seconds. Speed per core: every encode and decode also records the process's CPU seconds
(``time.process_time``: all its threads — torch's, libavif's, libjxl's); cores busy = CPU s / wall s, and MP/s per
core = MP/s ÷ cores busy = megapixels / CPU seconds. Measured rather than taken from a thread setting, it is what a
codec gets out of each core it actually kept busy, and a busy machine's waiting (wall time, not CPU time) does not
lower it. ``threads`` records torch's intra-op thread count for reference.

BD-rate (PSNR) of each codec's mean curve against AVIF's (the first codec when AVIF is not benchmarked) uses
:func:`latentarc.codec.rd.bd_report`: the auto method (cubic with ≥ 4 points, else piecewise-linear), the
piecewise-linear figure always, and whether the cubic fit is monotonic. Further BD-rates use MS-SSIM in dB
(``-10·log10(1 − MS-SSIM)``), LPIPS and DISTS as ``-10·log10(distance)`` dB as the quality axis
(:mod:`.rd_perceptual`, which also gives the bpp each codec needs at fixed LPIPS / DISTS levels). ``metrics``
(``--metrics psnr,ms-ssim,lpips,dists``, default all; PSNR always) skips the costly ones: on one core DISTS costs
~8 s/MP per point once the reference is prepared, LPIPS ~1 s/MP; both run after the decode, outside its timing.

A neural codec can be listed with an entropy model, ``NAME@ENTROPY`` (e.g. ``tae-f2@tae-f2-ctx``), to compare
entropy models against the classical codecs in one run, and with an encoder-side latent search of N steps,
``NAME[@ENTROPY]+search=N`` (e.g. ``tae-f2@tae-f2-ctx+search=20``).

Writes into ``out_dir``: ``rows.jsonl`` (the resumable record), ``rd.json`` (rows, summary, speed, BD tables, bpp
at equal quality), ``rd_psnr.png``, ``rd_msssim.png``, ``rd_lpips.png`` / ``rd_dists.png`` (when measured),
``speed.png`` and ``index.html`` (self-contained: inline CSS, the plots embedded as base64 PNG).
"""

from __future__ import annotations

import base64
import html
import itertools
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..codec.spec import DEFAULT_CODEC
from .bench_inputs import json_safe
from .rd_perceptual import (COMMON_NOTE, EQUAL_QUALITY_NOTE, LEVELS, METRICS, PERCEPTUAL, common_subset,
                            common_subset_cells, distance_db, equal_quality, equal_quality_cells,
                            format_equal_quality, parse_metrics)

#: the default codec, the stock model it was trained from, and the classical codecs
DEFAULT_CODECS = (DEFAULT_CODEC, "tae-f2", "avif", "jxl", "webp", "jpeg")
# Each scale's coarsest setting (0) is 0.05–0.09 bpp for tae-f2 on held-out ~1 MP photos (005, 025, 035), 0.09–0.13
# avif, 0.08–0.13 jpeg (q0 = q1), 0.10–0.21 webp, 0.14–0.25 jxl: the 0–100 scales stop above the ≈0.03 bpp wanted,
# so neural codecs add a 0.03 bpp rate-controlled point (their step range goes well past quality 0's).
DEFAULT_POINTS = {"tae-f2": ["0.03bpp", 0, 15, 30, 50, 70]}
CLASSICAL_POINTS = [0, 10, 30, 50, 70, 90]
REFERENCE = "avif"
#: the resumable record of a run, in its output folder: a config line, then one line per finished (image, codec)
PROGRESS_FILE = "rows.jsonl"


class Point(NamedTuple):
    """One operating point: a ``quality`` (0–100) or a ``target_bpp`` (the codec's own rate control)."""

    quality: float | None
    target_bpp: float | None = None

    @classmethod
    def parse(cls, x) -> "Point":
        """``30`` / ``"30"`` → quality 30; ``"0.03bpp"`` → 0.03 bpp through rate control."""
        if isinstance(x, Point):
            return x
        from .bench_inputs import parse_qualities, parse_targets

        text = str(x).strip()
        if text.endswith("bpp"):
            rate = parse_targets(text[:-3])  # a positive finite number
            if len(rate) != 1:
                raise ValueError(f"bad operating point {x!r}: a quality 0–100 or a rate like 0.03bpp")
            return cls(None, rate[0])
        quality = parse_qualities(text, allow_empty=True)  # a number in [0, 100]
        if len(quality) != 1:
            raise ValueError(f"bad operating point {x!r}: a quality 0–100 or a rate like 0.03bpp")
        return cls(quality[0])

    @property
    def label(self) -> str:
        return f"{self.target_bpp:g}bpp" if self.target_bpp is not None else f"{self.quality:g}"

    def encode_args(self) -> dict:
        return {"target_bpp": self.target_bpp} if self.target_bpp is not None else {"quality": self.quality}


def parse_points(text: str) -> list[Point]:
    """``--qualities`` of the RD benchmark: comma-separated qualities and/or ``Nbpp`` rates."""
    pts = list(dict.fromkeys(Point.parse(x) for x in text.split(",") if x.strip()))
    if not pts:
        raise ValueError("--qualities is empty")
    return pts


class BenchCodec(NamedTuple):
    """A bench codec spec taken apart: ``NAME[@ENTROPY[:RDOQ]][+search=N][+global][+fullres]``."""

    name: str
    entropy: str  # "" = the codec's own entropy model
    search: int | None  # latent-search steps, None when not asked
    global_step: bool = False  # one quantization step for all channels (the baseline of adaptive steps)
    full_resolution: bool = False  # never code a low bpp target at a reduced resolution (``codec.neural``)

    @classmethod
    def parse(cls, spec: str) -> "BenchCodec":
        body, *options = spec.split("+")
        search, global_step, full_resolution = None, False, False
        for o in options:
            key, eq, value = o.partition("=")
            if key == "search" and eq:
                try:
                    search = int(value)
                except ValueError:
                    raise ValueError(f"bad codec spec {spec!r}: +search= takes a whole number of steps") from None
            elif o == "global":
                global_step = True
            elif o == "fullres":
                full_resolution = True
            else:
                raise ValueError(f"bad codec spec {spec!r}: options are +search=N, +global and +fullres")
        name, _, entropy = body.partition("@")
        return cls(name, entropy, search, global_step, full_resolution)

    @property
    def is_variant(self) -> bool:
        """A neural codec with other settings than its defaults (its BD-rate against the base is reported)."""
        return bool(self.entropy or self.search is not None or self.global_step or self.full_resolution)


def default_points(codec: str) -> list[Point]:
    name = BenchCodec.parse(codec).name
    from latentarc.codec.classical import CLASSICAL

    return [Point.parse(x) for x in DEFAULT_POINTS.get(name, CLASSICAL_POINTS if name in CLASSICAL
                                                       else DEFAULT_POINTS["tae-f2"])]


def _codec_names(codecs) -> list[str]:
    if isinstance(codecs, str):
        codecs = codecs.split(",")
    out = list(dict.fromkeys(c.strip() for c in codecs if c and c.strip()))
    if not out:
        raise ValueError("--codecs is empty")
    bad = [c for c in out if c in ("auto", "passthrough")]
    if bad:
        raise ValueError(f"cannot benchmark {', '.join(bad)} on a quality scale")
    return out


def build_codec(spec: str, *, weights=None, device=None):
    """``NAME``, ``NAME@ENTROPY[:RDOQ]`` (a neural codec with that entropy model, and optionally that strength
    of RD-optimised rounding), either followed by ``+search=N`` (N steps of encoder-side latent search) and/or
    ``+global`` (one quantization step for every channel) and/or ``+fullres`` (low bpp targets at full resolution,
    overshooting, as before ``codec.neural.CODED_SCALES``) → the codec."""
    from latentarc.codec.codecs import get_codec

    from .bench_inputs import entropy_spec

    s = BenchCodec.parse(spec)
    kw = {} if s.search is None else {"latent_search": s.search}
    if s.global_step:
        kw["global_step"] = True
    if s.full_resolution:
        kw["full_resolution"] = True
    codec = get_codec(s.name, weights=weights, device=device, **(entropy_spec(s.entropy) if s.entropy else {}), **kw)
    if s.is_variant and not codec.caps.analysis:
        raise ValueError(f"{s.name} has no latent: @ENTROPY, +search=, +global and +fullres apply to neural codecs")
    return codec


def _points_for(points, codec: str) -> list[Point]:
    if points is None:
        return default_points(codec)
    if isinstance(points, dict):
        return [Point.parse(q) for q in points[codec]] if codec in points else default_points(codec)
    return [Point.parse(q) for q in points]


def _msssim_db(m: float | None) -> float | None:
    if m is None or not math.isfinite(m):
        return None
    return math.inf if m >= 1.0 else -10.0 * math.log10(1.0 - m)


class Analysis(NamedTuple):
    analysis: object | None
    seconds: float  # wall
    cpu_s: float  # process CPU


def analysed(codec, pic) -> Analysis:
    """(analysis, seconds, CPU seconds) for a codec whose encode splits into a quality-independent analysis and the
    coding (NeuralCodec.analyse: the encoder pass, the latent search, the sensitivities); (None, 0, 0) for the others.
    The bench runs it once per image and charges its time to every quality's encode, so ``encode_s`` is still
    what one encode at that quality costs, while a slow analysis (the latent search) is not repeated per point."""
    if not codec.caps.analysis:
        return Analysis(None, 0.0, 0.0)
    c0, t0 = time.process_time(), time.perf_counter()
    a = codec.analyse(pic)
    return Analysis(a, time.perf_counter() - t0, time.process_time() - c0)


def measure(codec, pic, point, analysis=None, analysis_s: float = 0.0, analysis_cpu_s: float = 0.0,
            metrics: tuple[str, ...] = METRICS, device=None, reference=None) -> dict:
    """One encode + decode at ``point`` (a :class:`Point`, or a quality); ``analysis`` / ``analysis_s`` /
    ``analysis_cpu_s``: from :func:`analysed` for this ``pic``. Wall seconds (``encode_s``) and process CPU seconds
    (``encode_cpu_s``) of each side. ``metrics``: which of MS-SSIM, LPIPS and DISTS to measure (the others are None;
    PSNR always), LPIPS and DISTS on ``device``; their time (``metrics_s``) is outside the codec's timings.
    ``reference``: this picture's :class:`~latentarc.codec.metrics.Reference`, shared by its points."""
    from latentarc.codec.classical import decoded_planes
    from latentarc.codec.metrics import METRIC_ORDER, METRICS as REGISTRY, Reference

    point = Point.parse(point)
    shared = {} if analysis is None else {"analysis": analysis}
    c0, t0 = time.process_time() - analysis_cpu_s, time.perf_counter() - analysis_s
    res = codec.encode(pic, **point.encode_args(), measure=False, **shared)
    c1, t1 = time.process_time(), time.perf_counter()
    dec = codec.decode(res.data)
    c2, t2 = time.process_time(), time.perf_counter()
    test = decoded_planes(dec, pic.mode)
    reference = reference or Reference(pic.reference(), device=device)
    mp = pic.width * pic.height / 1e6
    t3 = time.perf_counter()
    scores, cpu = {m: None for m in METRICS}, {}
    for m in (m for m in METRIC_ORDER if m == "psnr" or m in metrics):
        c = time.process_time()
        scores[m] = REGISTRY.get(m)(reference, test)
        cpu[m] = time.process_time() - c
    return {
        "point": point.label,
        "quality": point.quality,
        "target_bpp": point.target_bpp,
        "bytes": len(res.data),
        "bpp": len(res.data) * 8.0 / (pic.width * pic.height),
        **scores,
        "metrics_s": time.perf_counter() - t3,
        "metric_cpu_s": cpu,  # per metric: process CPU seconds (the first point of an image includes the reference's pass)
        "encode_s": t1 - t0,
        "decode_s": t2 - t1,
        "encode_cpu_s": c1 - c0,
        "decode_cpu_s": c2 - c1,
        "encode_mp_s": mp / (t1 - t0) if t1 > t0 else None,
        "decode_mp_s": mp / (t2 - t1) if t2 > t1 else None,
        "base_step": res.params.get("base_step"),  # neural codecs: the quantization operating point
        "coded_size": res.params.get("coded_size"),  # neural codecs at a reduced resolution: [width, height]
    }


def _mean(xs) -> float | None:
    v = [x for x in xs if x is not None]
    return float(np.mean(v)) if v else None


def summarise(rows: list[dict], codecs: list[str], points: dict[str, list[Point]]) -> tuple[dict, dict]:
    curves: dict[str, list[dict]] = {}
    speed: dict[str, dict] = {}
    for c in codecs:
        rs_c = [r for r in rows if r["codec"] == c]
        curves[c] = []
        for q in points[c]:
            rs = [r for r in rs_c if r["point"] == q.label]
            if not rs:
                continue
            mp = sum(r["width"] * r["height"] for r in rs) / 1e6
            curves[c].append({
                "point": q.label,
                "quality": q.quality,
                "target_bpp": q.target_bpp,
                "images": len(rs),
                "bpp": float(np.mean([r["bpp"] for r in rs])),
                "psnr": float(np.mean([r["psnr"] for r in rs])),
                "ms_ssim": _mean([r["ms_ssim"] for r in rs]),
                "lpips": _mean([r["lpips"] for r in rs]),
                "dists": _mean([r["dists"] for r in rs]),
                "encode_mp_s": mp / sum(r["encode_s"] for r in rs),
                "decode_mp_s": mp / sum(r["decode_s"] for r in rs),
            })
        if rs_c:
            mp = sum(r["width"] * r["height"] for r in rs_c) / 1e6
            speed[c] = {"megapixels": mp}
            for side in ("encode", "decode"):
                speed[c].update(per_core(mp, sum(r[f"{side}_s"] for r in rs_c),
                                         sum(r[f"{side}_cpu_s"] for r in rs_c), side))
    return curves, speed


def per_core(mp: float, wall_s: float, cpu_s: float, side: str) -> dict:
    """``{side}_mp_s``, ``{side}_cores`` (CPU s / wall s: cores kept busy) and ``{side}_mp_s_per_core``
    (MP/s ÷ cores busy = MP / CPU s)."""
    return {f"{side}_mp_s": mp / wall_s if wall_s > 0 else None,
            f"{side}_cores": cpu_s / wall_s if wall_s > 0 else None,
            f"{side}_mp_s_per_core": mp / cpu_s if cpu_s > 0 else None}


#: BD-rate quality axes: (entry key, curve key, the curve value → a higher-is-better dB axis)
BD_AXES = (("psnr", "psnr", lambda v: v), ("ms_ssim_db", "ms_ssim", _msssim_db),
           ("lpips_db", "lpips", distance_db), ("dists_db", "dists", distance_db))
AXIS_LABELS = {"psnr": "PSNR", "ms_ssim_db": "MS-SSIM dB", "lpips_db": "LPIPS dB", "dists_db": "DISTS dB"}
AXES_NOTE = ("quality axes: PSNR dB; MS-SSIM dB = -10·log10(1 − MS-SSIM); LPIPS dB = -10·log10(LPIPS); "
             "DISTS dB = -10·log10(DISTS)")


def _bd_entry(pts: list[dict], ref: list[dict]) -> dict:
    """BD-rate of curve ``pts`` against ``ref`` on every axis of :data:`BD_AXES` (an error entry where the curves
    do not overlap or the metric was not measured)."""
    from latentarc.codec.rd import bd_report

    entry: dict = {}
    for key, metric, axis in BD_AXES:
        a, b = ([(p["bpp"], axis(p.get(metric))) for p in c if p.get(metric) is not None] for c in (pts, ref))
        a = [(r, q) for r, q in a if q is not None and math.isfinite(q)]
        b = [(r, q) for r, q in b if q is not None and math.isfinite(q)]
        if not a or not b:
            entry[key] = {"bd_rate_pct": None, "error": f"{metric} not measured"}
            continue
        try:
            entry[key] = bd_report([r for r, _ in a], [q for _, q in a], [r for r, _ in b], [q for _, q in b])
        except ValueError as e:
            entry[key] = {"bd_rate_pct": None, "error": str(e)}
    return entry


def bd_table(curves: dict[str, list[dict]], reference: str) -> dict:
    """Every codec's BD-rate against ``reference``."""
    ref = curves.get(reference) or []
    return {c: _bd_entry(pts, ref) for c, pts in curves.items() if c != reference}


def bd_pairs(curves: dict[str, list[dict]]) -> dict:
    """Each neural codec's BD-rate against every classical codec benchmarked — the yardstick table (a BD-rate
    against AVIF and AVIF's against JPEG do not compose into one against JPEG)."""
    from latentarc.codec.classical import CLASSICAL

    classical = [c for c in curves if c in CLASSICAL]
    return {n: {c: _bd_entry(curves[n], curves[c]) for c in classical}
            for n in curves if n not in CLASSICAL and n != "passthrough"}


def bd_variants(curves: dict[str, list[dict]]) -> dict:
    """Each variant (``NAME@ENTROPY``, ``+search=N``, ``+global``) against its base codec ``NAME`` when that ran
    too: what the entropy model, the search or adaptive steps are worth at equal quality."""
    out = {}
    for c in curves:
        s = BenchCodec.parse(c)
        if s.is_variant and s.name in curves:
            out[c] = {"against": s.name, **_bd_entry(curves[c], curves[s.name])}
    return out


def format_variants(variants: dict) -> str:
    if not variants:
        return ""
    head = f"{'variant':<24} {'against':<10} {'PSNR':>9} {'MS-SSIM dB':>10} {'LPIPS dB':>10} {'DISTS dB':>10}"
    lines = ["BD-rate of each variant against its base codec (negative = the variant needs fewer bits):", head,
             "-" * len(head)]
    for c, e in variants.items():
        cells = [_pct(e[k].get("bd_rate_pct")) for k in ("psnr", "ms_ssim_db", "lpips_db", "dists_db")]
        lines.append(f"{c:<24} {e['against']:<10} {cells[0]:>9} {cells[1]:>10} {cells[2]:>10} {cells[3]:>10}")
    return "\n".join(lines)


def _pct(x) -> str:
    return "n/a" if x is None else f"{x:+.2f}%"


_OTHER_AXES = ("ms_ssim_db", "lpips_db", "dists_db")


def _other_cells(e: dict) -> list[str]:
    """The BD-rates of an entry on the axes besides PSNR (auto method, as the PSNR column)."""
    return [_pct(e.get(k, {}).get("bd_rate_pct")) for k in _OTHER_AXES]


def format_bd(bd: dict, reference: str) -> str:
    others = " ".join(f"{AXIS_LABELS[k]:>10}" for k in _OTHER_AXES)
    head = (f"{'codec':<10} {'BD-rate':>9} {'method':>7} {'linear':>9} {'PSNR interval dB':>17} {'cubic ok':>8} "
            f"{others}")
    lines = [f"BD-rate vs {reference} (negative = fewer bits than {reference} at equal quality; {AXES_NOTE}):",
             head, "-" * len(head)]
    for c, e in bd.items():
        p = e["psnr"]
        rest = " ".join(f"{x:>10}" for x in _other_cells(e))
        if p.get("bd_rate_pct") is None:
            lines.append(f"{c:<10} {'n/a':>9} {'':>7} {'':>9} {'':>17} {'':>8} {rest}  {p.get('error', '')}")
            continue
        lo, hi = p["psnr_interval"]
        mono = "" if p["method"] != "cubic" else ("yes" if p.get("cubic_monotone") else "NO")
        lines.append(f"{c:<10} {_pct(p['bd_rate_pct']):>9} {p['method']:>7} {_pct(p['linear_pct']):>9} "
                     f"{f'{lo:.2f}–{hi:.2f}':>17} {mono:>8} {rest}")
    lines.append("  method: cubic = Bjøntegaard fit (≥ 4 points), linear = piecewise-linear log-rate; 'cubic ok' "
                 "NO means the PSNR fit bends back, prefer the linear figure (rd.json has both for every axis).")
    return "\n".join(lines)


def _pair_cells(row: dict) -> list[list[str]]:
    """One ``bd_pairs`` row → [against, BD-rate PSNR, PSNR interval, BD-rate MS-SSIM / LPIPS / DISTS dB] per
    classical codec."""
    cells = []
    for c, e in row.items():
        p = e["psnr"]
        span = "" if p.get("bd_rate_pct") is None else "{:.2f}–{:.2f}".format(*p["psnr_interval"])
        cells.append([c, _pct(p.get("bd_rate_pct")), span, *_other_cells(e)])
    return cells


def format_pairs(pairs: dict) -> str:
    lines = []
    for n, row in pairs.items():
        if not row:
            continue
        lines.append(f"BD-rate of {n} against each classical codec (negative = {n} needs fewer bits; {AXES_NOTE}):")
        head = f"{'against':<10} {'PSNR':>9} {'PSNR interval dB':>17} " + " ".join(
            f"{AXIS_LABELS[k]:>10}" for k in _OTHER_AXES)
        lines += [head, "-" * len(head)]
        lines += [f"{c:<10} {bd:>9} {span:>17} " + " ".join(f"{x:>10}" for x in rest)
                  for c, bd, span, *rest in _pair_cells(row)]
    return "\n".join(lines)


def format_metric_cost(cost: dict[str, float]) -> str:
    """One line: each metric's process CPU seconds per megapixel per point."""
    from latentarc.codec.metrics import METRICS as REGISTRY

    return ("metric cost (CPU s per MP per point, the reference's pass included): "
            + ", ".join(f"{REGISTRY.get(m).label} {v:.2f}" for m, v in cost.items()))


def format_speed(speed: dict[str, dict], threads: int | None = None) -> str:
    """Every codec's encode and decode speed side by side: MP/s, cores busy, MP/s per core."""
    def n(x, fmt):
        return "n/a" if x is None else format(x, fmt)

    head = (f"{'codec':<10} {'enc MP/s':>9} {'cores':>6} {'MP/s/core':>10}   "
            f"{'dec MP/s':>9} {'cores':>6} {'MP/s/core':>10}")
    lines = ["speed per core (MP/s ÷ cores busy; cores busy = process CPU s ÷ wall s over all the codec's runs"
             + (f"; torch threads {threads}" if threads else "") + "):", head, "-" * len(head)]
    for c, s in speed.items():
        lines.append(f"{c:<10} " + "   ".join(
            f"{n(s.get(f'{d}_mp_s'), '9.3f'):>9} {n(s.get(f'{d}_cores'), '6.2f'):>6} "
            f"{n(s.get(f'{d}_mp_s_per_core'), '10.3f'):>10}" for d in ("encode", "decode")))
    return "\n".join(lines)


def _num(x, fmt: str = ".4f") -> str:
    return "n/a" if x is None else format(x, fmt)


def format_curves(curves: dict[str, list[dict]], speed: dict[str, dict]) -> str:
    head = (f"{'codec':<10} {'point':>7} {'bpp':>8} {'PSNR dB':>8} {'MS-SSIM':>8} {'LPIPS':>7} {'DISTS':>7} "
            f"{'enc MP/s':>9} {'dec MP/s':>9}")
    lines = ["mean curves:", head, "-" * len(head)]
    for c, pts in curves.items():
        for p in pts:
            lines.append(f"{c:<10} {p['point']:>7} {p['bpp']:8.4f} {p['psnr']:8.2f} {_num(p['ms_ssim']):>8} "
                         f"{_num(p['lpips']):>7} {_num(p['dists']):>7} {p['encode_mp_s']:9.3f} "
                         f"{p['decode_mp_s']:9.3f}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ plots / HTML
PLOTS = (("psnr", "PSNR (dB)", "rd_psnr.png"), ("ms_ssim", "MS-SSIM", "rd_msssim.png"),
         ("lpips", "LPIPS (lower is better)", "rd_lpips.png"), ("dists", "DISTS (lower is better)", "rd_dists.png"))
COLOURS = {"tae-f2": "#d62728", "tae-f2-ft": "#ff7f0e", "avif": "#1f77b4", "jxl": "#2ca02c", "webp": "#9467bd",
           "jpeg": "#7f7f7f"}


def _style(codec: str) -> dict:
    """A variant (``NAME@ENTROPY``, ``+search=N``) draws dashed in its base codec's colour, so it never takes the
    colour of another codec."""
    if codec in COLOURS:
        return {"color": COLOURS[codec]}
    return {"color": COLOURS.get(BenchCodec.parse(codec).name), "linestyle": "--"}


def _plots(curves: dict, speed: dict, out: Path) -> dict[str, Path]:
    from latentarc.pipeline.report import pyplot

    plt = pyplot()
    files = {}
    for metric, label, name in PLOTS:
        have = {c: [p for p in pts if p[metric] is not None and math.isfinite(p[metric])] for c, pts in curves.items()}
        if not any(have.values()):
            continue  # not measured (--metrics): no empty plot
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for c, pts in have.items():
            if pts:
                ax.plot([p["bpp"] for p in pts], [p[metric] for p in pts], marker="o", label=c, **_style(c))
        if metric in PERCEPTUAL:  # distances span 0.03–2 bpp: a log rate axis, and the equal-quality levels
            ax.set_xscale("log")
            for level in LEVELS[metric]:
                ax.axhline(level, color="#999999", linestyle=":", linewidth=1)
        ax.set_xlabel("bits per pixel" + (" (log)" if metric in PERCEPTUAL else ""))
        ax.set_ylabel(label)
        ax.set_title(f"rate–distortion: bpp vs {label}")
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.savefig(out / name, dpi=100, bbox_inches="tight")
        plt.close(fig)
        files[metric] = out / name
    fig, ax = plt.subplots(figsize=(7, 4))
    names = list(speed)
    x = np.arange(len(names))
    ax.bar(x - 0.2, [speed[n]["encode_mp_s"] for n in names], 0.4, label="encode", color="#1f77b4")
    ax.bar(x + 0.2, [speed[n]["decode_mp_s"] for n in names], 0.4, label="decode", color="#ff7f0e")
    ax.set_xticks(x, names)
    ax.set_yscale("log")
    ax.set_ylabel("megapixels / s (log)")
    ax.set_title("speed (mean over all operating points)")
    ax.legend()
    fig.savefig(out / "speed.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    files["speed"] = out / "speed.png"
    return files


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"<img class=plot alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"


def _pairs_html(pairs: dict) -> list[str]:
    from latentarc.pipeline.report import html_table

    out = []
    for n, row in pairs.items():
        if not row:
            continue
        out += [f"<h2>BD-rate of {html.escape(n)} against each classical codec</h2>",
                html_table(["against", "BD-rate (PSNR)", "PSNR interval (dB)",
                            *(f"BD-rate ({AXIS_LABELS[k]})" for k in _OTHER_AXES)], _pair_cells(row))]
    return out


def _html(result: dict, files: dict[str, Path]) -> str:
    from latentarc.pipeline.report import html_table, page

    ref = result["reference"]
    bd_rows = []
    for c, e in result["bd"].items():
        p = e["psnr"]
        if p.get("bd_rate_pct") is None:
            bd_rows.append([c, "n/a", "", "", p.get("error", ""), "", *_other_cells(e)])
            continue
        lo, hi = p["psnr_interval"]
        mono = "" if p["method"] != "cubic" else ("yes" if p.get("cubic_monotone") else "no")
        bd_rows.append([c, _pct(p["bd_rate_pct"]), p["method"], _pct(p["linear_pct"]), f"{lo:.2f}–{hi:.2f}", mono,
                        *_other_cells(e)])
    curve_rows = [
        [c, p["point"], f"{p['bpp']:.4f}", f"{p['psnr']:.2f}", _num(p["ms_ssim"]), _num(p["lpips"]),
         _num(p["dists"]), f"{p['encode_mp_s']:.3f}", f"{p['decode_mp_s']:.3f}"]
        for c, pts in result["curves"].items() for p in pts
    ]
    eq_head, eq_rows = equal_quality_cells(result["equal_quality"])
    same_head, same_rows = common_subset_cells(result.get("equal_quality_same_images") or {})
    def num(x):
        return "n/a" if x is None else f"{x:.3f}"

    speed_rows = [[c, f"{s['megapixels']:.3f}",
                   *(num(s.get(f"{d}_{k}")) for d in ("encode", "decode") for k in ("mp_s", "cores", "mp_s_per_core"))]
                  for c, s in result["speed"].items()]
    imgs = result["images"]
    body = [
        "<h1>latentarc rate–distortion benchmark</h1>",
        f"<div class=muted>{len(imgs)} images"
        + (f", centre-cropped to ≤ {result['crop']}×{result['crop']}" if result.get("crop") else "")
        + f"; codecs {', '.join(result['codecs'])}; bpp of the whole LARC stream</div>",
        f"<h2>BD-rate vs {html.escape(ref)}</h2>",
        html_table(["codec", "BD-rate (PSNR)", "method", "piecewise-linear", "PSNR interval (dB)", "cubic monotone",
                    *(f"BD-rate ({AXIS_LABELS[k]})" for k in _OTHER_AXES)], bd_rows),
        f"<p class=muted>Negative: fewer bits than {html.escape(ref)} at equal quality. cubic = Bjøntegaard fit "
        f"(≥ 4 points), linear = piecewise-linear log-rate interpolation. {html.escape(AXES_NOTE)}.</p>",
        *_pairs_html(result.get("bd_pairs") or {}),
        *(["<h2>bpp needed at equal quality</h2>", html_table(eq_head, eq_rows),
           f"<p class=muted>{html.escape(EQUAL_QUALITY_NOTE)}</p>"] if len(eq_head) > 1 else []),
        *(["<h2>bpp needed at equal quality, on the same images</h2>", html_table(same_head, same_rows),
           f"<p class=muted>{html.escape(COMMON_NOTE)} Reference: {html.escape(ref)}.</p>"]
          if len(same_head) > 1 and len(same_rows) > 1 else []),
        "<h2>Rate–distortion</h2>",
        *(_img(files[m], f"bpp vs {label}") for m, label, _ in PLOTS if m in files),
        "<h2>Speed</h2>",
        _img(files["speed"], "speed"),
        html_table(["codec", "megapixels", "encode MP/s", "encode cores busy", "encode MP/s per core",
                    "decode MP/s", "decode cores busy", "decode MP/s per core"], speed_rows),
        "<p class=muted>cores busy = process CPU seconds ÷ wall seconds; MP/s per core = MP/s ÷ cores busy "
        f"(torch threads {result.get('threads')}).</p>",
        f"<p class=muted>{html.escape(format_metric_cost(result['metric_cpu_s_per_mp']))}</p>",
        "<h2>Mean curves</h2>",
        html_table(["codec", "point", "bpp", "PSNR dB", "MS-SSIM", "LPIPS", "DISTS", "encode MP/s", "decode MP/s"],
                   curve_rows),
        "<h2>Images</h2>",
        html_table(["image", "width", "height"], [[i["image"], i["width"], i["height"]] for i in imgs]),
    ]
    return page("latentarc RD benchmark", "\n".join(body))


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


# ------------------------------------------------------------------------------------------ running
# One image is the unit of work: every codec and point on it, against one Reference (the original's perceptual
# features computed once). Each finished (image, codec) is appended to ``rows.jsonl`` in the output folder, so an interrupted
# run resumes where it stopped, and ``workers`` processes can share the images.
_WORKER: dict = {}


def _exit_with_parent() -> None:
    """A worker process whose bench was killed stops too, rather than measuring for nobody."""
    import threading

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(2)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def _init_worker(codecs: list[str], weights, device, threads: int | None, in_worker: bool = False) -> None:
    import torch

    if in_worker:
        _exit_with_parent()
    if threads:
        torch.set_num_threads(threads)
    _WORKER.clear()
    _WORKER.update(codecs={c: build_codec(c, weights=weights, device=device) for c in codecs}, device=device,
                   warm=set())


def bench_image(path: str, crop, points: dict[str, list[Point]], metrics: tuple[str, ...]) -> list[dict]:
    """The codecs of ``points`` (built by :func:`_init_worker`) at their points on one image: one record per codec,
    ``{"image", "codec", "points", "width", "height", "rows", "seconds"}``, or ``[{"image", "skipped"}]`` for an
    unreadable file."""
    from latentarc.codec.errors import ImageError
    from latentarc.codec.images import read_image
    from latentarc.codec.metrics import Reference

    from .bench_inputs import centre_crop

    name = Path(path).name
    try:
        pic = centre_crop(read_image(Path(path).read_bytes()), crop)
    except ImageError as e:
        return [{"image": name, "skipped": f"{type(e).__name__}: {e}"}]
    device = _WORKER["device"]
    reference = Reference(pic.reference(), device=device)
    out = []
    for c, pts in points.items():
        codec = _WORKER["codecs"][c]
        if c not in _WORKER["warm"]:  # one untimed warm-up per codec and process
            measure(codec, centre_crop(pic, 64), pts[-1], metrics=metrics, device=device)
            _WORKER["warm"].add(c)
        t0 = time.perf_counter()
        a = analysed(codec, pic)
        rows = [{"codec": c, "image": name, "width": pic.width, "height": pic.height,
                 **measure(codec, pic, q, a.analysis, a.seconds, a.cpu_s, metrics, device, reference)} for q in pts]
        out.append({"image": name, "codec": c, "points": [q.label for q in pts], "width": pic.width,
                    "height": pic.height, "rows": rows, "seconds": time.perf_counter() - t0})
    return out


def _progress(out: Path, config: dict, points: dict[str, list[str]]) -> dict[tuple[str, str], dict]:
    """``(image, codec) → record`` of what ``rows.jsonl`` already holds (a skipped image under codec ``""``);
    a new file is started with ``config``. ``ValueError`` when the folder holds a run with other settings, or a
    codec measured there at other points. Adding codecs or images to a run is fine: only what is missing runs."""
    path = out / PROGRESS_FILE
    if not path.exists():
        path.write_text(json.dumps({"config": config}) + "\n")
        return {}
    lines = path.read_text().splitlines()
    head = json.loads(lines[0]) if lines else {}
    if head.get("config") != config:
        raise ValueError(f"{path} holds a run with other settings ({head.get('config')}, here {config}); use "
                         f"another --out, or delete it to start again")
    done: dict[tuple[str, str], dict] = {}
    for line in lines[1:]:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill: that image and codec run again
        c = rec.get("codec", "")
        if c in points and rec["points"] != points[c]:
            raise ValueError(f"{path}: {c} was measured at points {rec['points']}, here {points[c]}; use "
                             f"another --out")
        done[(rec["image"], c)] = rec
    return done


def run_rd_bench(images, codecs=DEFAULT_CODECS, qualities=None, out_dir="rd-bench", crop=None, limit=None,
                 weights=None, *, device=None, metrics=None, workers: int = 1, summarise_only: bool = False,
                 log=None) -> dict:
    """Run the benchmark. ``images``: a folder or a list of image paths. ``qualities``: operating points — None
    (codec-specific defaults), one list for every codec, or ``{codec: list}``; a point is a quality or ``"Nbpp"``.
    ``metrics``: None (all), a comma-separated string or a list of ``psnr, ms-ssim, lpips, dists`` (PSNR is always
    measured). ``workers``: processes sharing the images (each with ``cores // workers`` torch threads). Resumes
    from ``rows.jsonl`` in ``out_dir``: image × codec pairs already measured there with the same settings are
    reused. ``summarise_only``: measure nothing, write ``rd.json`` and the page from what ``rows.jsonl`` holds (a long
    run's figures so far). Every table compares codecs on the same images: those every codec has measured.
    Returns the dict written to ``rd.json`` (plus ``files``: what was written)."""
    log = log or sys.stderr  # looked up per call: a default bound at import outlives a replaced stderr
    metrics = parse_metrics(metrics if metrics is None or isinstance(metrics, str) else ",".join(metrics))

    from .bench_inputs import list_images

    names = _codec_names(codecs)
    pts = {c: _points_for(qualities, c) for c in names}
    for c, ql in pts.items():
        if not ql:
            raise ValueError(f"no operating points for {c}")
    if crop is not None and crop < 1:
        raise ValueError("--crop must be at least 1")
    if workers < 1:
        raise ValueError("--workers must be at least 1")
    files = list_images(images, limit) if isinstance(images, (str, Path)) else [Path(p) for p in images][: limit or None]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = {"metrics": list(metrics), "crop": crop, "weights": None if weights is None else str(weights)}
    labels = {c: [q.label for q in ql] for c, ql in pts.items()}
    done = _progress(out, config, labels)
    todo = [(f, {c: pts[c] for c in names if (f.name, c) not in done}) for f in files if (f.name, "") not in done]
    todo = [(f, p) for f, p in todo if p]
    if done:
        print(f"{out / PROGRESS_FILE}: {len(files) - len(todo)} of {len(files)} images complete", file=log)
    if summarise_only:
        todo = []

    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None
    t_start = time.perf_counter()
    finished = itertools.count(1)
    with open(out / PROGRESS_FILE, "a") as progress:
        def record(recs: list[dict]) -> None:
            for rec in recs:
                done[(rec["image"], rec.get("codec", ""))] = rec
                progress.write(json.dumps(json_safe(rec)) + "\n")
            progress.flush()
            what = (f"skipped ({recs[0]['skipped']})" if "skipped" in recs[0] else
                    ", ".join(f"{r['codec']} {r['seconds']:.0f} s" for r in recs))
            print(f"[{next(finished)}/{len(todo)}] {recs[0]['image']}: {what}", file=log, flush=True)

        if workers == 1 or len(todo) <= 1:
            if todo:
                _init_worker(names, weights, device, threads)
            for f, p in todo:
                record(bench_image(str(f), crop, p, metrics))
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            for c in names:  # a bad name or model folder: its own error here, not a broken pool of workers
                build_codec(c, weights=weights, device="cpu")
            with ProcessPoolExecutor(min(workers, len(todo)), mp_context=multiprocessing.get_context("spawn"),
                                     initializer=_init_worker, initargs=(names, weights, device, threads, True)) as pool:
                for fut in as_completed([pool.submit(bench_image, str(f), crop, p, metrics) for f, p in todo]):
                    record(fut.result())

    wanted = [f.name for f in files]
    skipped = [{"image": n, "error": done[(n, "")]["skipped"]} for n in wanted if (n, "") in done]
    complete = [n for n in wanted if all((n, c) in done for c in names)]
    recs = [done[(n, c)] for n in complete for c in names]
    rows = [r for rec in recs for r in rec["rows"]]
    if not rows:
        raise ValueError("no image measured by every codec yet" if summarise_only or done else "no readable images")
    curves, speed = summarise(rows, names, pts)
    reference = REFERENCE if REFERENCE in names else names[0]
    mp = sum(r["width"] * r["height"] for r in rows) / 1e6
    metric_cost = {m: sum(r["metric_cpu_s"].get(m, 0.0) for r in rows) / mp for m in ("psnr", *metrics)}
    sizes = {rec["image"]: (rec["width"], rec["height"]) for rec in recs}
    result = {
        "codecs": names,
        "points": labels,
        "metrics": list(metrics),
        "crop": crop,
        "images": [{"image": n, "width": sizes[n][0], "height": sizes[n][1]} for n in complete],
        "images_pending": len(wanted) - len(complete) - len(skipped),
        "skipped": skipped,
        "reference": reference,
        "rows": rows,
        "curves": curves,
        "speed": speed,
        "threads": threads or _torch_threads(),
        "workers": workers,
        "bd": bd_table(curves, reference),
        "bd_pairs": bd_pairs(curves),
        "bd_variants": bd_variants(curves),
        "equal_quality": (eq := equal_quality(rows, names, metrics)),
        "equal_quality_same_images": common_subset(eq, reference),
        "seconds": time.perf_counter() - t_start,
        "codec_seconds": sum(rec["seconds"] for rec in recs),
        "metric_cpu_s_per_mp": metric_cost,  # mean over every point, reference passes included
    }
    files_written = _plots(curves, speed, out)
    (out / "rd.json").write_text(json.dumps(json_safe(result), indent=2))
    (out / "index.html").write_text(_html(result, files_written), encoding="utf-8")
    result["files"] = {k: str(v) for k, v in files_written.items()} | {"json": str(out / "rd.json"),
                                                                       "html": str(out / "index.html")}
    return result


def format_rd(r: dict) -> str:
    """The text the ``bench`` verb prints for a finished run."""
    parts = [format_curves(r["curves"], r["speed"]),
             format_speed(r["speed"], r["threads"]) + "\n" + format_metric_cost(r["metric_cpu_s_per_mp"]),
             format_bd(r["bd"], r["reference"])]
    parts += [t for t in (format_variants(r["bd_variants"]), format_pairs(r["bd_pairs"]),
                          format_equal_quality(r["equal_quality"], r.get("equal_quality_same_images"),
                                               r["reference"])) if t]
    return "\n\n".join(parts)
