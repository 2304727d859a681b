"""``latentarc bench``: rate–distortion and speed over a folder of images.

For every image (sorted, first ``--limit``, optionally centre-cropped to at most ``--crop``×``--crop``) and
every quality: encode (timed, ``measure=False`` so the time is the encoder's alone), decode (timed), PSNR and
MS-SSIM of the decoded colour planes against the original's, and bits per pixel of the whole stream. With
``--compare-global`` the same runs again with one global quantization step (the baseline), followed by the
Bjøntegaard delta rate of the adaptive curve against the baseline (:mod:`latentarc.codec.rd`).

Rate-control checks (adaptive codec only, the one ``latentarc encode`` uses by default):

* ``--targets 0.25,0.5,1.0``: every image is encoded with ``target_bpp`` (``measure=False``) and the achieved
  bpp's relative error against the target is recorded; per target the table gives n, mean and max |error| and
  how many images land outside ±5% (the codec's promise, "where the image allows it").
* ``--floors 24,27``: every image is encoded with ``min_psnr`` (which decodes several candidates internally),
  then the returned stream is decoded *independently* and its PSNR measured against the original; a stream
  below its floor is a violation (must never happen). Images whose floor the codec cannot reach raise
  :class:`~latentarc.codec.errors.QualityFloorUnreachable` — correct behaviour, counted separately.

``--qualities ""`` skips the RD table (only with ``--targets`` or ``--floors``).

Timing: one untimed warm-up encode/decode per variant on a small crop runs first, so lazy initialisation
(thread pools, kernels) is not charged to the first image. Speeds are total seconds / total megapixels.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from .bench_inputs import (centre_crop, entropy_spec, json_safe, list_images, parse_floors, parse_qualities, parse_targets,
                           read_pictures)

VARIANTS = {"adaptive": {"adaptive": True}, "global-step": {"adaptive": False}}
ENTROPY_PREFIX = "entropy:"  # --compare-entropy NAME adds the variant "entropy:NAME" (adaptive steps, that coder)


def variant_kwargs(variant: str) -> dict:
    if variant.startswith(ENTROPY_PREFIX):
        return {"adaptive": True, **entropy_spec(variant[len(ENTROPY_PREFIX):])}
    return VARIANTS[variant]


def _finite(x):
    return x if x is not None and math.isfinite(x) else None


def _qlabel(q: float) -> str:
    return f"{q:g}"


TARGET_TOLERANCE = 0.05  # the ±5% the rate control promises


def measure_target(codec, pic, target_bpp: float) -> dict:
    """Rate control: encode with ``target_bpp`` (no decode) and compare the achieved rate with the target."""
    t0 = time.perf_counter()
    res = codec.encode(pic, target_bpp=target_bpp, measure=False)
    t1 = time.perf_counter()
    bpp = len(res.data) * 8.0 / (pic.width * pic.height)
    rel = bpp / target_bpp - 1.0
    return {
        "target_bpp": target_bpp,
        "bytes": len(res.data),
        "bpp": bpp,
        "rel_error_pct": 100.0 * rel,
        "within_5pct": abs(rel) <= TARGET_TOLERANCE,
        "encode_s": t1 - t0,
        "base_step": res.params.get("base_step"),
    }


def measure_floor(codec, pic, floor: float) -> dict:
    """Quality floor: encode with ``min_psnr``, then decode the returned stream on its own and measure it."""
    from latentarc.codec.errors import QualityFloorUnreachable
    from latentarc.codec.images import colour_planes
    from latentarc.codec.metrics import psnr

    t0 = time.perf_counter()
    try:
        res = codec.encode(pic, min_psnr=floor)
    except QualityFloorUnreachable as e:
        return {"floor": floor, "status": "unreachable", "error": str(e), "encode_s": time.perf_counter() - t0}
    t1 = time.perf_counter()
    dec = codec.decode(res.data)
    t2 = time.perf_counter()
    measured = psnr(pic.reference(), colour_planes(dec.rgb, pic.mode))
    below = measured < floor
    return {
        "floor": floor,
        "status": "violation" if below else "met",
        "bytes": len(res.data),
        "bpp": len(res.data) * 8.0 / (pic.width * pic.height),
        "psnr": measured,  # independent decode
        "psnr_reported": res.psnr,  # what the encoder said it measured
        "margin_db": measured - floor,
        "below_floor": below,
        "encode_s": t1 - t0,
        "decode_s": t2 - t1,
        "base_step": res.params.get("base_step"),
    }


def summarise_targets(rows: list[dict], targets: list[float]) -> list[dict]:
    out = []
    for t in targets:
        rs = [r for r in rows if r["target_bpp"] == t]
        if not rs:
            continue
        errs = [abs(r["rel_error_pct"]) for r in rs]
        mp = sum(r["width"] * r["height"] for r in rs) / 1e6
        out.append(
            {
                "target_bpp": t,
                "images": len(rs),
                "mean_bpp": float(np.mean([r["bpp"] for r in rs])),
                "mean_abs_error_pct": float(np.mean(errs)),
                "max_abs_error_pct": float(np.max(errs)),
                "outside_5pct": sum(not r["within_5pct"] for r in rs),
                "outside_images": [r["image"] for r in rs if not r["within_5pct"]],
                "encode_s_per_mp": sum(r["encode_s"] for r in rs) / mp,
            }
        )
    return out


def summarise_floors(rows: list[dict], floors: list[float]) -> list[dict]:
    out = []
    for f in floors:
        rs = [r for r in rows if r["floor"] == f]
        if not rs:
            continue
        done = [r for r in rs if r["status"] != "unreachable"]
        margins = [r["margin_db"] for r in done]
        out.append(
            {
                "floor": f,
                "images": len(rs),
                "met": sum(r["status"] == "met" for r in rs),
                "unreachable": sum(r["status"] == "unreachable" for r in rs),
                "violations": sum(r["status"] == "violation" for r in rs),
                "violation_images": [r["image"] for r in rs if r["status"] == "violation"],
                "unreachable_images": [r["image"] for r in rs if r["status"] == "unreachable"],
                "mean_bpp": float(np.mean([r["bpp"] for r in done])) if done else None,
                "min_margin_db": float(np.min(margins)) if done else None,
                "mean_margin_db": float(np.mean(margins)) if done else None,
            }
        )
    return out


def format_targets(summary: list[dict]) -> str:
    head = (
        f"{'target':>7}  {'n':>4}  {'mean bpp':>8}  {'mean|err|%':>10}  {'max|err|%':>9}  {'out ±5%':>7}  "
        f"{'enc s/MP':>8}"
    )
    lines = ["target bpp (rate control, adaptive):", head, "-" * len(head)]
    for s in summary:
        lines.append(
            f"{s['target_bpp']:7g}  {s['images']:4d}  {s['mean_bpp']:8.4f}  {s['mean_abs_error_pct']:10.2f}  "
            f"{s['max_abs_error_pct']:9.2f}  {s['outside_5pct']:7d}  {s['encode_s_per_mp']:8.2f}"
        )
    for s in summary:
        if s["outside_images"]:
            lines.append(f"  outside ±5% at {s['target_bpp']:g} bpp: {', '.join(s['outside_images'])}")
    return "\n".join(lines)


def format_floors(summary: list[dict]) -> str:
    head = (
        f"{'floor dB':>8}  {'n':>4}  {'met':>4}  {'unreach':>7}  {'violations':>10}  {'mean bpp':>8}  "
        f"{'min margin dB':>13}  {'mean margin dB':>14}"
    )
    lines = ["min-PSNR floors (adaptive; PSNR from an independent decode):", head, "-" * len(head)]

    def num(x, spec):
        return "n/a" if x is None else format(x, spec)

    for s in summary:
        lines.append(
            f"{s['floor']:8g}  {s['images']:4d}  {s['met']:4d}  {s['unreachable']:7d}  {s['violations']:10d}  "
            f"{num(s['mean_bpp'], '.4f'):>8}  {num(s['min_margin_db'], '+.3f'):>13}  "
            f"{num(s['mean_margin_db'], '+.3f'):>14}"
        )
    for s in summary:
        if s["violations"]:
            lines.append(f"  VIOLATIONS at {s['floor']:g} dB: {', '.join(s['violation_images'])}")
        if s["unreachable"]:
            lines.append(f"  unreachable at {s['floor']:g} dB: {', '.join(s['unreachable_images'])}")
    return "\n".join(lines)


def summarise(rows: list[dict], qualities: list[float]) -> list[dict]:
    out = []
    for q in qualities:
        rs = [r for r in rows if r["quality"] == q]
        if not rs:
            continue
        mp = sum(r["width"] * r["height"] for r in rs) / 1e6
        ps = [r["psnr"] for r in rs]
        ss = [r["ms_ssim"] for r in rs if r["ms_ssim"] is not None]
        out.append(
            {
                "quality": q,
                "images": len(rs),
                "bpp": float(np.mean([r["bpp"] for r in rs])),
                "psnr": float(np.mean(ps)),  # inf if any image decoded exactly
                "ms_ssim": float(np.mean(ss)) if ss else None,
                "encode_s_per_mp": sum(r["encode_s"] for r in rs) / mp,
                "decode_s_per_mp": sum(r["decode_s"] for r in rs) / mp,
            }
        )
    return out


def format_table(variant: str, summary: list[dict]) -> str:
    head = f"{'quality':>7}  {'bpp':>8}  {'PSNR dB':>8}  {'MS-SSIM':>8}  {'enc s/MP':>8}  {'dec s/MP':>8}"
    lines = [f"{variant}:", head, "-" * len(head)]
    for s in summary:
        ssim = f"{s['ms_ssim']:.4f}" if s["ms_ssim"] is not None else "n/a"
        lines.append(
            f"{_qlabel(s['quality']):>7}  {s['bpp']:8.4f}  {s['psnr']:8.2f}  {ssim:>8}  "
            f"{s['encode_s_per_mp']:8.2f}  {s['decode_s_per_mp']:8.2f}"
        )
    return "\n".join(lines)


def _bd(summaries: dict[str, list[dict]], of: str = "adaptive", relative_to: str = "global-step") -> dict:
    from latentarc.codec.rd import bd_method, bd_report

    a, b = summaries[of], summaries[relative_to]
    ra, pa = [s["bpp"] for s in a], [s["psnr"] for s in a]
    rb, pb = [s["bpp"] for s in b], [s["psnr"] for s in b]
    try:
        return {"of": of, "relative_to": relative_to, "metric": "psnr", **bd_report(ra, pa, rb, pb)}
    except ValueError as e:
        return {"of": of, "relative_to": relative_to, "bd_rate_pct": None, "method": bd_method(len(ra), len(rb)),
                "error": str(e)}


def format_bd(bd: dict) -> str:
    head = f"BD-rate ({bd.get('of', 'adaptive')} vs {bd.get('relative_to', 'global-step')}, PSNR)"
    if bd["bd_rate_pct"] is None:
        return f"{head}: n/a — {bd['error']}"
    lo, hi = bd["psnr_interval"]
    line = (f"{head}: {bd['bd_rate_pct']:+.2f}% over {lo:.2f}–{hi:.2f} dB "
            f"(negative = {bd.get('of', 'adaptive')} needs fewer bits)")
    if bd["method"] == "linear":
        line += "\n  [fewer than 4 points per curve: piecewise-linear log-rate interpolation, not the cubic fit]"
    else:
        line += f"\n  cubic Bjøntegaard fit; piecewise-linear interpolation gives {bd['linear_pct']:+.2f}%"
        if not bd.get("cubic_monotone", True):
            line += (
                "\n  warning: the cubic log-rate fit is not monotonic over the interval (a curve saturates);"
                " the cubic figure is unreliable, prefer the piecewise-linear one"
            )
    return line


def run_bench(args) -> int:
    from latentarc.codec.api import load_codec
    from latentarc.jobs.rd_bench import measure

    targets = parse_targets(args.targets)
    floors = parse_floors(args.floors)
    qualities = parse_qualities(args.qualities, allow_empty=bool(targets or floors))
    if args.crop is not None and args.crop < 1:
        raise ValueError("--crop must be at least 1")
    files = list_images(args.images, args.limit)
    variants = ["adaptive"]
    if qualities and args.compare_global:
        variants.append("global-step")
    compare_entropy = args.compare_entropy
    if qualities and compare_entropy:
        variants.append(ENTROPY_PREFIX + compare_entropy)
    codecs = {v: load_codec(args.codec, weights=args.weights, device=args.device, **variant_kwargs(v))
              for v in variants}

    rows: list[dict] = []
    target_rows: list[dict] = []
    floor_rows: list[dict] = []
    skipped: list[dict] = []
    images: list[dict] = []
    warmed: set[str] = set()
    t_start = time.perf_counter()
    for i, path, pic in read_pictures(files, args.crop, skipped):
        images.append({"image": path.name, "width": pic.width, "height": pic.height})
        where = {"image": path.name, "width": pic.width, "height": pic.height}
        t_img = time.perf_counter()
        for v in variants:
            codec = codecs[v]
            if v not in warmed:  # untimed: lazy initialisation is not the first image's cost
                measure(codec, centre_crop(pic, 64), qualities[0] if qualities else 50.0)
                warmed.add(v)
            for q in qualities:
                rows.append({"variant": v, **where, **measure(codec, pic, q)})
        for t in targets:
            target_rows.append({**where, **measure_target(codecs["adaptive"], pic, t)})
        for f in floors:
            floor_rows.append({**where, **measure_floor(codecs["adaptive"], pic, f)})

        brief = [
            f"{r['variant'][0]}{_qlabel(r['quality'])}: {r['bpp']:.3f} bpp {r['psnr']:.2f} dB"
            for r in rows
            if r["image"] == path.name
        ]
        brief += [
            f"t{r['target_bpp']:g}: {r['bpp']:.3f} bpp ({r['rel_error_pct']:+.1f}%)"
            for r in target_rows
            if r["image"] == path.name
        ]
        for r in floor_rows:
            if r["image"] != path.name:
                continue
            if r["status"] == "unreachable":
                brief.append(f"f{r['floor']:g}: unreachable")
            else:
                flag = " BELOW FLOOR" if r["below_floor"] else ""
                brief.append(f"f{r['floor']:g}: {r['bpp']:.3f} bpp {r['psnr']:.2f} dB{flag}")
        print(
            f"[{i}/{len(files)}] {path.name} {pic.width}x{pic.height}: {time.perf_counter() - t_img:.1f} s "
            f"({', '.join(brief)})",
            file=sys.stderr,
            flush=True,
        )
    if not images:
        raise ValueError(f"no readable images in {args.images}")

    n_img = len(images)
    mp = sum(r["width"] * r["height"] for r in images)
    parts = [f"qualities {','.join(_qlabel(q) for q in qualities)}" if qualities else "no RD table"]
    if targets:
        parts.append(f"targets {','.join(f'{t:g}' for t in targets)} bpp")
    if floors:
        parts.append(f"floors {','.join(f'{f:g}' for f in floors)} dB")
    print(f"latentarc bench: codec {args.codec}, {n_img} images, {mp / 1e6:.3f} MP, {'; '.join(parts)}")

    summaries = {v: summarise([r for r in rows if r["variant"] == v], qualities) for v in variants} if qualities else {}
    for v in summaries:
        print()
        print(format_table(v, summaries[v]))

    bd = None
    if qualities and args.compare_global:
        bd = _bd(summaries)
        print()
        print(format_bd(bd))
    bd_entropy = None
    if qualities and compare_entropy:
        bd_entropy = _bd(summaries, ENTROPY_PREFIX + compare_entropy, "adaptive")
        print()
        print(format_bd(bd_entropy))

    target_summary = summarise_targets(target_rows, targets) if targets else None
    if target_summary is not None:
        print()
        print(format_targets(target_summary))
    floor_summary = summarise_floors(floor_rows, floors) if floors else None
    if floor_summary is not None:
        print()
        print(format_floors(floor_summary))

    if args.json_out:
        doc = {
            "codec": args.codec,
            "images": args.images,
            "qualities": qualities,
            "targets": targets,
            "floors": floors,
            "crop": args.crop,
            "limit": args.limit,
            "variants": variants if qualities else [],
            "rows": rows,
            "target_rows": target_rows,
            "floor_rows": floor_rows,
            "skipped": skipped,
            "summary": {
                "variants": summaries,
                "bd_rate": bd,
                "bd_rate_entropy": bd_entropy,
                "targets": target_summary,
                "floors": floor_summary,
            },
            "elapsed_s": time.perf_counter() - t_start,
        }
        out = Path(args.json_out)
        if out.parent and not out.parent.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(json_safe(doc), indent=2, allow_nan=False) + "\n")
        print(f"\nwrote {out}")
    return 0
