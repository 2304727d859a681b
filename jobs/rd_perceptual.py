"""Perceptual axes of the RD benchmark: which metrics to measure, the dB quality axis of a distance, and the bpp a
codec needs to reach a fixed LPIPS / DISTS level.

A distance (LPIPS, DISTS: 0 = identical, lower is better) becomes a quality axis as ``-10·log10(distance)`` dB
(higher is better, like PSNR), so BD-rate and interpolation treat every metric alike.

**bpp at equal quality** is computed *per image*, then averaged: on each image's own curve (its points ordered by
bpp), log-bpp is interpolated linearly against ``-10·log10(distance)`` at the first crossing of the level, i.e. the
smallest rate at which that image reaches it. Per image rather than on the mean curve, because the mean curve
averages bpp and distance at equal *quality setting*, and images reach a level at very different settings. A level
an image's curve does not reach is marked: ``above`` (even the highest rate measured is worse than the level) or
``below`` (already the lowest rate measured is better, so the rate needed is under the measured range); the codec's
mean is then left out (``bpp`` None) and the table says how many images reached it.

On many images some cell is always out of range (an easy photo beats a level at AVIF's lowest rate; a detailed one
never reaches it at the latent codec's highest), so a second table compares the codecs **on the same images**: per
level, the images whose level every codec reaches, each codec's mean bpp on them, its change against the
reference codec (ratio of the means) and on how many of those images it needs fewer bits than the reference.
Its ``n`` says how representative each column is.
"""

from __future__ import annotations

import math

from latentarc.codec.metrics import METRIC_ORDER
from latentarc.codec.metrics import METRICS as REGISTRY

#: every metric the RD benchmark can measure; PSNR is always measured (cheap, and every table is built on it)
METRICS = METRIC_ORDER
PERCEPTUAL = tuple(m for m in METRIC_ORDER if REGISTRY.get(m).weights is not None)
#: the fixed levels of the bpp-at-equal-quality table
LEVELS = {"lpips": (0.10, 0.15, 0.25), "dists": (0.10, 0.15, 0.20)}
LABELS = {m: REGISTRY.get(m).label for m in METRIC_ORDER}
_ZERO = 1e-6  # a distance of 0 (identical pixels) counts as this on the dB axis, so interpolation stays finite


def parse_metrics(spec: str | None) -> tuple[str, ...]:
    """``"psnr,ms-ssim,lpips,dists"`` (None: all) → canonical metric names in :data:`METRICS` order; PSNR is
    always included."""
    if spec is None:
        return METRICS
    names = {s.strip().lower().replace("-", "_") for s in spec.split(",") if s.strip()}
    bad = sorted(names - set(METRICS))
    if bad:
        raise ValueError(f"unknown metric(s) {', '.join(bad)}; known: psnr, ms-ssim, lpips, dists")
    return tuple(m for m in METRICS if m in names or m == "psnr")


def distance_db(d: float | None) -> float | None:
    """``-10·log10(d)``: a distance as a higher-is-better dB axis (None stays None; 0 counts as 1e-6)."""
    if d is None or not math.isfinite(d):
        return None
    return -10.0 * math.log10(max(d, _ZERO))


def bpp_at_level(points: list[tuple[float, float | None]], level: float) -> tuple[float | None, str | None]:
    """The bpp at which a curve of (bpp, distance) points first reaches ``distance ≤ level``: log-bpp interpolated
    linearly on the dB axis between the two points that bracket the crossing. Returns (bpp, None), or
    (None, "above" | "below" | "not measured") when the level is not reached inside the measured range."""
    pts = sorted((b, d) for b, d in points if b > 0 and d is not None and math.isfinite(d))
    if not pts:
        return None, "not measured"
    target = distance_db(level)
    curve = [(math.log(b), distance_db(d)) for b, d in pts]
    if curve[0][1] >= target:
        return None, "below"
    for (l0, q0), (l1, q1) in zip(curve, curve[1:]):
        if q1 >= target:  # q0 < target: walking up in rate, this is the first crossing
            return math.exp(l0 + (target - q0) / (q1 - q0) * (l1 - l0)), None
    return None, "above"


def equal_quality(rows: list[dict], codecs: list[str], metrics: tuple[str, ...]) -> dict:
    """``{codec: {metric: [entry per level]}}`` for the measured perceptual metrics; an entry holds ``level``,
    ``bpp`` (mean over images; None unless every image reaches the level), ``reached`` / ``images``,
    ``beyond`` (how many images were above / below the measured range) and ``per_image`` bpp."""
    out: dict = {}
    for c in codecs:
        rs = [r for r in rows if r["codec"] == c]
        images = list(dict.fromkeys(r["image"] for r in rs))
        out[c] = {}
        for m in (m for m in PERCEPTUAL if m in metrics):
            entries = []
            for level in LEVELS[m]:
                per = {img: bpp_at_level([(r["bpp"], r.get(m)) for r in rs if r["image"] == img], level)
                       for img in images}
                got = [b for b, _ in per.values() if b is not None]
                beyond = {k: sum(1 for _, why in per.values() if why == k) for k in ("above", "below", "not measured")}
                entries.append({
                    "level": level,
                    "bpp": sum(got) / len(got) if got and len(got) == len(images) else None,
                    "reached": len(got),
                    "images": len(images),
                    "beyond": beyond,
                    "per_image": {img: b for img, (b, _) in per.items()},
                })
            out[c][m] = entries
    return out


