"""The rate-control checks of ``latentarc bench --targets / --floors`` on the first codec benchmarked.

* ``--targets 0.25,0.5,1.0``: every image is encoded with ``target_bpp`` (``measure=False``) and the achieved
  bpp's relative error against the target is recorded; per target the table gives n, mean and max |error| and
  how many images land outside ±5% (the codec's promise, "where the image allows it").
* ``--floors 24,27``: every image is encoded with ``min_psnr`` (which decodes several candidates internally),
  then the returned stream is decoded *independently* and its PSNR measured against the original; a stream
  below its floor is a violation (must never happen). Images whose floor the codec cannot reach raise
  :class:`~latentarc.codec.errors.QualityFloorUnreachable` — correct behaviour, counted separately.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from ..codec.base import TARGET_TOLERANCE
from .bench_inputs import read_pictures


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


def format_targets(summary: list[dict], codec: str) -> str:
    head = (
        f"{'target':>7}  {'n':>4}  {'mean bpp':>8}  {'mean|err|%':>10}  {'max|err|%':>9}  {'out ±5%':>7}  "
        f"{'enc s/MP':>8}"
    )
    lines = [f"target bpp (rate control of {codec}):", head, "-" * len(head)]
    for s in summary:
        lines.append(
            f"{s['target_bpp']:7g}  {s['images']:4d}  {s['mean_bpp']:8.4f}  {s['mean_abs_error_pct']:10.2f}  "
            f"{s['max_abs_error_pct']:9.2f}  {s['outside_5pct']:7d}  {s['encode_s_per_mp']:8.2f}"
        )
    for s in summary:
        if s["outside_images"]:
            lines.append(f"  outside ±5% at {s['target_bpp']:g} bpp: {', '.join(s['outside_images'])}")
    return "\n".join(lines)


def format_floors(summary: list[dict], codec: str) -> str:
    head = (
        f"{'floor dB':>8}  {'n':>4}  {'met':>4}  {'unreach':>7}  {'violations':>10}  {'mean bpp':>8}  "
        f"{'min margin dB':>13}  {'mean margin dB':>14}"
    )
    lines = [f"min-PSNR floors ({codec}; PSNR from an independent decode):", head, "-" * len(head)]

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


def run_rate_checks(codec, name: str, files, crop, targets: list[float], floors: list[float], log=None) -> dict:
    """Both checks over ``files`` (centre-cropped to ``crop``): rows and summaries, and what was skipped."""
    log = log or sys.stderr
    target_rows: list[dict] = []
    floor_rows: list[dict] = []
    skipped: list[dict] = []
    for i, path, pic in read_pictures(files, crop, skipped, log):
        where = {"image": path.name, "width": pic.width, "height": pic.height}
        t0 = time.perf_counter()
        mine = [{**where, **measure_target(codec, pic, t)} for t in targets]
        fl = [{**where, **measure_floor(codec, pic, f)} for f in floors]
        target_rows += mine
        floor_rows += fl
        brief = [f"t{r['target_bpp']:g}: {r['bpp']:.3f} bpp ({r['rel_error_pct']:+.1f}%)" for r in mine]
        brief += [f"f{r['floor']:g}: unreachable" if r["status"] == "unreachable" else
                  f"f{r['floor']:g}: {r['bpp']:.3f} bpp {r['psnr']:.2f} dB" + (" BELOW FLOOR" if r["below_floor"] else "")
                  for r in fl]
        print(f"[{i}/{len(files)}] {path.name}: {time.perf_counter() - t0:.1f} s ({', '.join(brief)})", file=log,
              flush=True)
    return {"codec": name, "targets": targets, "floors": floors, "target_rows": target_rows,
            "floor_rows": floor_rows, "skipped": skipped,
            "summary": {"targets": summarise_targets(target_rows, targets) if targets else None,
                        "floors": summarise_floors(floor_rows, floors) if floors else None}}


def format_rate_checks(r: dict) -> str:
    parts = []
    if r["summary"]["targets"] is not None:
        parts.append(format_targets(r["summary"]["targets"], r["codec"]))
    if r["summary"]["floors"] is not None:
        parts.append(format_floors(r["summary"]["floors"], r["codec"]))
    return "\n\n".join(parts)
