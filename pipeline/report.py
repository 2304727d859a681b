"""``latentarc report TABLE``: what a committed bitstream table holds, what it saves and how good it is.

Reads only the columns it needs (never the payloads, except for the ≤ 4 rows shown as crops in ``--html``).

Bytes, three figures, never mixed up:

* ``original_bytes``: sum of ``source_size`` (the originals' objects);
* ``payload_bytes``: sum of ``payload_size`` (the LARC streams alone);
* ``stored_bytes``: the committed Parquet data files' real size on storage (``table.stored_bytes(data_files)``:
  payloads plus every other column, footers and page headers) — what the bill shows, so ``ratio`` and the money
  use it. Per codec and per prefix the file bytes cannot be split exactly (one file mixes rows), so
  ``stored_bytes`` there is the table's file bytes apportioned by payload share (``stored_bytes_est``).

Money: ``usd_per_month_saved = max(0, original_bytes - stored_bytes) / 2**30 * price_per_gb_month`` (a GiB-month,
S3 Standard list price by default). Prefix = a key's first path component, ``(root)`` for keys without one.
PSNR is infinite for lossless rows (passthrough): distributions use finite values and count ``lossless`` apart.
Guarantee tiers (``codec.guarantee``: bytes-exact, pixels-exact, lossy; ``unrecorded`` for rows older than the
column) get their own bytes and savings (``per_guarantee``), and ``exact_saved_bytes`` is what the two exact
tiers saved in payload — the saving that changed nothing. Compute cost and payback (``usd_compute``,
``payback_months``; ``savings.compute_cost``) come from the rows' ``compute_s`` / ``gpu_s``, for the table and
every group; rows older than those columns leave them n/a.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import math
import sys
from typing import Any

import numpy as np

from .savings import (DEFAULT_PRICE_PER_CPU_HOUR, DEFAULT_PRICE_PER_GB_MONTH, DEFAULT_PRICE_PER_GPU_HOUR, GIB,
                      compute_cost, cost_lines, payback_text)

COLUMNS = ["key", "source_uri", "source_size", "width", "height", "codec", "payload_size", "bpp", "psnr", "ms_ssim",
           "guarantee", "lpips", "dists", "compute_s", "gpu_s"]
#: measured only for a perceptual floor (codec.floors): shown when some row has them
PERCEPTUAL = (("lpips", "LPIPS  "), ("dists", "DISTS  "))
UNRECORDED = "unrecorded"  # the guarantee of rows written before the column existed
EXACT_TIERS = ("bytes-exact", "pixels-exact")
PERCENTILES = (5, 25, 50, 75, 95)
ROOT_PREFIX = "(root)"
MAX_CROPS = 4
CROP = 192


# ------------------------------------------------------------------------------------------ numbers
def prefix_of(key: str) -> str:
    return key.split("/", 1)[0] if "/" in key else ROOT_PREFIX


def distribution(values, bins: int = 12) -> dict | None:
    """Mean, min/max, percentiles and a histogram of the finite ``values``; ``non_finite`` counts the rest."""
    raw = [v for v in values if v is not None]
    v = np.asarray([x for x in raw if math.isfinite(x)], dtype=np.float64)
    if not v.size:
        return {"n": 0, "non_finite": len(raw)} if raw else None
    pct = np.percentile(v, PERCENTILES)
    counts, edges = np.histogram(v, bins=min(bins, max(1, v.size)))
    return {
        "n": int(v.size),
        "non_finite": len(raw) - int(v.size),
        "mean": float(v.mean()),
        "min": float(v.min()),
        "max": float(v.max()),
        **{f"p{p:02d}": float(x) for p, x in zip(PERCENTILES, pct)},
        "histogram": {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]},
    }


def _money(saved_bytes: float, price: float) -> float:
    return max(0.0, saved_bytes) / GIB * price


def _compute(rows: dict[str, list], idx, saved: float, prices: dict) -> dict:
    """savings.compute_cost of the rows ``idx`` (their compute_s / gpu_s; null in rows older than the columns)."""
    idx = list(idx)

    def total(col):
        xs = [rows[col][i] for i in idx if rows[col][i] is not None]
        return float(sum(xs)) if xs else None

    return compute_cost(compute_s=total("compute_s"), gpu_s=total("gpu_s"), rows=len(idx),
                        compute_rows=sum(1 for i in idx if rows["compute_s"][i] is not None),
                        usd_per_month_saved=saved, **prices)


def _group(rows: dict[str, list], field: str, names: list[str], file_bytes: int, payload_total: int, price: float,
           prices: dict) -> dict:
    out = {}
    for name in names:
        idx = [i for i, x in enumerate(rows[field]) if x == name]
        orig = int(sum(rows["source_size"][i] for i in idx))
        pay = int(sum(rows["payload_size"][i] for i in idx))
        est = file_bytes * pay / payload_total if payload_total else 0.0
        out[name] = {
            "rows": len(idx),
            "original_bytes": orig,
            "payload_bytes": pay,
            "stored_bytes_est": est,
            "ratio": orig / est if est else None,
            "payload_ratio": orig / pay if pay else None,
            "usd_per_month_saved": _money(orig - est, price),
            "bpp_mean": float(np.mean([rows["bpp"][i] for i in idx])) if idx else None,
            "psnr_mean": _finite_mean([rows["psnr"][i] for i in idx]),
        }
        out[name].update(_compute(rows, idx, out[name]["usd_per_month_saved"], prices))
    return out


def _finite_mean(xs) -> float | None:
    v = [x for x in xs if x is not None and math.isfinite(x)]
    return float(np.mean(v)) if v else None


def build_report(table, *, price_per_gb_month: float = DEFAULT_PRICE_PER_GB_MONTH,
                 price_per_cpu_hour: float = DEFAULT_PRICE_PER_CPU_HOUR,
                 price_per_gpu_hour: float = DEFAULT_PRICE_PER_GPU_HOUR) -> dict:
    """The report of a :class:`~latentarc.pipeline.table.BitstreamTable` as a JSON-able dict."""
    t = table.read(columns=COLUMNS)
    rows = {c: t[c].to_pylist() for c in COLUMNS}
    n = t.num_rows
    errors = table.errors().num_rows
    files = table.data_files()
    file_bytes = int(table.stored_bytes(files))
    original = int(sum(rows["source_size"]))
    payload = int(sum(rows["payload_size"]))
    pixels = int(sum(w * h for w, h in zip(rows["width"], rows["height"])))
    rows["prefix"] = [prefix_of(k) for k in rows["key"]]
    rows["guarantee"] = [g or UNRECORDED for g in rows["guarantee"]]
    tiers = sorted(set(rows["guarantee"]))
    codecs = sorted(set(rows["codec"]))
    prefixes = sorted(set(rows["prefix"]))
    prices = {"price_per_cpu_hour": price_per_cpu_hour, "price_per_gpu_hour": price_per_gpu_hour}
    saved = _money(original - file_bytes, price_per_gb_month)
    return {
        "table": table.uri,
        "rows": n,
        "errors": errors,
        "data_files": len(files),
        "original_bytes": original,
        "payload_bytes": payload,
        "stored_bytes": file_bytes,
        "stored_bytes_means": "size of the committed Parquet data files on storage (payloads + other columns)",
        "ratio": original / file_bytes if file_bytes else None,
        "payload_ratio": original / payload if payload else None,
        "price_per_gb_month": price_per_gb_month,
        "usd_per_month_original": original / GIB * price_per_gb_month,
        "usd_per_month_stored": file_bytes / GIB * price_per_gb_month,
        "usd_per_month_saved": saved,
        **prices,
        **_compute(rows, range(n), saved, prices),
        "megapixels": pixels / 1e6,
        "per_codec": _group(rows, "codec", codecs, file_bytes, payload, price_per_gb_month, prices),
        "per_prefix": _group(rows, "prefix", prefixes, file_bytes, payload, price_per_gb_month, prices),
        "per_guarantee": _group(rows, "guarantee", tiers, file_bytes, payload, price_per_gb_month, prices),
        "exact_saved_bytes": sum(s - p for s, p, g in zip(rows["source_size"], rows["payload_size"], rows["guarantee"])
                                 if g in EXACT_TIERS),
        "bpp": distribution(rows["bpp"]),
        "psnr": distribution(rows["psnr"]),
        "ms_ssim": distribution(rows["ms_ssim"]),
        **{k: distribution(rows[k]) for k, _ in PERCEPTUAL},
        "lossless_rows": sum(1 for p in rows["psnr"] if p is not None and math.isinf(p)),
        "auto_policy": auto_policy(table.read(columns=["params", "payload_size", "psnr"]).to_pylist()),
    }


def auto_policy(rows: list[dict]) -> dict | None:
    """For rows written by ``--codec auto``: what each enabled codec alone would have stored at the same floor
    (its own stream where it met the floor, the original file where it could not — what an archive with only
    that codec would have had to keep), against what auto stored. From the candidates auto recorded per row."""
    auto = []
    for r in rows:
        try:
            a = json.loads(r["params"] or "{}").get("auto")
        except ValueError:
            a = None
        if a:
            auto.append((r, a))
    if not auto:
        return None
    names = sorted({n for _, a in auto for n in a["candidates"]})
    totals = {n: 0 for n in names if n != "passthrough"}
    for _, a in auto:
        fallback = a["candidates"].get("passthrough")
        for n in totals:
            c = a["candidates"].get(n)
            totals[n] += c if isinstance(c, int) else (fallback or 0)
    stored = sum(r["payload_size"] for r, _ in auto)
    best = min(totals, key=totals.get) if totals else None
    psnrs = [r["psnr"] for r, _ in auto if r["psnr"] is not None]
    return {
        "rows": len(auto),
        "floors": sorted({json.dumps(a.get("floor"), sort_keys=True) for _, a in auto}),
        "chosen": {n: sum(1 for _, a in auto if a["chosen"] == n) for n in names},
        "auto_payload_bytes": stored,
        "single_codec_payload_bytes": totals,
        "best_single_codec": best,
        "auto_vs_best_single_pct": 100 * (stored / totals[best] - 1) if best and totals[best] else None,
        "min_psnr": min(psnrs) if psnrs else None,
    }


# ------------------------------------------------------------------------------------------ terminal
def _size(n: float | None) -> str:
    if n is None:
        return "n/a"
    for unit, k in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= k:
            return f"{n / k:,.2f} {unit}"
    return f"{n:,.0f} B"


def _ratio(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}:1"


def _group_table(title: str, groups: dict) -> list[str]:
    head = f"{title:<16} {'rows':>6} {'original':>11} {'payload':>11} {'stored~':>11} {'ratio':>9} {'bpp':>7} {'PSNR':>7} {'$/month saved':>14}"
    lines = [head, "-" * len(head)]
    for name, g in groups.items():
        ps = "n/a" if g["psnr_mean"] is None else f"{g['psnr_mean']:.2f}"
        bpp = "n/a" if g["bpp_mean"] is None else f"{g['bpp_mean']:.3f}"
        lines.append(
            f"{name[:16]:<16} {g['rows']:>6} {_size(g['original_bytes']):>11} {_size(g['payload_bytes']):>11} "
            f"{_size(g['stored_bytes_est']):>11} {_ratio(g['ratio']):>9} {bpp:>7} {ps:>7} "
            f"{g['usd_per_month_saved']:>14.4g}"
        )
    return lines


def _dist_line(name: str, d: dict | None, unit: str = "", fmt: str = ".3f") -> str:
    if not d or not d.get("n"):
        return f"  {name}: " + (f"all {d['non_finite']} infinite (pixel-identical)" if d else "n/a")
    ps = "  ".join(f"p{p:02d} {d[f'p{p:02d}']:{fmt}}" for p in PERCENTILES)
    extra = f", {d['non_finite']} infinite (pixel-identical)" if d.get("non_finite") else ""
    return f"  {name}: mean {d['mean']:{fmt}}{unit}  min {d['min']:{fmt}}  {ps}  max {d['max']:{fmt}}  (n={d['n']}{extra})"


def format_report(r: dict) -> str:
    lines = [
        f"table {r['table']}: {r['rows']} rows, {r['errors']} errors, {r['data_files']} data files, "
        f"{r['megapixels']:.3f} MP",
        f"  original bytes (sum source_size):   {_size(r['original_bytes'])} ({r['original_bytes']} B)",
        f"  payload bytes (sum payload_size):   {_size(r['payload_bytes'])} ({r['payload_bytes']} B), "
        f"ratio {_ratio(r['payload_ratio'])}",
        f"  stored bytes (Parquet data files):  {_size(r['stored_bytes'])} ({r['stored_bytes']} B), "
        f"ratio {_ratio(r['ratio'])}",
        f"  money at ${r['price_per_gb_month']}/GiB-month: originals ${r['usd_per_month_original']:.4g}, "
        f"stored ${r['usd_per_month_stored']:.4g}, saved ${r['usd_per_month_saved']:.4g}/month",
        *cost_lines(r),
        "",
        *_group_table("codec", r["per_codec"]),
        "",
        *_group_table("prefix", r["per_prefix"]),
        "",
        *_group_table("guarantee", r.get("per_guarantee", {})),
        f"  saved without changing a pixel (bytes-exact + pixels-exact payload): {_size(r.get('exact_saved_bytes', 0))}",
        "  (stored~ = Parquet file bytes apportioned by payload share)",
        "",
        "distributions:",
        _dist_line("bpp    ", r["bpp"]),
        _dist_line("PSNR dB", r["psnr"], fmt=".2f"),
        _dist_line("MS-SSIM", r["ms_ssim"], fmt=".4f"),
        *(_dist_line(label, r[k], fmt=".4f") for k, label in PERCEPTUAL if r.get(k)),
    ]
    ap = r.get("auto_policy")
    if ap:
        lines += ["", f"codec auto ({ap['rows']} rows, floor {', '.join(ap['floors'])}, lowest row PSNR "
                      f"{_num(ap['min_psnr'], '.2f')} dB): chosen "
                      + ", ".join(f"{n} {k}" for n, k in ap["chosen"].items() if k),
                  f"  auto stored {_size(ap['auto_payload_bytes'])}; each codec alone at the same floor "
                  "(original file where it missed the floor):"]
        lines += [f"    {n:<12} {_size(b)}" for n, b in sorted(ap["single_codec_payload_bytes"].items(), key=lambda x: x[1])]
        if ap["auto_vs_best_single_pct"] is not None:
            lines.append(f"  auto vs best single codec ({ap['best_single_codec']}): {ap['auto_vs_best_single_pct']:+.1f}%")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ HTML helpers
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#1d1d1f;background:#fff}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border:1px solid #d0d0d0;padding:4px 8px;text-align:right} th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}
.muted{color:#666;font-size:12px} img.plot{max-width:100%;border:1px solid #eee;margin:4px 0}
.crops{display:flex;flex-wrap:wrap;gap:16px} .crop{border:1px solid #ddd;padding:8px}
.crop img{image-rendering:pixelated;width:192px;height:auto;margin-right:4px} .crop .cap{font-size:12px}
"""


