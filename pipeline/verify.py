"""``latentarc verify``: check a bitstream table end to end, without Ray, streaming file by file.

What is checked (each finding names its ``check``):

* ``commit``: every ``_commits/*.json`` record parses and names files of the right folders; every file it names
  exists (``file``). Records whose name does not match the commit pattern, run ids used twice and files named
  by several records are *warnings* (readers cope), not problems.
* ``file`` / ``schema``: every committed data and errors file is readable Parquet whose schema holds every
  column of TABLE_SCHEMA / ERRORS_SCHEMA with the right type. A missing or truncated file is reported by name
  and verification goes on with the others.
* ``commit_rows``: a record's ``rows`` / ``errors`` counts match the rows of its files.
* ``orphan`` (warning): part files that no commit names. They are invisible by design (a crashed run), so they
  do not fail verification.
* per row (``payload``, ``payload_size``, ``payload_crc32c``, ``format_version``, ``envelope``, ``header``):
  payload present, ``payload_size == len(payload)``, CRC-32C of the payload equals ``payload_crc32c``, the
  ``format_version`` column is one this build reads and equals the stream header's, the container's own
  magic/version/CRC and field checks pass, header width/height/codec/mode equal the columns.
* ``model``: the stream's codec resolves in the registry and the available weights (loaded once per codec)
  have the fingerprint of the stream header and of ``model_sha256``. Weights that cannot be loaded give one
  problem per codec naming the affected keys.
* ``unique_key``: a key at most once per data file and per commit (several commits may hold a key: the
  latest wins, by design).
* ``decode`` / ``psnr`` (``decode=True``, on a deterministic sample of rows when ``sample < 1``): the stream
  decodes, to the recorded size and mode; when the original (``source_uri``) is still readable and unchanged
  (same SHA-256), the PSNR of the decoded image against it must be within ``tolerance_db`` of the stored
  ``psnr``. Rows whose source is gone or changed count as "decoded without reference".
* ``lpips`` / ``dists`` (``decode=True``, rows that carry them: measured for a perceptual floor): re-measured on
  the decoded image against the unchanged original, within ``tolerance_perceptual`` (absolute) of the stored
  figure; and when the row's stream was searched for a floor (``max_lpips`` / ``max_dists`` in its params), the
  re-measured figure must meet that floor within the same tolerance.
* ``guarantee`` (``decode=True``): each row's promise (``codec.guarantee``) is held to it. ``bytes-exact``: the
  SHA-256 of the bytes the stream restores equals ``source_sha256`` (no source needed); ``pixels-exact``: the
  decoded planes and alpha equal the source's, sample for sample, where the source is still readable and
  unchanged. Rows older than the column (null) get the PSNR check only.
* ``schema``: a nullable column missing from an older file is no problem (readers fill it with nulls).

Problems make ``ok`` false (CLI exit code 1); warnings do not. Per check at most :data:`MAX_LISTED` findings
are listed, the rest are counted (``problem_counts``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import posixpath
import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from latentarc.codec import bitstream, guarantee
from latentarc.codec.errors import BitstreamError, ModelError
from latentarc.pipeline.storage import stat_many
from latentarc.pipeline.table import (
    COMMITS_DIR,
    DATA_DIR,
    ERRORS_DIR,
    ERRORS_SCHEMA,
    TABLE_SCHEMA,
    BitstreamTable,
    commit_sort_key,
    legacy_commit_run,
    record_problems,
)

__all__ = ["MAX_LISTED", "SUPPORTED_FORMAT_VERSIONS", "VerifyReport", "print_report", "verify_table"]

#: format versions this build reads
SUPPORTED_FORMAT_VERSIONS = bitstream.READ_VERSIONS
#: findings listed per check (further ones are only counted)
MAX_LISTED = 200
_KEYS_NAMED = 20  # keys named in one aggregated problem
_BATCH_ROWS = 64  # rows per Arrow batch while streaming a data file (bounds payload memory)

_ROW_COLUMNS = ["key", "width", "height", "mode", "codec", "format_version", "model_sha256", "payload",
                "payload_size", "payload_crc32c"]
_DECODE_COLUMNS = ["source_uri", "source_sha256", "psnr"]
_OPTIONAL_DECODE_COLUMNS = ["guarantee", "params", "lpips", "dists"]  # nullable, absent from files written before them
#: the perceptual figures a row may carry, re-measured by ``--decode`` (metric registry names)
_PERCEPTUAL_COLUMNS = ("lpips", "dists")


@dataclass
class VerifyReport:
    """Outcome of :func:`verify_table`. ``problems`` fail verification, ``warnings`` do not.

    Each finding is ``{"key", "file", "check", "message"}`` (``key`` / ``file`` None when not about one;
    ``file`` relative to the table root).
    """

    table: str
    ok: bool = True
    checked_rows: int = 0
    checked_files: int = 0
    commits: int = 0
    decoded_rows: int = 0
    decoded_with_reference: int = 0
    decoded_without_reference: int = 0
    perceptual_remeasured: int = 0  # lpips / dists figures re-measured against the original
    problems: list[dict] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)
    problem_counts: dict[str, int] = field(default_factory=dict)
    warning_counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _Findings:
    def __init__(self, report: VerifyReport):
        self.r = report

    def _add(self, lst: list, counts: dict, check: str, key, file, message: str) -> None:
        n = counts.get(check, 0)
        counts[check] = n + 1
        if n < MAX_LISTED:
            lst.append({"key": key, "file": file, "check": check, "message": message})

    def problem(self, check: str, message: str, *, key: str | None = None, file: str | None = None) -> None:
        self._add(self.r.problems, self.r.problem_counts, check, key, file, message)

    def warning(self, check: str, message: str, *, key: str | None = None, file: str | None = None) -> None:
        self._add(self.r.warnings, self.r.warning_counts, check, key, file, message)

    def finish(self) -> None:
        for lst, counts, what in ((self.r.problems, self.r.problem_counts, "problems"),
                                  (self.r.warnings, self.r.warning_counts, "warnings")):
            for check, n in counts.items():
                if n > MAX_LISTED:
                    lst.append({"key": None, "file": None, "check": check,
                                "message": f"{n - MAX_LISTED} more {check} {what} not listed"})
        self.r.ok = not self.r.problem_counts


def _err(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def _short(s: str, n: int = 300) -> str:
    s = " ".join(str(s).split())
    return s if len(s) <= n else s[: n - 1] + "…"


def _sampled(key: str, sample: float, seed: int) -> bool:
    """Deterministic per-key draw: the same keys are picked for the same seed, whatever the file order."""
    if sample >= 1.0:
        return True
    h = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8, key=str(int(seed)).encode())
    return int.from_bytes(h.digest(), "big") / 2.0**64 < sample


def _schema_problems(schema: pa.Schema, want: pa.Schema) -> list[str]:
    out = []
    for f in want:
        i = schema.get_field_index(f.name)
        if i < 0 and f.nullable:  # a column added later: readers fill it with nulls
            continue
        if i < 0:
            out.append(f"column {f.name!r} ({f.type}) is missing")
        elif not schema.field(i).type.equals(f.type):
            out.append(f"column {f.name!r} is {schema.field(i).type}, expected {f.type}")
    return out


class _Models:
    """Codecs loaded once per name; load failures remembered with the keys they affect."""

    def __init__(self, weights, device):
        self.weights, self.device = weights, device
        self.codecs: dict[str, Any] = {}
        self.failed: dict[str, str] = {}
        self.failed_keys: dict[str, list[str]] = {}
        self.failed_counts: dict[str, int] = {}

    def get(self, name: str, key: str):
        if name not in self.codecs and name not in self.failed:
            from latentarc.codec.codecs import get_codec

            try:
                self.codecs[name] = get_codec(name, weights=self.weights, device=self.device)
            except ModelError as e:
                self.failed[name] = _err(e)
            except Exception as e:  # noqa: BLE001 - a broken weight file must not abort the verification
                self.failed[name] = _err(e)
        if name in self.failed:
            self.failed_counts[name] = self.failed_counts.get(name, 0) + 1
            keys = self.failed_keys.setdefault(name, [])
            if len(keys) < _KEYS_NAMED:
                keys.append(key)
            return None
        return self.codecs[name]

    def report(self, f: _Findings) -> None:
        for name, msg in self.failed.items():
            n = self.failed_counts.get(name, 0)
            if not n:
                continue
            keys = self.failed_keys[name]
            more = f" and {n - len(keys)} more" if n > len(keys) else ""
            f.problem("model", f"codec {name!r} cannot be loaded ({_short(msg)}); {n} row(s) cannot be decoded: "
                               f"{', '.join(map(repr, keys))}{more}", key=keys[0] if n == 1 else None)


class _Verifier:
    def __init__(self, table: BitstreamTable, report: VerifyReport, *, decode, sample, seed, weights, device,
                 tolerance_db, tolerance_perceptual):
        self.t = table
        self.r = report
        self.f = _Findings(report)
        self.decode, self.sample, self.seed = decode, sample, seed
        self.tolerance_db = tolerance_db
        self.tolerance_perceptual = tolerance_perceptual
        self.device = device
        self.models = _Models(weights, device)

    # --- commit log -------------------------------------------------------------------------------------------
    def commit_records(self) -> list[tuple[str, dict]]:
        t, f = self.t, self.f
        listed = t.list_files(COMMITS_DIR)
        paths = []
        for p in listed:
            name = posixpath.basename(p)
            if commit_sort_key(name) is not None:
                paths.append(p)
            else:
                f.warning("commit", "not a commit record name: readers ignore this file", file=f"{COMMITS_DIR}/{name}")
        paths.sort(key=lambda p: commit_sort_key(posixpath.basename(p)))
        records: list[tuple[str, dict]] = []
        run_ids: dict[str, str] = {}
        for p in paths:
            rel = f"{COMMITS_DIR}/{posixpath.basename(p)}"
            try:
                blob = t.read_files([p])[p]
            except Exception as e:  # noqa: BLE001
                f.problem("commit", f"commit record cannot be read: {_short(_err(e))}", file=rel)
                continue
            try:
                rec = json.loads(blob)
            except ValueError as e:
                f.problem("commit", f"commit record is not valid JSON ({e}); readers refuse the whole table",
                          file=rel)
                continue
            bad = record_problems(rec)
            if bad:
                f.problem("commit", f"damaged commit record: {bad}; readers refuse the whole table", file=rel)
                continue
            run_id = rec.get("run_id")
            stem_run = legacy_commit_run(posixpath.basename(p))
            if stem_run is not None and run_id != stem_run:
                f.warning("commit", f"record's run_id {run_id!r} differs from its file name's {stem_run!r}",
                          file=rel)
            if run_id in run_ids:
                f.warning("commit", f"run {run_id!r} is committed twice (also {run_ids[run_id]})", file=rel)
            run_ids.setdefault(run_id, rel)
            records.append((rel, rec))
        return records

    # --- files --------------------------------------------------------------------------------------------------
    def _open(self, rel: str, want: pa.Schema):
        """(ParquetFile, schema ok) or None after reporting why it cannot be read."""
        try:
            pf = pq.ParquetFile(self.t.path(rel), filesystem=self.t.arrow_fs)
        except Exception as e:  # noqa: BLE001 - truncated, not Parquet, vanished, permission...
            self.f.problem("file", f"not readable Parquet: {_short(_err(e))}", file=rel)
            return None
        self.r.checked_files += 1
        bad = _schema_problems(pf.schema_arrow, want)
        for msg in bad:
            self.f.problem("schema", msg, file=rel)
        return pf, not bad

    def check_errors_file(self, rel: str) -> int | None:
        opened = self._open(rel, ERRORS_SCHEMA)
        if opened is None:
            return None
        pf, _ = opened
        n = 0
        try:
            with pf:  # read every column to prove the file decodes (errors files are small)
                for batch in pf.iter_batches(batch_size=4096):
                    n += batch.num_rows
        except Exception as e:  # noqa: BLE001
            self.f.problem("file", f"unreadable after {n} row(s): {_short(_err(e))}", file=rel)
            return None
        return n

    def check_data_file(self, rel: str) -> tuple[int | None, pa.Array | None]:
        """(rows, keys) of a data file after checking every row; (None, None) when it cannot be read."""
        opened = self._open(rel, TABLE_SCHEMA)
        if opened is None:
            return None, None
        pf, _ = opened
        names = set(pf.schema_arrow.names)
        cols = _ROW_COLUMNS + (_DECODE_COLUMNS if self.decode else [])
        missing = [c for c in cols if c not in names]
        if self.decode:
            cols += [c for c in _OPTIONAL_DECODE_COLUMNS if c in names]
        if missing:
            self.f.problem("schema", f"rows not checked: column(s) {', '.join(missing)} missing", file=rel)
            cols = [c for c in cols if c in names]
        n = 0
        keys: list[pa.Array] = []
        try:
            with pf:
                for batch in pf.iter_batches(batch_size=_BATCH_ROWS, columns=cols):
                    n += batch.num_rows
                    if "key" in batch.schema.names:
                        keys.append(batch.column("key"))
                    if not missing:
                        for row in batch.to_pylist():
                            self.check_row(row, rel)
        except Exception as e:  # noqa: BLE001 - a damaged page: report the file, go on with the others
            self.f.problem("file", f"unreadable after {n} row(s): {_short(_err(e))}", file=rel)
            return None, None
        self.r.checked_rows += n
        key_arr = pa.concat_arrays([k.cast(pa.string()) for k in keys]) if keys else pa.array([], pa.string())
        return n, key_arr

    # --- rows ---------------------------------------------------------------------------------------------------
    def check_row(self, row: dict, rel: str) -> None:
        f = self.f
        key = row.get("key")
        where = {"key": key, "file": rel}
        nulls = [c for c in _ROW_COLUMNS if c != "model_sha256" and row.get(c) is None]
        if nulls:
            f.problem("schema", f"required column(s) {', '.join(nulls)} are null", **where)
            if "payload" in nulls or "key" in nulls:
                return
        payload = row["payload"]
        if row.get("payload_size") is not None and row["payload_size"] != len(payload):
            f.problem("payload_size", f"payload_size {row['payload_size']} but the payload has {len(payload)} bytes",
                      **where)
        if row.get("payload_crc32c") is not None:
            crc = bitstream.crc32c(payload)
            if crc != row["payload_crc32c"]:
                f.problem("payload_crc32c", f"CRC-32C of the payload is {crc:#010x}, the table recorded "
                                            f"{row['payload_crc32c']:#010x}: the payload was altered", **where)
        # format version: the column, and the header's own (byte 4 after the magic)
        col_v = row.get("format_version")
        if col_v is not None and col_v not in SUPPORTED_FORMAT_VERSIONS:
            f.problem("format_version", f"format_version {col_v} is not one this build reads "
                                        f"({', '.join(map(str, sorted(SUPPORTED_FORMAT_VERSIONS)))})", **where)
        head_v = payload[4] if len(payload) > 4 and payload[:4] == bitstream.MAGIC else None
        if head_v is not None and col_v is not None and head_v != col_v:
            f.problem("format_version", f"stream header says format version {head_v}, the column {col_v}", **where)
        if head_v is not None and head_v not in SUPPORTED_FORMAT_VERSIONS:
            if col_v != head_v:  # (when equal, the column check above reported it)
                f.problem("format_version", f"stream format version {head_v} is not one this build reads", **where)
            return  # the container cannot be parsed by this build
        try:
            s = bitstream.parse(payload)
        except BitstreamError as e:
            f.problem("envelope", f"container check failed: {_short(_err(e))}", **where)
            return
        except Exception as e:  # noqa: BLE001
            f.problem("envelope", f"container cannot be parsed: {_short(_err(e))}", **where)
            return
        header_bad = [
            f"{c} {hv!r} in the header, {row.get(c)!r} in the column"
            for c, hv in (("width", s.output_size[0]), ("height", s.output_size[1]), ("codec", s.codec),
                          ("mode", s.mode))
            if row.get(c) is not None and row.get(c) != hv
        ]
        if header_bad:
            f.problem("header", "; ".join(header_bad), **where)
        codec_ok = self.check_model(s, row, where)
        if self.decode and codec_ok is not None and not header_bad and _sampled(key, self.sample, self.seed):
            self.check_decode(codec_ok, payload, row, where)

    def check_model(self, s: bitstream.Stream, row: dict, where: dict):
        """The loaded codec when the stream's model checks out, else None (problems recorded)."""
        col = row.get("model_sha256")
        head = s.model_fingerprint.hex()
        bad = []
        codec = self.models.get(s.codec, where["key"])
        have = None if codec is None else codec.weights_sha256()
        if codec is not None and have is None:  # classical / passthrough: no weights
            if col is not None or any(s.model_fingerprint):
                bad.append(f"{s.codec!r} uses no model, yet the row or the header names weights ({col or head})")
            if bad:
                self.f.problem("model", "; ".join(bad), **where)
                return None
            return codec
        if col is None:
            bad.append("model_sha256 is null")
        elif col[: 2 * bitstream.FINGERPRINT_BYTES].lower() != head:
            bad.append(f"the stream header names weights {head}…, model_sha256 is {col}")
        if codec is not None:
            have = have.lower()
            if have[: 2 * bitstream.FINGERPRINT_BYTES] != head:
                bad.append(f"the stream needs {s.codec!r} weights {head}…, the available ones are {have[:16]}…")
            if col is not None and col.lower() != have:
                bad.append(f"model_sha256 {col} is not the available {s.codec!r} weights ({have})")
        if bad:
            self.f.problem("model", "; ".join(dict.fromkeys(bad)), **where)
            return None
        return codec

    def check_decode(self, codec, payload: bytes, row: dict, where: dict) -> None:
        from latentarc.codec.classical import decoded_planes
        from latentarc.codec.images import DEFAULT_MAX_PIXELS, read_image, restored_mode
        from latentarc.codec.metrics import psnr
        from latentarc.pipeline.storage import read_bytes

        f = self.f
        try:
            dec = codec.decode(payload)
        except Exception as e:  # noqa: BLE001 - every decode failure is a finding
            f.problem("decode", f"decoding failed: {_short(_err(e))}", **where)
            return
        self.r.decoded_rows += 1
        w, h, mode = row["width"], row["height"], row["mode"]
        bad = []
        if dec.image.size != (w, h):
            bad.append(f"decoded to {dec.image.size[0]}x{dec.image.size[1]}, the table says {w}x{h}")
        if dec.mode != mode or dec.image.mode not in (restored_mode(mode, False), restored_mode(mode, True)):
            bad.append(f"decoded mode {dec.mode}/{dec.image.mode}, the table says {mode}")
        if bad:
            f.problem("decode", "; ".join(bad), **where)
            return
        tier = row.get("guarantee")
        if tier == guarantee.BYTES_EXACT:  # needs no source: the table recorded its SHA-256
            restored = dec.original
            if restored is None:
                f.problem("guarantee", "the row promises bytes-exact, but its stream restores no original bytes",
                          **where)
            elif hashlib.sha256(restored).hexdigest() != (row.get("source_sha256") or "").lower():
                f.problem("guarantee", "bytes-exact row: the SHA-256 of the restored bytes is not source_sha256",
                          **where)
        # PSNR against the original, when it is still there and unchanged
        uri = row.get("source_uri")
        pic = None
        if uri:
            try:
                data = read_bytes(uri, self.t.storage_options)
                if hashlib.sha256(data).hexdigest() == (row.get("source_sha256") or "").lower():
                    pic = read_image(data, max_pixels=max(DEFAULT_MAX_PIXELS, w * h + 1))
            except Exception:  # noqa: BLE001 - gone, unreadable, no longer an image: no reference
                pic = None
        if pic is None:
            self.r.decoded_without_reference += 1
            return
        self.r.decoded_with_reference += 1
        ref = pic.reference()
        planes = decoded_planes(dec, mode)  # at 16 bits where the stream holds them
        if tier == guarantee.PIXELS_EXACT:
            why = guarantee.pixel_mismatch(pic, planes, guarantee.decoded_alpha(dec.image))
            if why is not None:
                f.problem("guarantee", f"pixels-exact row decodes to other pixels than the source's: {why}", **where)
        try:
            got = psnr(ref, planes)
        except ValueError as e:
            f.problem("psnr", f"decoded planes do not match the original's: {e}", **where)
            return
        self.check_perceptual(row, ref, planes, where)
        stored = row.get("psnr")
        same = (math.isinf(got) and stored is not None and math.isinf(stored)) or (
            stored is not None and not math.isnan(stored) and abs(got - stored) <= self.tolerance_db)
        if not same:
            f.problem("psnr", f"decoded PSNR {got:.4f} dB against the original, the table recorded {stored} dB "
                              f"(tolerance {self.tolerance_db} dB)", **where)

    def check_perceptual(self, row: dict, ref, planes, where: dict) -> None:
        """Re-measure the LPIPS / DISTS a row stores; hold them to the stored figure and to the row's floor."""
        import json

        from latentarc.codec.metrics import measure

        stored = {m: row.get(m) for m in _PERCEPTUAL_COLUMNS if row.get(m) is not None}
        if not stored:
            return
        got = measure(ref, planes, set(stored), device=self.device)
        try:
            params = json.loads(row.get("params") or "{}")
        except ValueError:
            params = {}
        tol = self.tolerance_perceptual
        for m, want in stored.items():
            self.r.perceptual_remeasured += 1
            if got[m] is None or abs(got[m] - want) > tol:
                self.f.problem(m, f"decoded {m.upper()} {got[m]} against the original, the table recorded {want} "
                                  f"(tolerance {tol})", **where)
            floor = params.get(f"max_{m}")
            if got[m] is not None and floor is not None and got[m] > float(floor) + tol:
                self.f.problem(m, f"decoded {m.upper()} {got[m]:.5f} misses the row's floor {floor}", **where)

    # --- keys ---------------------------------------------------------------------------------------------------
    def check_unique(self, run: str, files: list[tuple[str, pa.Array]]) -> None:
        files = [(rel, k) for rel, k in files if k is not None and len(k)]
        if not files:
            return
        keys = pa.concat_arrays([k for _, k in files])
        vc = pc.value_counts(keys)
        dup = vc.filter(pc.greater(vc.field("counts"), 1))
        if not len(dup):
            return
        dup_keys = dup.field("values")
        where: dict[str, list[str]] = {}
        for rel, k in files:
            hits = k.filter(pc.is_in(k, value_set=dup_keys))
            for key in hits.to_pylist():
                where.setdefault(key, []).append(rel)
        for key, rels in where.items():
            uniq = list(dict.fromkeys(rels))
            if len(uniq) == 1:
                msg = f"key appears {len(rels)} times in one data file of run {run}"
            else:
                msg = f"key appears {len(rels)} times in one commit (run {run}): in {', '.join(uniq)}"
            self.f.problem("unique_key", msg, key=key, file=uniq[0] if len(uniq) == 1 else None)

    # --- all ------------------------------------------------------------------------------------------------------
    def run(self) -> None:
        t, f = self.t, self.f
        records = self.commit_records()
        self.r.commits = len(records)
        if not records and not self.f.r.problem_counts.get("commit"):
            try:
                exists = t.fs.exists(t.root)
            except Exception:  # noqa: BLE001
                exists = False
            if exists:
                f.warning("commit", "no committed runs: the table is empty")
            else:
                f.problem("commit", f"no table at {t.uri}: the root does not exist")

        # attribute each file to its latest naming commit, as readers do
        owner: dict[str, int] = {}
        for ci, (crel, rec) in enumerate(records):
            for fld in ("data_files", "error_files"):
                for rel in rec.get(fld) or []:
                    if rel in owner and owner[rel] != ci:
                        f.warning("commit", f"file is named by several commit records ({records[owner[rel]][0]} "
                                            f"and {crel}); the latest owns it", file=rel)
                    owner[rel] = ci
        stats = stat_many(t.fs, [t.path(rel) for rel in owner]) if owner else {}
        present = {rel for rel in owner if stats.get(t.path(rel)) is not None}

        for ci, (crel, rec) in enumerate(records):
            run = rec.get("run_id")
            counts = {"data_files": 0, "error_files": 0}
            complete = {"data_files": True, "error_files": True}
            key_sets: list[tuple[str, pa.Array]] = []
            for fld in ("data_files", "error_files"):
                for rel in dict.fromkeys(rec.get(fld) or []):
                    if owner.get(rel) != ci:
                        complete[fld] = False
                        continue
                    if rel not in present:
                        f.problem("file", f"committed by {crel} but missing", file=rel)
                        complete[fld] = False
                        continue
                    if fld == "data_files":
                        n, keys = self.check_data_file(rel)
                        if keys is not None:  # duplicates (within a file or a commit) are found below
                            key_sets.append((rel, keys))
                    else:
                        n = self.check_errors_file(rel)
                    if n is None:
                        complete[fld] = False
                    else:
                        counts[fld] += n
            self.check_unique(run, key_sets)
            for fld, rf, what in (("data_files", "rows", "rows"), ("error_files", "errors", "error rows")):
                if complete[fld] and isinstance(rec.get(rf), int) and rec[rf] != counts[fld]:
                    f.problem("commit_rows", f"record says {rec[rf]} {what}, its files hold {counts[fld]}",
                              file=crel)

        referenced = set(owner)
        for folder in (DATA_DIR, ERRORS_DIR):
            for p in t.list_files(folder):
                rel = f"{folder}/{posixpath.basename(p)}"
                if rel not in referenced:
                    f.warning("orphan", "not named by any commit record: invisible to readers (left by an "
                                        "interrupted run); safe to delete once no run is in progress", file=rel)
        self.models.report(f)
        f.finish()


