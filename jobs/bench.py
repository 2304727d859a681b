"""``latentarc bench``: rate–distortion and speed over a folder of images.

For every image (sorted, first ``--limit``, optionally centre-cropped to at most ``--crop``×``--crop``) and
every quality: encode (timed, ``measure=False`` so the time is the encoder's alone), decode (timed), PSNR and
MS-SSIM of the decoded colour planes against the original's, and bits per pixel of the whole stream. With
``--compare-global`` the same runs again with one global quantization step (the baseline), followed by the
Bjøntegaard delta rate of the adaptive curve against the baseline (:mod:`latentarc.codec.rd`).

Timing: one untimed warm-up encode/decode per variant on a small crop runs first, so lazy initialisation
(thread pools, kernels) is not charged to the first image. Speeds are total seconds / total megapixels.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".ppm", ".pgm", ".pnm"}
VARIANTS = {"adaptive": True, "global-step": False}


def parse_qualities(text: str) -> list[float]:
    try:
        qs = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--qualities must be comma-separated numbers, got {text!r}") from None
    if not qs:
        raise ValueError("--qualities is empty")
    for q in qs:
        if not 0 <= q <= 100:
            raise ValueError(f"quality must be in [0, 100], got {q:g}")
    return list(dict.fromkeys(qs))  # drop repeats, keep order


def list_images(folder: str | Path, limit: int | None = None) -> list[Path]:
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"not a folder: {folder}")
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if limit is not None:
        if limit < 1:
            raise ValueError("--limit must be at least 1")
        files = files[:limit]
    if not files:
        raise ValueError(f"no images in {folder}")
    return files


def centre_crop(pic, size: int | None):
    """``pic`` cropped to at most ``size``×``size`` around its centre (rgb, alpha and depth16 alike)."""
    if not size:
        return pic
    if size < 1:
        raise ValueError("--crop must be at least 1")
    h, w = pic.height, pic.width
    ch, cw = min(h, size), min(w, size)
    if (ch, cw) == (h, w):
        return pic
    y0, x0 = (h - ch) // 2, (w - cw) // 2

    def cut(a):
        return None if a is None else np.ascontiguousarray(a[y0 : y0 + ch, x0 : x0 + cw])

    return replace(pic, rgb=cut(pic.rgb), alpha=cut(pic.alpha), depth16=cut(pic.depth16))


def _finite(x):
    return x if x is not None and math.isfinite(x) else None


def _qlabel(q: float) -> str:
    return f"{q:g}"


def measure_one(codec, pic, quality: float) -> dict:
    from latentarc.codec.images import colour_planes
    from latentarc.codec.metrics import ms_ssim, psnr

    t0 = time.perf_counter()
    res = codec.encode(pic, quality=quality, measure=False)
    t1 = time.perf_counter()
    dec = codec.decode(res.data)
    t2 = time.perf_counter()
    ref, test = pic.reference(), colour_planes(dec.rgb, pic.mode)
    return {
        "quality": quality,
        "bytes": len(res.data),
        "bpp": len(res.data) * 8.0 / (pic.width * pic.height),
        "psnr": psnr(ref, test),
        "ms_ssim": ms_ssim(ref, test),
        "encode_s": t1 - t0,
        "decode_s": t2 - t1,
        "base_step": res.params.get("base_step"),
    }


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


def _bd(summaries: dict[str, list[dict]]) -> dict:
    from latentarc.codec.rd import bd_method, bd_report

    a, b = summaries["adaptive"], summaries["global-step"]
    ra, pa = [s["bpp"] for s in a], [s["psnr"] for s in a]
    rb, pb = [s["bpp"] for s in b], [s["psnr"] for s in b]
    try:
        return {"of": "adaptive", "relative_to": "global-step", "metric": "psnr", **bd_report(ra, pa, rb, pb)}
    except ValueError as e:
        return {"bd_rate_pct": None, "method": bd_method(len(ra), len(rb)), "error": str(e)}


def format_bd(bd: dict) -> str:
    head = "BD-rate (adaptive vs global-step, PSNR)"
    if bd["bd_rate_pct"] is None:
        return f"{head}: n/a — {bd['error']}"
    lo, hi = bd["psnr_interval"]
    line = f"{head}: {bd['bd_rate_pct']:+.2f}% over {lo:.2f}–{hi:.2f} dB (negative = adaptive needs fewer bits)"
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


def _json_safe(x):
    if isinstance(x, float):
        return _finite(x)
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_json_safe(v) for v in x]
    return x


def run_bench(args) -> int:
    from latentarc.codec.api import load_codec
    from latentarc.codec.errors import ImageError
    from latentarc.codec.images import read_image

    qualities = parse_qualities(args.qualities)
    if args.crop is not None and args.crop < 1:
        raise ValueError("--crop must be at least 1")
    files = list_images(args.images, args.limit)
    variants = ["adaptive"] + (["global-step"] if args.compare_global else [])
    codecs = {
        v: load_codec(args.codec, weights=args.weights, device=args.device, adaptive=VARIANTS[v]) for v in variants
    }

    rows: list[dict] = []
    skipped: list[dict] = []
    warmed: set[str] = set()
    t_start = time.perf_counter()
    for i, path in enumerate(files, 1):
        try:
            pic = centre_crop(read_image(path.read_bytes()), args.crop)
        except ImageError as e:
            print(f"[{i}/{len(files)}] {path.name}: skipped ({type(e).__name__}: {e})", file=sys.stderr)
            skipped.append({"image": path.name, "error": f"{type(e).__name__}: {e}"})
            continue
        t_img = time.perf_counter()
        for v in variants:
            codec = codecs[v]
            if v not in warmed:  # untimed: lazy initialisation is not the first image's cost
                measure_one(codec, centre_crop(pic, 64), qualities[0])
                warmed.add(v)
            for q in qualities:
                r = measure_one(codec, pic, q)
                rows.append({"variant": v, "image": path.name, "width": pic.width, "height": pic.height, **r})
        mine = [r for r in rows if r["image"] == path.name]
        brief = ", ".join(
            f"{r['variant'][0]}{_qlabel(r['quality'])}: {r['bpp']:.3f} bpp {r['psnr']:.2f} dB" for r in mine
        )
        print(
            f"[{i}/{len(files)}] {path.name} {pic.width}x{pic.height}: {time.perf_counter() - t_img:.1f} s ({brief})",
            file=sys.stderr,
            flush=True,
        )
    if not rows:
        raise ValueError(f"no readable images in {args.images}")

    summaries = {v: summarise([r for r in rows if r["variant"] == v], qualities) for v in variants}
    n_img = len({r["image"] for r in rows})
    mp = sum(r["width"] * r["height"] for r in rows if r["variant"] == "adaptive" and r["quality"] == qualities[0])
    print(f"latentarc bench: codec {args.codec}, {n_img} images, {mp / 1e6:.3f} MP, qualities {args.qualities}")
    for v in variants:
        print()
        print(format_table(v, summaries[v]))

    bd = None
    if args.compare_global:
        bd = _bd(summaries)
        print()
        print(format_bd(bd))

    if args.json_out:
        doc = {
            "codec": args.codec,
            "images": args.images,
            "qualities": qualities,
            "crop": args.crop,
            "limit": args.limit,
            "variants": variants,
            "rows": rows,
            "skipped": skipped,
            "summary": {"variants": summaries, "bd_rate": bd},
            "elapsed_s": time.perf_counter() - t_start,
        }
        out = Path(args.json_out)
        if out.parent and not out.parent.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(_json_safe(doc), indent=2, allow_nan=False) + "\n")
        print(f"\nwrote {out}")
    return 0
