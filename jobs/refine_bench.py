"""``latentarc bench IMAGES --refine-modes faithful,realistic``: what diffusion refinement buys at decode.

Refinement spends no bits, so every mode is measured on the *same* stream: per image and quality the image is
encoded once, then decoded with ``none`` and with each mode × step count (``--refine-steps``; ``realistic``
with ``--seed``), each refining every image. With ``faithful`` the streams are encoded with the encoder's
refinement check (``verify_refine``: a 17-byte section, counted in bpp; the payload is unchanged), and
``faithful/v`` is what ``decode --refine faithful`` does with them: the K the encoder measured best for that
image, or no refinement where no K raised PSNR and MS-SSIM without lowering either. Per decode: PSNR and MS-SSIM against the original, a no-reference sharpness figure (gradient
energy of the decoded luma relative to the original's, :func:`~latentarc.codec.metrics.sharpness_ratio`:
1 = as sharp as the original) and the decode time per megapixel (entropy decoding + refinement + VAE
decoder; one untimed warm-up decode per configuration runs first).

The table gives the means per quality and configuration, the change against ``none`` on the same streams,
and the issue's acceptance checks: ``faithful`` must raise MS-SSIM and lose at most
:data:`MAX_PSNR_LOSS_DB` of PSNR; ``realistic`` must bring the sharpness ratio closer to 1 than ``none``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

MAX_PSNR_LOSS_DB = 0.5
DEFAULT_STEPS = (1, 2, 4)


def parse_modes(text: str) -> list[str]:
    from latentarc.codec.refine import MODES

    modes = [m.strip() for m in text.split(",") if m.strip()]
    for m in modes:
        if m not in MODES:
            raise ValueError(f"--refine-modes: unknown mode {m!r}; choose from {', '.join(MODES)}")
    return [m for m in dict.fromkeys(modes) if m != "none"]


def parse_steps(text: str | None) -> list[int]:
    if not text:
        return list(DEFAULT_STEPS)
    try:
        ks = [int(k) for k in text.split(",") if k.strip()]
    except ValueError:
        raise ValueError(f"--refine-steps must be comma-separated integers, got {text!r}") from None
    if not ks or any(k < 1 for k in ks):
        raise ValueError("--refine-steps needs step counts ≥ 1")
    return list(dict.fromkeys(ks))


def configs(modes: list[str], steps: list[int], seed: int) -> list:
    """none; every mode × K refining every image (``verified=False``: the model's own behaviour); and, with
    faithful, ``faithful/v``: what ``decode --refine faithful`` does with a verified stream (the encoder's K per
    image, or no refinement where none helped)."""
    from latentarc.codec.refine import RefineConfig

    out = [RefineConfig("none", 0, seed)] + [RefineConfig(m, k, seed, verified=False) for m in modes for k in steps]
    if "faithful" in modes:
        out.append(RefineConfig("faithful", max(steps), seed, verified=True))
    return out


def label(cfg) -> str:
    if not cfg.active:
        return "none"
    return f"{cfg.mode}/v" if cfg.verified and cfg.mode == "faithful" else f"{cfg.mode}/{cfg.steps}"


def measure_decode(codec, data: bytes, pic, cfg, refiner) -> dict:
    from latentarc.codec.classical import decoded_planes
    from latentarc.codec.metrics import ms_ssim, psnr, sharpness_ratio

    t0 = time.perf_counter()
    dec = codec.decode(data, refine=cfg, refiner=refiner)  # an inactive config decodes plainly
    dt = time.perf_counter() - t0
    ref, test = pic.reference(), decoded_planes(dec, pic.mode)
    return {
        "config": label(cfg),
        "mode": cfg.mode,
        "steps": cfg.steps if cfg.active else 0,
        "refinement": getattr(dec, "refinement", "none"),
        "psnr": psnr(ref, test),
        "ms_ssim": ms_ssim(ref, test),
        "sharpness": sharpness_ratio(ref, test),
        "decode_s": dt,
    }


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else None


def summarise(rows: list[dict], qualities: list[float], labels: list[str]) -> list[dict]:
    """Means per (quality, configuration), with deltas against ``none`` on the same images."""
    out = []
    for q in qualities:
        base = {r["image"]: r for r in rows if r["quality"] == q and r["config"] == "none"}
        for lab in labels:
            rs = [r for r in rows if r["quality"] == q and r["config"] == lab]
            if not rs:
                continue
            mp = sum(r["width"] * r["height"] for r in rs) / 1e6
            pairs = [(r, base[r["image"]]) for r in rs if r["image"] in base]
            out.append({
                "quality": q,
                "config": lab,
                "mode": rs[0]["mode"],
                "steps": rs[0]["steps"],
                "images": len(rs),
                "bpp": _mean(r["bpp"] for r in rs),
                "psnr": _mean(r["psnr"] for r in rs),
                "ms_ssim": _mean(r["ms_ssim"] for r in rs),
                "sharpness": _mean(r["sharpness"] for r in rs),
                "decode_s_per_mp": sum(r["decode_s"] for r in rs) / mp,
                "d_psnr": _mean(r["psnr"] - b["psnr"] for r, b in pairs),
                "d_ms_ssim": _mean(r["ms_ssim"] - b["ms_ssim"] for r, b in pairs
                                   if r["ms_ssim"] is not None and b["ms_ssim"] is not None),
            })
    return out


def checks(summary: list[dict]) -> list[dict]:
    """The acceptance checks per quality and step count (see module doc)."""
    out = []
    by = {(s["quality"], s["config"]): s for s in summary}
    for s in summary:
        none = by.get((s["quality"], "none"))
        if none is None or s["config"] == "none":
            continue
        if s["mode"] == "faithful":
            ok = (s["d_ms_ssim"] or 0) > 0 and (s["d_psnr"] if s["d_psnr"] is not None else -1e9) >= -MAX_PSNR_LOSS_DB
            what = (f"MS-SSIM {s['d_ms_ssim']:+.4f}, PSNR {s['d_psnr']:+.2f} dB "
                    f"(needs MS-SSIM > 0 and PSNR ≥ -{MAX_PSNR_LOSS_DB} dB)")
        else:
            if s["sharpness"] is None or none["sharpness"] is None:
                continue
            ok = abs(1 - s["sharpness"]) < abs(1 - none["sharpness"])
            what = f"sharpness {none['sharpness']:.3f} → {s['sharpness']:.3f} (needs closer to 1)"
        out.append({"quality": s["quality"], "config": s["config"], "ok": bool(ok), "what": what})
    return out


def format_table(summary: list[dict], checks_: list[dict]) -> str:
    head = (f"{'quality':>7}  {'refine':<12} {'bpp':>7}  {'PSNR dB':>8}  {'MS-SSIM':>8}  {'sharp':>6}  "
            f"{'dec s/MP':>8}  {'ΔPSNR':>6}  {'ΔMS-SSIM':>8}")
    lines = [head, "-" * len(head)]
    for s in summary:
        ss = f"{s['ms_ssim']:.4f}" if s["ms_ssim"] is not None else "n/a"
        sh = f"{s['sharpness']:.3f}" if s["sharpness"] is not None else "n/a"
        dp = f"{s['d_psnr']:+.2f}" if s["config"] != "none" and s["d_psnr"] is not None else ""
        dm = f"{s['d_ms_ssim']:+.4f}" if s["config"] != "none" and s["d_ms_ssim"] is not None else ""
        lines.append(f"{s['quality']:>7g}  {s['config']:<12} {s['bpp']:7.4f}  {s['psnr']:8.2f}  {ss:>8}  {sh:>6}  "
                     f"{s['decode_s_per_mp']:8.2f}  {dp:>6}  {dm:>8}")
    if checks_:
        lines.append("")
        for c in checks_:
            lines.append(f"{'PASS' if c['ok'] else 'FAIL'}  q{c['quality']:g} {c['config']}: {c['what']}")
    return "\n".join(lines)


def run_refine_bench(args) -> int:
    from latentarc.codec.api import default_device
    from latentarc.codec.neural import NeuralCodec
    from latentarc.codec.refine import load_refiner, refiner_for_codec
    from latentarc.codec.registry import load_model
    from latentarc.jobs.bench import _json_safe, centre_crop, list_images, parse_qualities, read_pictures

    modes = parse_modes(args.refine_modes)
    if not modes:
        raise ValueError("--refine-modes needs faithful and/or realistic")
    steps = parse_steps(args.refine_steps)
    qualities = parse_qualities(args.qualities)
    files = list_images(args.images, args.limit)
    model = load_model(args.codec, weights=args.weights, device=args.device or default_device())  # neural only
    device = model.device
    refiner = load_refiner(args.refiner, device=device) if args.refiner else refiner_for_codec(model.name,
                                                                                               device=device)
    # streams carry the encoder's refinement check (faithful/v); the payload, and so every other row, is the same
    codec = NeuralCodec(model, verify_refine="faithful" in modes, refiner=refiner)
    cfgs = configs(modes, steps, args.seed)
    labels = [label(c) for c in cfgs]

    rows, skipped, warmed = [], [], False
    t_start = time.perf_counter()
    for i, path, pic in read_pictures(files, args.crop, skipped):
        if not warmed:  # untimed: lazy initialisation (thread pools, the refiner's first call)
            small = centre_crop(pic, 64)
            d = codec.encode(small, quality=qualities[0], measure=False).data
            for c in cfgs:
                measure_decode(codec, d, small, c, refiner)
            warmed = True
        t_img = time.perf_counter()
        brief = []
        for q in qualities:
            data = codec.encode(pic, quality=q, measure=False).data
            bpp = len(data) * 8.0 / (pic.width * pic.height)
            for c in cfgs:
                r = measure_decode(codec, data, pic, c, refiner)
                rows.append({"image": path.name, "width": pic.width, "height": pic.height, "quality": q,
                             "bytes": len(data), "bpp": bpp, **r})
            mine = [r for r in rows if r["image"] == path.name and r["quality"] == q]
            brief.append(f"q{q:g} {bpp:.3f} bpp: " + " ".join(f"{r['config']} {r['psnr']:.2f}" for r in mine))
        print(f"[{i}/{len(files)}] {path.name} {pic.width}x{pic.height}: {time.perf_counter() - t_img:.1f} s "
              f"({'; '.join(brief)})", file=sys.stderr, flush=True)
    if not rows:
        raise ValueError(f"no readable images in {args.images}")

    summary = summarise(rows, qualities, labels)
    chk = checks(summary)
    n = len({r["image"] for r in rows})
    print(f"latentarc bench --refine-modes: codec {args.codec}, refiner {getattr(refiner, 'name', refiner)}, "
          f"{n} images, qualities {','.join(f'{q:g}' for q in qualities)}, seed {args.seed}")
    print()
    print(format_table(summary, chk))
    if args.json_out:
        doc = {"codec": args.codec, "refiner": getattr(refiner, "name", str(refiner)), "images": args.images,
               "qualities": qualities, "modes": modes, "steps": steps, "seed": args.seed, "crop": args.crop,
               "limit": args.limit, "rows": rows, "skipped": skipped,
               "summary": summary, "checks": chk, "elapsed_s": time.perf_counter() - t_start}
        out = Path(args.json_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(_json_safe(doc), indent=2, allow_nan=False) + "\n")
        print(f"\nwrote {out}")
    return 0
