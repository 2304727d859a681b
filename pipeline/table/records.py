"""The commit record and the run report as files: how they are written, read and judged.

A commit record (``_commits/<seq>.json``) is the only thing readers trust: a JSON object naming the run and
the part files it makes visible. The same rules decide whether a record is whole for the table's readers
(a damaged record makes them refuse the table) and for ``verify`` (which reports it).
"""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any

import numpy as np

from latentarc.pipeline.errors import TableError

from .layout import DATA_DIR, ERRORS_DIR, is_direct_child

#: run-report keys written by releases before the savings vocabulary was unified → today's names
LEGACY_REPORT_KEYS = {"bytes_in": "original_bytes", "bytes_stored": "stored_bytes",
                      "exact_source_bytes": "exact_original_bytes", "tiers": "per_guarantee"}


def new_record(*, run_id: str, seq: int, base: int, data_files: list[str], error_files: list[str], rows: int,
               errors: int, conflicts: dict | None = None, report: dict | None = None) -> dict:
    record: dict[str, Any] = {
        "run_id": run_id,
        "seq": seq,
        "base": base,
        "committed_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "data_files": data_files,
        "error_files": error_files,
        "rows": rows,
        "errors": errors,
    }
    if conflicts:
        record["conflicts"] = conflicts
    if report is not None:
        record["report"] = report
    return record


def record_problems(rec: object) -> str | None:
    """Why ``rec`` is not a whole commit record, or None."""
    if not isinstance(rec, dict):
        return "not a JSON object"
    for fld, folder, required in (("data_files", DATA_DIR, True), ("error_files", ERRORS_DIR, False)):
        v = rec.get(fld)
        if v is None and not required:
            continue
        if not isinstance(v, list):
            return f"{fld!r} is not a list"
        for rel in v:
            if not is_direct_child(rel, folder):
                return f"{fld!r} names {rel!r}, not a file directly under {folder}/"
    if not isinstance(rec.get("run_id"), str):
        return "no run_id"
    for fld in ("rows", "errors"):
        if fld in rec and not (isinstance(rec[fld], int) and rec[fld] >= 0):
            return f"{fld!r} is not a count"
    return None


def parse_record(blob: bytes, where: str) -> dict:
    """The record in ``blob`` (``TableError`` naming ``where`` if it is not valid JSON or not whole)."""
    try:
        rec = json.loads(blob)
    except ValueError as e:
        raise TableError(f"damaged commit record {where}: {e}") from e
    bad = record_problems(rec)
    if bad:
        raise TableError(f"damaged commit record {where}: {bad}")
    return rec


def report_in_todays_words(report: dict) -> dict:
    """A run report with keys of older releases renamed (:data:`LEGACY_REPORT_KEYS`), tier entries included."""
    out = {LEGACY_REPORT_KEYS.get(k, k): v for k, v in report.items()}
    tiers = out.get("per_guarantee")
    if isinstance(tiers, dict):
        out["per_guarantee"] = {n: ({("original_bytes" if k == "source_bytes" else k): v for k, v in t.items()}
                                    if isinstance(t, dict) else t) for n, t in tiers.items()}
    return out


def _json_default(o: Any):
    if isinstance(o, np.generic):  # numpy scalars
        return o.item()
    if isinstance(o, (_dt.datetime, _dt.date)):
        return o.isoformat()
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    if isinstance(o, (bytes, bytearray)):
        return o.hex()
    return str(o)


def dumps(obj: dict) -> bytes:
    """Records and reports as written: indented, sorted keys, numpy scalars and dates made JSON."""
    return json.dumps(obj, indent=2, sort_keys=True, default=_json_default, allow_nan=True).encode()