def verify_table(
    table_uri: str,
    storage_options: dict | None = None,
    *,
    decode: bool = False,
    sample: float = 1.0,
    seed: int = 0,
    weights: str | None = None,
    tolerance_db: float = 0.05,
    device: str | None = None,
    tolerance_perceptual: float = 0.002,
) -> VerifyReport:
    """Check the table at ``table_uri`` (see the module docstring); never raises on a damaged table.

    ``decode`` also decodes rows (all, or the deterministic ``sample`` fraction chosen by ``seed``) and compares
    their PSNR (within ``tolerance_db``) and stored LPIPS / DISTS (within ``tolerance_perceptual``, absolute) with
    the figures re-measured where the original is still readable. ``weights`` as for ``load_codec``;
    ``device`` defaults to CUDA when available.
    """
    if not 0.0 < float(sample) <= 1.0:
        raise ValueError(f"sample must be in (0, 1], got {sample}")
    if tolerance_db < 0 or tolerance_perceptual < 0:
        raise ValueError(f"tolerances must be >= 0, got {tolerance_db} dB and {tolerance_perceptual}")
    report = VerifyReport(table=table_uri)
    table = BitstreamTable(table_uri, storage_options)
    _Verifier(table, report, decode=decode, sample=float(sample), seed=seed, weights=weights, device=device,
              tolerance_db=float(tolerance_db), tolerance_perceptual=float(tolerance_perceptual)).run()
    return report