def fig_data_uri(fig) -> str:
    """A matplotlib figure as a ``data:image/png;base64,…`` URI (figure closed afterwards)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def array_data_uri(rgb: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>\n{body}\n</body></html>\n"
    )


def html_table(head: list[str], rows: list[list[Any]]) -> str:
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


# ------------------------------------------------------------------------------------------ HTML report
def _centre(a: np.ndarray, size: int) -> np.ndarray:
    h, w = a.shape[:2]
    ch, cw = min(h, size), min(w, size)
    y, x = (h - ch) // 2, (w - cw) // 2
    return np.ascontiguousarray(a[y : y + ch, x : x + cw])


def _as_rgb8(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint16:
        a = (a // 257).astype(np.uint8)
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    return a


def pick_crop_keys(table, n: int = MAX_CROPS) -> list[str]:
    """Up to ``n`` keys: the first row of each codec, then more rows in key order."""
    t = table.read(columns=["key", "codec"])
    keys, codecs = t["key"].to_pylist(), t["codec"].to_pylist()
    chosen: list[str] = []
    for c in sorted(set(codecs)):
        chosen.append(keys[codecs.index(c)])
    for k in keys:
        if len(chosen) >= n:
            break
        if k not in chosen:
            chosen.append(k)
    return sorted(chosen[:n])


def crops(table, keys: list[str], *, weights=None, size: int = CROP) -> list[dict]:
    """Decoded (and, when the original is still there and unchanged, original) centre crops of ``keys``."""
    from latentarc.codec.classical import decoded_planes
    from latentarc.codec.codecs import codec_for_stream
    from latentarc.codec.images import DEFAULT_MAX_PIXELS, read_image

    from .storage import read_bytes

    t = table.read(columns=["key", "source_uri", "source_sha256", "codec", "payload", "width", "height", "mode",
                            "bpp", "psnr"], keys=keys)
    out = []
    cache: dict[str, Any] = {}
    for row in t.to_pylist():
        item = {"key": row["key"], "codec": row["codec"], "bpp": row["bpp"], "psnr": row["psnr"],
                "decoded": None, "original": None, "note": ""}
        try:
            data = row["payload"]
            name = row["codec"]
            if name not in cache:
                cache[name] = codec_for_stream(data, weights=weights, device="cpu")
            dec = cache[name].decode(data)
            item["decoded"] = array_data_uri(_as_rgb8(_centre(decoded_planes(dec, row["mode"]), size)))
        except Exception as e:  # noqa: BLE001 - a report shows what it can
            item["note"] = f"cannot decode: {type(e).__name__}: {e}"
            out.append(item)
            continue
        try:
            src = read_bytes(row["source_uri"], table.storage_options)
            if hashlib.sha256(src).hexdigest() != (row["source_sha256"] or "").lower():
                item["note"] = "the original has changed since it was archived; decoded crop only"
            else:
                pic = read_image(src, max_pixels=max(DEFAULT_MAX_PIXELS, row["width"] * row["height"] + 1))
                item["original"] = array_data_uri(_as_rgb8(_centre(pic.reference(), size)))
        except Exception:  # noqa: BLE001 - gone or unreadable
            item["note"] = "the original is gone (source_uri not readable); decoded crop only"
        out.append(item)
    return out


def _num(x, fmt: str) -> str:
    return "n/a" if x is None else format(x, fmt)


def _group_rows(groups: dict) -> list[list[str]]:
    return [
        [name, g["rows"], _size(g["original_bytes"]), _size(g["payload_bytes"]), _size(g["stored_bytes_est"]),
         _ratio(g["ratio"]), _num(g["bpp_mean"], ".3f"), _num(g["psnr_mean"], ".2f"),
         f"{g['usd_per_month_saved']:.4g}"]
        for name, g in groups.items()
    ]


def _hist(plt, d: dict | None, xlabel: str, colour: str) -> str | None:
    if not d or not d.get("n"):
        return None
    h = d["histogram"]
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    edges = np.asarray(h["edges"])
    width = np.diff(edges)
    if not np.any(width > 0):
        width = np.ones_like(width) * max(abs(edges[0]) * 0.02, 0.01)
    ax.bar(edges[:-1], h["counts"], width=width, align="edge", color=colour, edgecolor="white")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("rows")
    ax.set_title(f"{xlabel}: mean {d['mean']:.3f}, p50 {d['p50']:.3f}")
    return fig_data_uri(fig)


def render_html(r: dict, crop_items: list[dict]) -> str:
    plt = pyplot()
    esc = html.escape
    parts = [f"<h1>latentarc report</h1><div class=muted>{esc(r['table'])}</div>"]
    parts.append("<h2>Summary</h2>" + html_table(
        ["", "value"],
        [["rows", r["rows"]], ["errors", r["errors"]], ["data files", r["data_files"]],
         ["original bytes (sum source_size)", f"{_size(r['original_bytes'])} ({r['original_bytes']} B)"],
         ["payload bytes (sum payload_size)", f"{_size(r['payload_bytes'])} ({r['payload_bytes']} B)"],
         ["stored bytes (Parquet data files)", f"{_size(r['stored_bytes'])} ({r['stored_bytes']} B)"],
         ["ratio (original / stored files)", _ratio(r["ratio"])],
         ["ratio (original / payload)", _ratio(r["payload_ratio"])],
         [f"$/month saved at ${r['price_per_gb_month']}/GiB-month", f"{r['usd_per_month_saved']:.4g}"],
         [f"compute $ at ${r['price_per_cpu_hour']}/CPU-hour, ${r['price_per_gpu_hour']}/GPU-hour",
          _num(r.get("usd_compute"), ".4g")],
         ["payback", payback_text(r)],
         *([f"payback {name}", payback_text(g)] for name, g in r["per_codec"].items())]))

    # stored vs original per codec
    names = list(r["per_codec"])
    if names:
        fig, ax = plt.subplots(figsize=(6.5, 3.4))
        x = np.arange(len(names))
        g = r["per_codec"]
        ax.bar(x - 0.27, [g[n]["original_bytes"] / 1e3 for n in names], 0.27, label="original", color="#9aa5b1")
        ax.bar(x, [g[n]["stored_bytes_est"] / 1e3 for n in names], 0.27, label="stored (files, apportioned)",
               color="#2f6fb2")
        ax.bar(x + 0.27, [g[n]["payload_bytes"] / 1e3 for n in names], 0.27, label="payload", color="#7fb3e6")
        ax.set_xticks(x, names)
        ax.set_ylabel("kB")
        ax.set_title("stored vs original bytes per codec")
        ax.legend(fontsize=8)
        parts.append(f"<h2>Bytes per codec</h2><img class=plot alt='bytes per codec' src='{fig_data_uri(fig)}'>")
    head = ["", "rows", "original", "payload", "stored~", "ratio", "mean bpp", "mean PSNR", "$/month saved"]
    parts.append("<h2>Per codec</h2>" + html_table(["codec"] + head[1:], _group_rows(r["per_codec"])))
    parts.append("<h2>Per prefix</h2>" + html_table(["prefix"] + head[1:], _group_rows(r["per_prefix"])))
    if r.get("per_guarantee"):
        parts.append("<h2>Per guarantee</h2>" + html_table(["guarantee"] + head[1:], _group_rows(r["per_guarantee"])))
    parts.append("<p class=muted>stored~ = the Parquet data files' bytes apportioned by payload share; "
                 "PSNR means exclude lossless (infinite) rows.</p>")

    plots = []
    for d, label, colour in ((r["bpp"], "bits per pixel", "#2f6fb2"), (r["psnr"], "PSNR (dB)", "#d9822b")):
        uri = _hist(plt, d, label, colour)
        if uri:
            plots.append(f"<img class=plot alt='{esc(label)} histogram' src='{uri}'>")
    dist_rows = []
    for name, d in (("bpp", r["bpp"]), ("PSNR dB", r["psnr"]), ("MS-SSIM", r["ms_ssim"]),
                    *((label.strip(), r.get(k)) for k, label in PERCEPTUAL)):
        if d and d.get("n"):
            dist_rows.append([name, d["n"], *(f"{d[k]:.4g}" for k in ("mean", "min", "p05", "p25", "p50", "p75", "p95", "max"))])
    parts.append("<h2>Distributions</h2>" + "".join(plots)
                 + html_table(["metric", "n", "mean", "min", "p05", "p25", "p50", "p75", "p95", "max"], dist_rows))
    if r.get("lossless_rows"):
        parts.append(f"<p class=muted>{r['lossless_rows']} lossless rows (infinite PSNR) not in the PSNR figures.</p>")

    if crop_items:
        cells = []
        for c in crop_items:
            imgs = ""
            if c["original"]:
                imgs += f"<img alt='original {esc(c['key'])}' src='{c['original']}'>"
            if c["decoded"]:
                imgs += f"<img alt='decoded {esc(c['key'])}' src='{c['decoded']}'>"
            what = "original | decoded" if c["original"] else "decoded"
            ps = "lossless" if c["psnr"] is not None and math.isinf(c["psnr"]) else _num(c["psnr"], ".2f") + " dB"
            note = f"<br><i>{esc(c['note'])}</i>" if c["note"] else ""
            cells.append(f"<div class=crop>{imgs}<div class=cap><b>{esc(c['key'])}</b> — {esc(c['codec'])}, "
                         f"{c['bpp']:.3f} bpp, {ps} ({what}){note}</div></div>")
        parts.append(f"<h2>Crops (centre {CROP}×{CROP})</h2><div class=crops>{''.join(cells)}</div>")
    return page("latentarc report", "\n".join(parts))


def write_html(r: dict, table, path, *, weights=None, n_crops: int = MAX_CROPS) -> str:
    items = crops(table, pick_crop_keys(table, n_crops), weights=weights) if r["rows"] else []
    text = render_html(r, items)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return text


# ------------------------------------------------------------------------------------------ CLI
def run_report(table_uri: str, *, as_json: bool = False, html_path: str | None = None,
               price_per_gb_month: float = DEFAULT_PRICE_PER_GB_MONTH, storage_options: dict | None = None,
               weights=None, file=None, price_per_cpu_hour: float = DEFAULT_PRICE_PER_CPU_HOUR,
               price_per_gpu_hour: float = DEFAULT_PRICE_PER_GPU_HOUR) -> dict:
    from .table import BitstreamTable

    file = file or sys.stdout
    table = BitstreamTable(table_uri, storage_options)
    if not table.exists():
        raise ValueError(f"no committed table at {table_uri}")
    r = build_report(table, price_per_gb_month=price_per_gb_month, price_per_cpu_hour=price_per_cpu_hour,
                     price_per_gpu_hour=price_per_gpu_hour)
    if as_json:
        print(json.dumps(_json_safe(r), indent=2), file=file)
    else:
        print(format_report(r), file=file)
    if html_path:
        write_html(r, table, html_path, weights=weights)
        if not as_json:
            print(f"wrote {html_path}", file=file)
    return r


def _json_safe(x):
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_json_safe(v) for v in x]
    return x
