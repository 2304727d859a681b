"""What a run saved: bytes in and out, ratio, quality, throughput and dollars per month.

The vocabulary is the ``report`` verb's: ``original_bytes`` (the sources), ``payload_bytes`` (the streams),
``stored_bytes`` (the files the run really put on storage: Parquet parts, error parts, commit record — not just
payload bytes, so the ratio is what the bill will show). ``per_guarantee`` splits rows, original and payload
bytes by guarantee (``codec.guarantee``); ``exact_saved_bytes`` is what the bytes-exact and pixels-exact rows
saved in payload — the saving that changed nothing. Money is computed per GiB-month at
``price_per_gb_month`` (S3 Standard list price by default).

Cost beside savings: every row records ``compute_s`` (the encode actor's process CPU seconds for the image) and,
on CUDA, ``gpu_s``. ``usd_compute`` = compute_s / 3600 × ``price_per_cpu_hour`` + gpu_s / 3600 ×
``price_per_gpu_hour`` is paid once; ``payback_months`` = usd_compute / usd_per_month_saved is how long the
storage saving takes to repay it (None and printed "never" when nothing is saved; None and "n/a" when rows
lack ``compute_s``). Both appear for the whole run or table and ``per_codec``.
"""

from __future__ import annotations

import numpy as np

from .table.schema import WrittenPart

DEFAULT_PRICE_PER_GB_MONTH = 0.023
#: AWS on-demand list prices, us-east-1 (2024): c7i.large is $0.08925/hour for 2 vCPUs → $0.0446 per vCPU-hour
DEFAULT_PRICE_PER_CPU_HOUR = 0.0446
#: g5.xlarge, one NVIDIA A10G (with its 4 host vCPUs), $1.006/hour
DEFAULT_PRICE_PER_GPU_HOUR = 1.006
HOURS = 3600.0
DAYS_PER_MONTH = 30.44
GIB = 1024**3
EXACT_TIERS = ("bytes-exact", "pixels-exact")


def _tiers(parts: list[WrittenPart]) -> dict:
    out: dict[str, dict] = {}
    for p in parts:
        for name, t in p.stats.per_guarantee.items():  # error-only parts carry no tiers
            acc = out.setdefault(name, {"rows": 0, "original_bytes": 0, "payload_bytes": 0})
            for k in acc:
                acc[k] += t[k]
    return out


def compute_cost(*, compute_s: float | None, gpu_s: float | None, compute_rows: int, rows: int,
                 usd_per_month_saved: float, price_per_cpu_hour: float, price_per_gpu_hour: float) -> dict:
    """The one-off compute bill of ``rows`` and the months of storage saving that repay it.

    ``compute_rows``: how many of the rows recorded ``compute_s`` (older rows did not). ``usd_compute`` covers
    the recorded rows; ``payback_months`` is given only when every row is recorded and something is saved.
    """
    recorded = compute_s is not None or gpu_s is not None
    usd = ((compute_s or 0.0) / HOURS * price_per_cpu_hour + (gpu_s or 0.0) / HOURS * price_per_gpu_hour
           if recorded else None)
    complete = recorded and rows > 0 and compute_rows == rows
    return {
        "compute_s": compute_s,
        "gpu_s": gpu_s,
        "compute_rows": compute_rows,
        "usd_compute": usd,
        "payback_months": usd / usd_per_month_saved if complete and usd_per_month_saved > 0 else None,
    }


def _usd(x: float) -> str:
    return f"${x:,.2f}" if x >= 0.01 else f"${x:.3g}"


def _secs(x: float) -> str:
    return f"{x:,.1f}" if x >= 10 else f"{x:.3g}"


def payback_text(g: dict) -> str:
    """``payback_months`` as a user reads it: months (and days under one month), "never" or "n/a"."""
    m = g.get("payback_months")
    if m is not None:
        return f"{m:.3g} months" + (f" ({m * DAYS_PER_MONTH:.2g} days)" if m < 1 else "")
    if g.get("usd_compute") is None:
        return "n/a (compute not recorded)"
    if g.get("compute_rows") != g.get("rows"):
        return f"n/a (compute recorded for {g.get('compute_rows')} of {g.get('rows')} rows)"
    return "never (nothing saved)"


def cost_lines(r: dict) -> list[str]:
    """Compute cost, monthly saving and payback, for the whole run or table and per codec (the report's
    ``compute_s``, ``gpu_s``, ``usd_compute``, ``usd_per_month_saved`` and ``payback_months``)."""
    if r.get("usd_compute") is None:  # no row recorded compute_s (a group can only have it if the whole does)
        return ["  compute: not recorded (rows written before the compute_s column)"]

    def seconds(g: dict) -> str:
        gpu = f" + {_secs(g['gpu_s'])} GPU-s" if g.get("gpu_s") is not None else ""
        return f"{_secs(g.get('compute_s') or 0.0)} CPU-s{gpu}"

    gpu_price = f", ${r['price_per_gpu_hour']}/GPU-hour" if r.get("gpu_s") is not None else ""
    lines = [
        f"  compute: {seconds(r)} → {_usd(r['usd_compute'])} at ${r['price_per_cpu_hour']}/CPU-hour{gpu_price}",
        f"  payback: {_usd(r['usd_compute'])} compute / {_usd(r['usd_per_month_saved'])} saved per month "
        f"→ {payback_text(r)}",
    ]
    for name, g in r.get("per_codec", {}).items():
        cost = "compute n/a" if g.get("usd_compute") is None else f"{seconds(g)} {_usd(g['usd_compute'])}"
        lines.append(f"    {name:<12} {g['rows']:>5} rows  {cost}, saves {_usd(g['usd_per_month_saved'])}/month, "
                     f"payback {payback_text(g)}")
    return lines