def print_report(report: VerifyReport, *, as_json: bool = False, file: TextIO | None = None) -> None:
    """A concise human report (each bad key / file with the failed check), or the report as JSON."""
    out = file or sys.stdout
    if as_json:
        print(json.dumps(report.to_dict(), indent=2, default=str), file=out)
        return
    n_p, n_w = sum(report.problem_counts.values()), sum(report.warning_counts.values())
    status = "OK" if report.ok else "FAILED"
    print(f"verify {report.table}: {status} ({n_p} problem(s), {n_w} warning(s))", file=out)
    line = f"  checked {report.checked_rows} row(s) in {report.checked_files} file(s) of {report.commits} commit(s)"
    if report.decoded_rows:
        line += (f"; decoded {report.decoded_rows} ({report.decoded_with_reference} against the original, "
                 f"{report.decoded_without_reference} decoded without reference)")
        if report.perceptual_remeasured:
            line += f", {report.perceptual_remeasured} LPIPS/DISTS figure(s) re-measured"
    print(line, file=out)
    for label, items in (("problem", report.problems), ("warning", report.warnings)):
        for p in items:
            where = " ".join(x for x in (f"key {p['key']!r}" if p["key"] is not None else "",
                                         p["file"] or "") if x)
            print(f"  {label} [{p['check']}] {where + ': ' if where else ''}{p['message']}", file=out)
