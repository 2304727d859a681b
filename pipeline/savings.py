"""What a run saved: bytes in and out, ratio, quality, throughput and dollars per month.

``bytes_stored`` counts the files the run really put on storage (Parquet parts, error parts, commit record),
not just payload bytes, so the ratio is what the bill will show. ``tiers`` splits rows, bytes in and payload
bytes by guarantee (``codec.guarantee``); ``exact_saved_bytes`` is what the bytes-exact and pixels-exact rows
saved in payload — the saving that changed nothing. Money is computed per GiB-month at
``price_per_gb_month`` (S3 Standard list price by default).
"""

from __future__ import annotations

import numpy as np

DEFAULT_PRICE_PER_GB_MONTH = 0.023
GIB = 1024**3
EXACT_TIERS = ("bytes-exact", "pixels-exact")


def _tiers(parts: list[dict]) -> dict:
    out: dict[str, dict] = {}
    for p in parts:
        for name, t in p["stats"].get("tiers", {}).items():  # error-only parts carry no tiers
            acc = out.setdefault(name, {"rows": 0, "source_bytes": 0, "payload_bytes": 0})
            for k in acc:
                acc[k] += t[k]
    return out


def _dist(values: list[float]) -> dict | None:
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=np.float64)
    if not v.size:
        return None
    p = np.percentile(v, [5, 50, 95])
    return {"mean": float(v.mean()), "min": float(v.min()), "p05": float(p[0]), "p50": float(p[1]),
            "p95": float(p[2]), "max": float(v.max())}


def build_report(
    *,
    run_id: str,
    source: str,
    table: str,
    listed: int,
    skipped: int,
    parts: list[dict],
    errors: int,
    bytes_stored: int,
    seconds: float,
    price_per_gb_month: float = DEFAULT_PRICE_PER_GB_MONTH,
    extra: dict | None = None,
) -> dict:
    rows = sum(len(p["keys"]) for p in parts)
    bytes_in = sum(p["stats"]["source_bytes"] for p in parts)
    payload = sum(p["stats"]["payload_bytes"] for p in parts)
    pixels = sum(p["stats"]["pixels"] for p in parts)
    saved = max(0, bytes_in - bytes_stored)
    report = {
        "run_id": run_id,
        "source": source,
        "table": table,
        "inputs_listed": listed,
        "inputs_skipped_unchanged": skipped,
        "inputs_processed": rows + errors,
        "rows": rows,
        "errors": errors,
        "bytes_in": bytes_in,
        "payload_bytes": payload,
        "bytes_stored": bytes_stored,
        "ratio": (bytes_in / bytes_stored) if bytes_stored else None,
        "bpp": _dist([b for p in parts for b in p["stats"]["bpp"]]),
        "psnr": _dist([q for p in parts for q in p["stats"]["psnr"]]),
        "megapixels": pixels / 1e6,
        "seconds": seconds,
        "images_per_s": (rows + errors) / seconds if seconds > 0 else None,
        "mb_per_s": bytes_in / 1e6 / seconds if seconds > 0 else None,
        "price_per_gb_month": price_per_gb_month,
        "usd_per_month_saved": saved / GIB * price_per_gb_month,
        "codecs": sorted({c for p in parts for c in p["stats"]["codecs"]}),
        "tiers": _tiers(parts),
    }
    exact = [t for name, t in report["tiers"].items() if name in EXACT_TIERS]
    report["exact_saved_bytes"] = sum(t["source_bytes"] - t["payload_bytes"] for t in exact)
    report["exact_source_bytes"] = sum(t["source_bytes"] for t in exact)
    report.update(extra or {})
    return report


def summary_lines(r: dict) -> list[str]:
    """The one-screen summary printed at the end of a run."""

    def mb(n):
        return f"{n / 1e6:,.1f} MB"

    lines = [
        f"run {r['run_id']}: {r['source']} → {r['table']}",
        f"  inputs: {r['inputs_listed']} listed, {r['inputs_skipped_unchanged']} unchanged (skipped), "
        f"{r['rows']} archived, {r['errors']} errors",
    ]
    if r["rows"]:
        lines += [
            f"  bytes:  {mb(r['bytes_in'])} in → {mb(r['bytes_stored'])} stored "
            f"(payload {mb(r['payload_bytes'])}), ratio {r['ratio']:.1f}:1" if r["ratio"] else "",
            f"  bpp:    mean {r['bpp']['mean']:.3f} (p05 {r['bpp']['p05']:.3f}, p95 {r['bpp']['p95']:.3f})",
        ]
        if r["psnr"]:
            lines.append(f"  PSNR:   mean {r['psnr']['mean']:.2f} dB (min {r['psnr']['min']:.2f}, p05 {r['psnr']['p05']:.2f})")
        lines.append(
            f"  speed:  {r['images_per_s']:.2f} images/s, {r['mb_per_s']:.2f} MB/s over {r['seconds']:.1f} s"
        )
        if r.get("exact_source_bytes"):
            src = r["exact_source_bytes"]
            per = ", ".join(f"{n} {t['rows']} ({mb(t['source_bytes'])} → {mb(t['payload_bytes'])})"
                            for n, t in r["tiers"].items() if n in EXACT_TIERS)
            lines.append(f"  exact:  saved {mb(r['exact_saved_bytes'])} ({100 * r['exact_saved_bytes'] / src:.1f}%) "
                         f"without changing a pixel: {per}")
        lines.append(
            f"  saving: ${r['usd_per_month_saved']:.4f}/month at ${r['price_per_gb_month']}/GB-month"
        )
    return [line for line in lines if line]