def _per_codec(parts: list[WrittenPart], stored_bytes: int, payload_total: int, price_per_gb_month: float,
               prices: dict) -> dict:
    """Per codec of the run, in the report's vocabulary (``report._group``): stored bytes apportioned by payload
    share, the monthly saving, compute cost and payback."""
    acc: dict[str, dict] = {}
    for p in parts:
        for name, c in p.stats.per_codec.items():  # error-only parts carry none
            a = acc.setdefault(name, {"rows": 0, "original_bytes": 0, "payload_bytes": 0, "compute_rows": 0,
                                      "compute_s": None, "gpu_s": None})
            for k in ("rows", "original_bytes", "payload_bytes", "compute_rows"):
                a[k] += c[k]
            for k in ("compute_s", "gpu_s"):
                if c.get(k) is not None:
                    a[k] = (a[k] or 0.0) + c[k]
    out = {}
    for name in sorted(acc):
        a = acc[name]
        est = stored_bytes * a["payload_bytes"] / payload_total if payload_total else 0.0
        saved = max(0.0, a["original_bytes"] - est) / GIB * price_per_gb_month
        out[name] = {"rows": a["rows"], "original_bytes": a["original_bytes"], "payload_bytes": a["payload_bytes"],
                     "stored_bytes_est": est, "usd_per_month_saved": saved,
                     **compute_cost(compute_s=a["compute_s"], gpu_s=a["gpu_s"], compute_rows=a["compute_rows"],
                                    rows=a["rows"], usd_per_month_saved=saved, **prices)}
    return out


def _total(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return float(sum(xs)) if xs else None


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
    parts: list[WrittenPart],
    errors: int,
    stored_bytes: int,
    seconds: float,
    price_per_gb_month: float = DEFAULT_PRICE_PER_GB_MONTH,
    price_per_cpu_hour: float = DEFAULT_PRICE_PER_CPU_HOUR,
    price_per_gpu_hour: float = DEFAULT_PRICE_PER_GPU_HOUR,
    extra: dict | None = None,
) -> dict:
    rows = sum(len(p.keys) for p in parts)
    original = sum(p.stats.original_bytes for p in parts)
    payload = sum(p.stats.payload_bytes for p in parts)
    pixels = sum(p.stats.pixels for p in parts)
    saved = max(0, original - stored_bytes)
    prices = {"price_per_cpu_hour": price_per_cpu_hour, "price_per_gpu_hour": price_per_gpu_hour}
    report = {
        "run_id": run_id,
        "source": source,
        "table": table,
        "inputs_listed": listed,
        "inputs_skipped_unchanged": skipped,
        "inputs_processed": rows + errors,
        "rows": rows,
        "errors": errors,
        "original_bytes": original,
        "payload_bytes": payload,
        "stored_bytes": stored_bytes,
        "ratio": (original / stored_bytes) if stored_bytes else None,
        "bpp": _dist([b for p in parts for b in p.stats.bpp]),
        "psnr": _dist([q for p in parts for q in p.stats.psnr]),
        "megapixels": pixels / 1e6,
        "seconds": seconds,
        "images_per_s": (rows + errors) / seconds if seconds > 0 else None,
        "mb_per_s": original / 1e6 / seconds if seconds > 0 else None,
        "price_per_gb_month": price_per_gb_month,
        "usd_per_month_saved": saved / GIB * price_per_gb_month,
        **prices,
        **compute_cost(compute_s=_total(p.stats.compute_s for p in parts), gpu_s=_total(p.stats.gpu_s for p in parts),
                       compute_rows=sum(p.stats.compute_rows for p in parts), rows=rows,
                       usd_per_month_saved=saved / GIB * price_per_gb_month, **prices),
        "per_codec": _per_codec(parts, stored_bytes, payload, price_per_gb_month, prices),
        "codecs": sorted({c for p in parts for c in p.stats.codecs}),
        "per_guarantee": _tiers(parts),
    }
    exact = [t for name, t in report["per_guarantee"].items() if name in EXACT_TIERS]
    report["exact_saved_bytes"] = sum(t["original_bytes"] - t["payload_bytes"] for t in exact)
    report["exact_original_bytes"] = sum(t["original_bytes"] for t in exact)
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
            f"  bytes:  {mb(r['original_bytes'])} in → {mb(r['stored_bytes'])} stored "
            f"(payload {mb(r['payload_bytes'])}), ratio {r['ratio']:.1f}:1" if r["ratio"] else "",
            f"  bpp:    mean {r['bpp']['mean']:.3f} (p05 {r['bpp']['p05']:.3f}, p95 {r['bpp']['p95']:.3f})",
        ]
        if r["psnr"]:
            lines.append(f"  PSNR:   mean {r['psnr']['mean']:.2f} dB (min {r['psnr']['min']:.2f}, p05 {r['psnr']['p05']:.2f})")
        lines.append(
            f"  speed:  {r['images_per_s']:.2f} images/s, {r['mb_per_s']:.2f} MB/s over {r['seconds']:.1f} s"
        )
        if r.get("exact_original_bytes"):
            src = r["exact_original_bytes"]
            per = ", ".join(f"{n} {t['rows']} ({mb(t['original_bytes'])} → {mb(t['payload_bytes'])})"
                            for n, t in r["per_guarantee"].items() if n in EXACT_TIERS)
            lines.append(f"  exact:  saved {mb(r['exact_saved_bytes'])} ({100 * r['exact_saved_bytes'] / src:.1f}%) "
                         f"without changing a pixel: {per}")
        lines.append(
            f"  saving: ${r['usd_per_month_saved']:.4f}/month at ${r['price_per_gb_month']}/GB-month"
        )
        lines += cost_lines(r)
    return [line for line in lines if line]