def common_subset(eq: dict, reference: str | None = None) -> dict:
    """``{metric: [entry per level]}`` on the images every codec of ``eq`` reaches: an entry holds ``level``,
    ``images`` (names), ``of`` (images measured), ``bpp`` {codec: mean bpp on those images, None when there are
    none}, ``vs_reference`` {codec: mean ÷ the reference's mean − 1} and ``wins`` {codec: images on which it needs
    fewer bits than the reference} (both None without a reference in ``eq``)."""
    out: dict = {}
    codecs = list(eq)
    for m in (m for m in PERCEPTUAL if codecs and all(m in eq[c] for c in codecs)):
        entries = []
        for i, level in enumerate(LEVELS[m]):
            per = {c: eq[c][m][i]["per_image"] for c in codecs}  # codec → {image: bpp or None}
            first = per[codecs[0]]
            names = [img for img in first if all(p.get(img) is not None for p in per.values())]
            bpp = {c: (sum(p[img] for img in names) / len(names) if names else None) for c, p in per.items()}
            ref = bpp.get(reference) if reference else None
            entries.append({"level": level, "images": names, "of": len(first), "bpp": bpp,
                            "vs_reference": {c: (b / ref - 1 if b is not None and ref else None)
                                             for c, b in bpp.items()},
                            "wins": {c: (sum(p[img] < per[reference][img] for img in names) if ref else None)
                                     for c, p in per.items()}})
        out[m] = entries
    return out


def common_subset_cells(common: dict) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the same-images table: a column per metric level, headed with its image count."""
    cols = [(m, e) for m, entries in common.items() for e in entries]
    if not cols:
        return ["codec"], []
    codecs = list(cols[0][1]["bpp"])
    head = ["codec", *(f"{LABELS[m]} {e['level']:.2f} (n={len(e['images'])}/{e['of']})" for m, e in cols)]

    def cell(e: dict, c: str) -> str:
        b, v, w = e["bpp"][c], e["vs_reference"][c], e["wins"][c]
        if b is None:
            return "n/a"
        return f"{b:.4f}" + (f" ({v * 100:+.0f}%, {w}/{len(e['images'])})" if v is not None else "")

    return head, [[c, *(cell(e, c) for _, e in cols)] for c in codecs]


COMMON_NOTE = ("same images: per level, only the images whose level every codec reaches (n of the images measured), "
               "mean bpp per codec on them and, in brackets, its change against the reference codec and on how "
               "many of those images it needs fewer bits than the reference.")


def _cell(e: dict) -> str:
    if e["bpp"] is not None:
        return f"{e['bpp']:.4f}"
    b = e["beyond"]
    if b["not measured"] == e["images"]:
        return "n/a"
    side = ">max" if b["above"] else "<min"
    return f"n/r {side} ({e['reached']}/{e['images']})"


def equal_quality_cells(eq: dict) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the bpp-at-equal-quality table: one row per codec, one column per metric level."""
    cols = [(m, i, level) for m in PERCEPTUAL for i, level in enumerate(LEVELS[m])
            if any(m in per for per in eq.values())]
    head = ["codec", *(f"{LABELS[m]} {level:.2f}" for m, _, level in cols)]
    rows = [[c, *(_cell(per[m][i]) if m in per else "n/a" for m, i, _ in cols)] for c, per in eq.items()]
    return head, rows


EQUAL_QUALITY_NOTE = ("bpp at equal quality: per image, log-bpp interpolated linearly against -10·log10(distance) "
                      "at the first crossing of the level (the smallest rate reaching it), then the mean over images. "
                      "n/r = not reached by every image (k/n reached): >max = some image stays worse than the level "
                      "at the highest rate measured, <min = some image is already better at the lowest rate "
                      "measured.")


def _text_table(title: str, head: list[str], rows: list[list[str]], note: str) -> str:
    widths = [max(10, *(len(r[0]) for r in rows))] + [max(len(h), *(len(r[i]) for r in rows))
                                                       for i, h in enumerate(head) if i]
    def line(cells):
        return " ".join(f"{x:<{w}}" if i == 0 else f"{x:>{w}}" for i, (x, w) in enumerate(zip(cells, widths)))

    return "\n".join([title, line(head), "-" * len(line(head)), *(line(r) for r in rows), "  " + note])


def format_equal_quality(eq: dict, same: dict | None = None, reference: str | None = None) -> str:
    """Both tables as text: every codec on its own images (``eq``: :func:`equal_quality`), then, given ``same``
    (:func:`common_subset` of ``eq`` against ``reference``), every codec on the images all of them reach."""
    head, rows = equal_quality_cells(eq)
    if len(head) == 1:
        return ""
    text = _text_table("bpp needed at equal quality (lower = fewer bits for the same perceptual distance):",
                       head, rows, EQUAL_QUALITY_NOTE)
    chead, crows = common_subset_cells(same or {})
    if len(chead) > 1 and len(crows) > 1:
        text += "\n\n" + _text_table(f"bpp needed at equal quality on the same images (against {reference}):"
                                      if reference else "bpp needed at equal quality on the same images:",
                                      chead, crows, COMMON_NOTE)
    return text
