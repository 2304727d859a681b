"""``latentarc bench-refine IMAGES --modes faithful,realistic``: what diffusion refinement buys at decode.

Refinement spends no bits, so every mode is measured on the *same* stream: per image and operating point (a
quality, or with ``--targets`` a rate the codec's rate control hits per image) the image is encoded once, then decoded with ``none`` and with each mode × step count (``--steps``; ``realistic``
with ``--seed``), each refining every image. With ``faithful`` the streams are encoded with the encoder's
refinement check (``verify_refine``: a 17-byte section, counted in bpp; the payload is unchanged), and
``faithful/v`` is what ``decode --refine faithful`` does with them: the K the encoder measured best for that
image, or no refinement where no K raised PSNR and MS-SSIM without lowering either; with ``realistic`` likewise
(``verify_realistic``, 22 bytes) ``realistic/v``: the (K, eta) with the lowest LPIPS among those that lowered it,
those that also brought the sharpness ratio closer to 1 first (``codec.verdicts.choose_realistic``), or none.
Per decode: PSNR, MS-SSIM,
LPIPS and DISTS against the original (``--metrics`` picks; PSNR always), a sharpness figure (gradient energy of
the decoded luma relative to the original's, :func:`~latentarc.codec.metrics.sharpness_ratio`: 1 = as sharp as
the original) and the decode time per megapixel (entropy decoding + refinement + VAE decoder; one untimed
warm-up decode per configuration runs first).

The table gives the means per operating point and configuration, the change against ``none`` on the same streams,
and the acceptance checks: ``faithful`` must lower LPIPS (MS-SSIM when LPIPS is not measured) and lose at most
:data:`MAX_PSNR_LOSS_DB` of PSNR; ``realistic`` must lower LPIPS and DISTS (those measured) and bring the mean
sharpness ratio closer to 1 than ``none`` (the check also says on how many images it came closer).
``--html FILE`` writes the table and, per image and point, the same crop of the original and of every decode
side by side.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latentarc.codec.metrics import closer_to_one

MAX_PSNR_LOSS_DB = 0.1
CROP_SIDE = 160  # px of the side-by-side crops in the HTML page
DEFAULT_STEPS = (1, 2, 4)


def parse_modes(text: str) -> list[str]:
    from latentarc.codec.refine import MODES

    modes = [m.strip() for m in text.split(",") if m.strip()]
    for m in modes:
        if m not in MODES:
            raise ValueError(f"--modes: unknown mode {m!r}; choose from {', '.join(MODES)}")
    return [m for m in dict.fromkeys(modes) if m != "none"]


def parse_steps(text: str | None) -> list[int]:
    if not text:
        return list(DEFAULT_STEPS)
    try:
        ks = [int(k) for k in text.split(",") if k.strip()]
    except ValueError:
        raise ValueError(f"--steps must be comma-separated integers, got {text!r}") from None
    if not ks or any(k < 1 for k in ks):
        raise ValueError("--steps needs step counts ≥ 1")
    return list(dict.fromkeys(ks))


def parse_etas(text: str | None) -> list[float | None]:
    """``--etas 0.3,0.6`` → [0.3, 0.6]; none given → [None] (the realistic mode's default)."""
    if not text:
        return [None]
    try:
        etas = [float(e) for e in text.split(",") if e.strip()]
    except ValueError:
        raise ValueError(f"--etas must be comma-separated numbers, got {text!r}") from None
    if not etas or any(not 0.0 <= e <= 1.0 for e in etas):
        raise ValueError("--etas needs values in [0, 1]")
    return list(dict.fromkeys(etas))


def configs(modes: list[str], steps: list[int], seed: int, etas: list[float | None] = (None,)) -> list:
    """none; every mode × K refining every image (``verified=False``: the model's own behaviour), realistic at
    K ≥ 2 also × each eta; and per mode ``<mode>/v``: what ``decode --refine <mode>`` does with a verified stream
    (the encoder's setting per image, or no refinement where none helped)."""
    from latentarc.codec.refine import RefineConfig

    # one step lands on the clean estimate whatever the eta, so K = 1 runs once
    out = [RefineConfig("none", 0, seed)] + [RefineConfig(m, k, seed, verified=False, eta=e) for m in modes
                                              for k in steps for e in (etas if m == "realistic" and k > 1 else [None])]
    out += [RefineConfig(m, max(steps), seed, verified=True) for m in ("faithful", "realistic") if m in modes]
    return out


def label(cfg) -> str:
    """``faithful/v`` / ``realistic/v`` for what a verified stream decodes to, else the config's own label."""
    return f"{cfg.mode}/v" if cfg.active and cfg.verified else cfg.label


def measure_decode(codec, data: bytes, pic, cfg, refiner, metrics: tuple[str, ...] = ("psnr", "ms_ssim"),
                   keep: list | None = None) -> dict:
    """One timed decode of ``data`` with ``cfg`` and its figures; ``keep`` receives the decoded planes."""
    from latentarc.codec import metrics as M
    from latentarc.codec.classical import decoded_planes

    t0 = time.perf_counter()
    dec = codec.decode(data, refine=cfg, refiner=refiner)  # an inactive config decodes plainly
    dt = time.perf_counter() - t0
    ref, test = pic.reference(), decoded_planes(dec, pic.mode)
    if keep is not None:
        keep.append(test)
    return {
        "config": label(cfg),
        "mode": cfg.mode,
        "steps": cfg.steps if cfg.active else 0,
        "refinement": dec.refinement,
        **({m: None for m in M.METRIC_ORDER} | M.measure(ref, test, {"psnr", *metrics})),
        "sharpness": M.sharpness_ratio(ref, test),
        "decode_s": dt,
    }


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else None


def point_label(kind: str, value: float) -> str:
    """``q20`` for a quality, ``0.05 bpp`` for a target rate."""
    return f"q{value:g}" if kind == "quality" else f"{value:g} bpp"


def summarise(rows: list[dict], points: list[str], labels: list[str]) -> list[dict]:
    """Means per (operating point, configuration), with deltas against ``none`` on the same images."""
    out = []
    for p in points:
        base = {r["image"]: r for r in rows if r["point"] == p and r["config"] == "none"}
        for lab in labels:
            rs = [r for r in rows if r["point"] == p and r["config"] == lab]
            if not rs:
                continue
            mp = sum(r["width"] * r["height"] for r in rs) / 1e6
            pairs = [(r, base[r["image"]]) for r in rs if r["image"] in base]
            out.append({
                "point": p,
                "quality": rs[0]["quality"],
                "target_bpp": rs[0]["target_bpp"],
                "config": lab,
                "mode": rs[0]["mode"],
                "steps": rs[0]["steps"],
                "images": len(rs),
                "bpp": _mean(r["bpp"] for r in rs),
                "psnr": _mean(r["psnr"] for r in rs),
                "ms_ssim": _mean(r["ms_ssim"] for r in rs),
                "lpips": _mean(r.get("lpips") for r in rs),
                "dists": _mean(r.get("dists") for r in rs),
                "sharpness": _mean(r["sharpness"] for r in rs),
                "sharpness_closer": _closer(pairs),
                "decode_s_per_mp": sum(r["decode_s"] for r in rs) / mp,
                "d_psnr": _mean(r["psnr"] - b["psnr"] for r, b in pairs),
                **{f"d_{k}": _mean(r[k] - b[k] for r, b in pairs if r.get(k) is not None and b.get(k) is not None)
                   for k in ("ms_ssim", "lpips", "dists")},
            })
    return out


def _closer(pairs: list[tuple[dict, dict]]) -> int | None:
    """How many images' sharpness ratio is strictly closer to 1 than their unrefined decode's: the per-image
    reading of the realism check, which a mean ratio can hide (0.5 on one image and 1.5 on another average to 1)."""
    known = [(r["sharpness"], b["sharpness"]) for r, b in pairs
             if r["sharpness"] is not None and b["sharpness"] is not None]
    return sum(closer_to_one(s, s0) for s, s0 in known) if known else None


def _lowered(s: dict, key: str) -> bool | None:
    """Whether ``key`` (a distance) fell against ``none``; None when it was not measured."""
    d = s.get(f"d_{key}")
    return None if d is None else d < 0


def checks(summary: list[dict]) -> list[dict]:
    """The acceptance checks per quality and configuration (see module doc)."""
    out = []
    by = {(s["point"], s["config"]): s for s in summary}
    for s in summary:
        none = by.get((s["point"], "none"))
        if none is None or s["config"] == "none":
            continue
        dp = s["d_psnr"] if s["d_psnr"] is not None else -1e9
        if s["mode"] == "faithful":
            better = _lowered(s, "lpips")
            if better is None:  # LPIPS not measured: MS-SSIM must rise instead
                better, what = (s["d_ms_ssim"] or 0) > 0, f"MS-SSIM {s['d_ms_ssim'] or 0:+.4f}"
            else:
                what = f"LPIPS {s['d_lpips']:+.4f}"
            ok = better and dp >= -MAX_PSNR_LOSS_DB
            what += f", PSNR {s['d_psnr']:+.2f} dB (needs a better perceptual figure and PSNR ≥ -{MAX_PSNR_LOSS_DB} dB)"
        else:
            if s["sharpness"] is None or none["sharpness"] is None:
                continue
            ok = closer_to_one(s["sharpness"], none["sharpness"])
            what = (f"sharpness {none['sharpness']:.3f} → {s['sharpness']:.3f} (closer to 1 on "
                    f"{s['sharpness_closer']} of {s['images']} images)")
            for k in ("lpips", "dists"):
                lowered = _lowered(s, k)
                if lowered is not None:
                    ok = ok and lowered
                    what += f", {k.upper()} {s[f'd_{k}']:+.4f}"
            what += " (needs sharpness closer to 1 and lower LPIPS / DISTS)"
        out.append({"point": s["point"], "quality": s["quality"], "config": s["config"], "ok": bool(ok),
                    "what": what})
    return out


def format_table(summary: list[dict], checks_: list[dict]) -> str:
    w = max([12, *(len(s["config"]) for s in summary)])
    head = (f"{'point':>9}  {'refine':<{w}} {'bpp':>7}  {'PSNR dB':>8}  {'MS-SSIM':>8}  {'LPIPS':>6}  {'DISTS':>6}  "
            f"{'sharp':>6}  {'dec s/MP':>8}  {'ΔPSNR':>6}  {'ΔMS-SSIM':>8}  {'ΔLPIPS':>7}  {'ΔDISTS':>7}")
    lines = [head, "-" * len(head)]

    def f(x, spec, signed=False):
        return "n/a" if x is None else format(x, ("+" if signed else "") + spec)

    for s in summary:
        deltas = ["", "", "", ""] if s["config"] == "none" else [
            f(s["d_psnr"], ".2f", True), f(s["d_ms_ssim"], ".4f", True), f(s["d_lpips"], ".4f", True),
            f(s["d_dists"], ".4f", True)]
        lines.append(f"{s['point']:>9}  {s['config']:<{w}} {s['bpp']:7.4f}  {s['psnr']:8.2f}  "
                     f"{f(s['ms_ssim'], '.4f'):>8}  {f(s['lpips'], '.4f'):>6}  {f(s['dists'], '.4f'):>6}  "
                     f"{f(s['sharpness'], '.3f'):>6}  {s['decode_s_per_mp']:8.2f}  {deltas[0]:>6}  {deltas[1]:>8}  "
                     f"{deltas[2]:>7}  {deltas[3]:>7}")
    if checks_:
        lines.append("")
        for c in checks_:
            lines.append(f"{'PASS' if c['ok'] else 'FAIL'}  {c['point']} {c['config']}: {c['what']}")
    return "\n".join(lines)


@dataclass(frozen=True)
class RefineBenchConfig:
    """What ``bench-refine`` measures (the CLI builds it: :func:`config_from_args`)."""

    images: str
    modes: tuple[str, ...] = ("faithful", "realistic")
    steps: tuple[int, ...] = (1, 2, 4)
    etas: tuple[float | None, ...] = (None,)  # realistic's noise per step (None: the mode's default)
    points: tuple[tuple[str, float], ...] = (("quality", 25.0), ("quality", 50.0), ("quality", 75.0))
    metrics: tuple[str, ...] = ("psnr", "ms_ssim", "lpips", "dists")
    codec: str = "tae-f2"
    refiner: str | None = None  # every mode's refiner (default: each mode's own)
    realistic_refiner: str | None = None  # the realistic mode's alone (e.g. a candidate beside the shipped faithful)
    seed: int = 0
    limit: int | None = None
    crop: int | None = None
    weights: str | None = None
    device: str | None = None
    json_out: str | None = None
    html: str | None = None


def config_from_args(args) -> RefineBenchConfig:
    from latentarc.jobs.bench_inputs import parse_qualities, parse_targets
    from latentarc.jobs.rd_perceptual import parse_metrics

    modes = parse_modes(args.refine_modes)
    if not modes:
        raise ValueError("--modes needs faithful and/or realistic")
    targets = parse_targets(args.targets)
    # operating points: the target rates when given (each image coded at that bpp), else the qualities
    points = ([("target_bpp", t) for t in targets] if targets
              else [("quality", q) for q in parse_qualities(args.qualities)])
    return RefineBenchConfig(
        images=args.images, modes=tuple(modes), steps=tuple(parse_steps(args.refine_steps)), points=tuple(points),
        etas=tuple(parse_etas(args.etas)),
        metrics=tuple(parse_metrics(args.metrics)), codec=args.codec, refiner=args.refiner,
        realistic_refiner=args.realistic_refiner, seed=args.seed,
        limit=args.limit, crop=args.crop, weights=args.weights, device=args.device, json_out=args.json_out,
        html=args.html)


def run_refine_bench(args) -> int:
    bench_refinement(config_from_args(args))
    return 0


def bench_refinement(args: RefineBenchConfig) -> None:
    """Every refinement mode × step count against ``none`` on the same streams (see the module docstring)."""
    from latentarc.codec.api import default_device
    from latentarc.codec.neural import NeuralCodec
    from latentarc.codec.refine import resolve, unrefined
    from latentarc.codec.models import load_model
    from latentarc.jobs.bench_inputs import centre_crop, json_safe, list_images, read_pictures

    modes, metrics, steps, points = list(args.modes), args.metrics, list(args.steps), list(args.points)
    files = list_images(args.images, args.limit)
    model = load_model(args.codec, weights=args.weights, device=args.device or default_device())  # neural only
    device = model.device
    # one named refiner for every mode, or each mode's own default (a realistic model may differ from the faithful);
    # None for a mode the model decodes unrefined (refine.UNREFINED): its rows are the unrefined decode
    named = {"faithful": args.refiner, "realistic": args.realistic_refiner or args.refiner}
    refiners = {m: resolve(named[m], model.name, device, m) for m in ("faithful", "realistic") if m in modes}
    # streams carry the encoder's refinement checks (faithful/v, realistic/v); the payload, and so every other row,
    # is the same
    codec = NeuralCodec(model, verify_refine="faithful" in modes, refiner=refiners.get("faithful"),
                        verify_realistic="realistic" in modes, realistic_refiner=refiners.get("realistic"))
    cfgs = configs(modes, steps, args.seed, list(args.etas))
    labels = [label(c) for c in cfgs]

    rows, skipped, warmed, crops = [], [], False, []
    t_start = time.perf_counter()
    for i, path, pic in read_pictures(files, args.crop, skipped):
        if not warmed:  # untimed: lazy initialisation (thread pools, the refiner's first call)
            small = centre_crop(pic, 64)
            d = codec.encode(small, quality=50, measure=False).data
            for c in cfgs:
                measure_decode(codec, d, small, c, refiners.get(c.mode), metrics)
            warmed = True
        t_img = time.perf_counter()
        brief = []
        window = original = None
        if args.html:  # the page's window and the original's crop, once per image
            ref = pic.reference()
            window = detailed_window(ref, CROP_SIDE)
            original = _display(ref, window)
        for kind, value in points:
            data = codec.encode(pic, measure=False, **{kind: value}).data
            bpp = len(data) * 8.0 / (pic.width * pic.height)
            p = point_label(kind, value)
            q = value if kind == "quality" else None
            decoded: list | None = [] if args.html else None  # decoded planes, kept only for the page
            for c in cfgs:
                r = measure_decode(codec, data, pic, c, refiners.get(c.mode), metrics, keep=decoded)
                rows.append({"image": path.name, "width": pic.width, "height": pic.height, "point": p,
                             "quality": q, "target_bpp": value if q is None else None, "bytes": len(data),
                             "bpp": bpp, **r})
            if args.html:
                crops.append({"image": path.name, "point": p, "bpp": bpp,
                              "tiles": [("original", original)]
                              + [(label(c), _display(d, window)) for c, d in zip(cfgs, decoded)]})
            mine = [r for r in rows if r["image"] == path.name and r["point"] == p]
            brief.append(f"{p} ({bpp:.3f} bpp): " + " ".join(f"{r['config']} {r['psnr']:.2f}" for r in mine))
        print(f"[{i}/{len(files)}] {path.name} {pic.width}x{pic.height}: {time.perf_counter() - t_img:.1f} s "
              f"({'; '.join(brief)})", file=sys.stderr, flush=True)
    if not rows:
        raise ValueError(f"no readable images in {args.images}")

    summary = summarise(rows, [point_label(k, v) for k, v in points], labels)
    chk = checks(summary)
    n = len({r["image"] for r in rows})
    used = {m: refiners[m].name if refiners[m] is not None else f"none ({unrefined(None, model.name, m)})"
            for m in ("faithful", "realistic") if m in modes}
    names = (next(iter(used.values())) if len(set(used.values())) == 1
             else ", ".join(f"{m} {name}" for m, name in used.items())) or "none"
    print(f"latentarc bench-refine: codec {args.codec}, refiner {names}, "
          f"{n} images, points {', '.join(point_label(k, v) for k, v in points)}, seed {args.seed}")
    print()
    print(format_table(summary, chk))
    if args.json_out:
        doc = {"codec": args.codec, "refiner": names, "refiners": used, "images": args.images,
               "points": [{"kind": k, "value": v} for k, v in points], "modes": modes, "steps": steps,
               "etas": list(args.etas), "seed": args.seed, "crop": args.crop,
               "limit": args.limit, "rows": rows, "skipped": skipped,
               "summary": summary, "checks": chk, "elapsed_s": time.perf_counter() - t_start}
        out = Path(args.json_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(json_safe(doc), indent=2, allow_nan=False) + "\n")
        print(f"\nwrote {out}")
    if args.html:
        out = Path(args.html)
        out.parent.mkdir(parents=True, exist_ok=True)
        title = f"{args.codec}, refiner {names}, {n} images, seed {args.seed}"
        out.write_text(refine_html(title, summary, chk, crops))
        print(f"wrote {out}")


def detailed_window(rgb: np.ndarray, side: int) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the ``side``-px window with the most gradient energy, on a half-window grid: where
    texture is, so a crop shows what refinement does to it."""
    from latentarc.codec.metrics import gradient_energy

    h, w = rgb.shape[:2]
    if h <= side and w <= side:
        return 0, h, 0, w
    best, where = -1.0, (0, 0)
    for y in range(0, max(1, h - side + 1), max(1, side // 2)):
        for x in range(0, max(1, w - side + 1), max(1, side // 2)):
            e = gradient_energy(rgb[y : y + side, x : x + side])
            if e > best:
                best, where = e, (y, x)
    y, x = where
    return y, min(h, y + side), x, min(w, x + side)


def _display(planes: np.ndarray, window: tuple[int, int, int, int]) -> np.ndarray:
    """The window of decoded ``planes`` as 8-bit RGB for the page (16-bit shifted, grey repeated, alpha dropped)."""
    y0, y1, x0, x1 = window
    a = planes[y0:y1, x0:x1]
    if a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    return np.ascontiguousarray(a[..., :3] if a.shape[2] >= 3 else np.repeat(a[..., :1], 3, axis=2))


def refine_html(title: str, summary: list[dict], chk: list[dict], crops: list[dict]) -> str:
    """A self-contained page: the summary table, the checks, and the side-by-side crops."""
    import html

    from latentarc.pipeline.report import array_data_uri, html_table, page

    def f(x, spec):
        return "n/a" if x is None else format(x, spec)

    head = ["point", "refine", "bpp", "PSNR dB", "MS-SSIM", "LPIPS", "DISTS", "sharpness", "decode s/MP",
            "ΔPSNR", "ΔLPIPS", "ΔDISTS"]
    rows = [[s["point"], s["config"], f"{s['bpp']:.4f}", f"{s['psnr']:.2f}", f(s["ms_ssim"], ".4f"),
             f(s["lpips"], ".4f"), f(s["dists"], ".4f"), f(s["sharpness"], ".3f"), f"{s['decode_s_per_mp']:.2f}",
             *(("",) * 3 if s["config"] == "none" else
               (f(s["d_psnr"], "+.2f"), f(s["d_lpips"], "+.4f"), f(s["d_dists"], "+.4f")))] for s in summary]
    body = [f"<h1>latentarc refinement benchmark</h1><div class=muted>{html.escape(title)}</div>",
            html_table(head, rows),
            "<ul>" + "".join(f"<li><b>{'PASS' if c['ok'] else 'FAIL'}</b> {html.escape(c['point'])} "
                             f"{html.escape(c['config'])}: {html.escape(c['what'])}</li>" for c in chk) + "</ul>",
            f"<h2>Side by side</h2><p class=muted>The {CROP_SIDE}-px window of each image with the most detail, "
            "shown at 2× (nearest neighbour); every decode of a row comes from the same stream.</p>"]
    for c in crops:
        cells = "".join(
            f"<figure style='display:inline-block;margin:4px'><img alt='{html.escape(name)}' "
            f"style='width:{2 * t.shape[1]}px;image-rendering:pixelated' src='{array_data_uri(t)}'>"
            f"<figcaption>{html.escape(name)}</figcaption></figure>" for name, t in c["tiles"])
        body.append(f"<h3>{html.escape(c['image'])}, {html.escape(c['point'])} ({c['bpp']:.3f} bpp)</h3><div>{cells}</div>")
    return page("latentarc refinement benchmark", "\n".join(body))
