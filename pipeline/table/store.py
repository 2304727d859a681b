"""The table object: write part files, commit them, read rows and errors back (the format is described in the
package docs)."""

from __future__ import annotations

import json
import os
import posixpath
import random
import secrets
import time
from dataclasses import dataclass, field
from typing import Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from latentarc.pipeline.errors import ConcurrentCommit, TableError
from latentarc.pipeline.storage import (
    _invalidate,
    arrow_filesystem,
    is_local,
    open_fs,
    stat_many,
    write_bytes_atomic,
    write_bytes_exclusive,
)

from .layout import (COMMITS_DIR, DATA_DIR, ERRORS_DIR, REPORTS_DIR, check_name, commit_record_path, commit_sort_key,
                     is_direct_child, new_run_id)
from .records import dumps, new_record, parse_record, report_in_todays_words
from .schema import ERRORS_SCHEMA, TABLE_SCHEMA, conform_table

ROW_GROUP_BYTES = 32 * 2**20
ROW_GROUP_MAX_ROWS = 4096
_ROW_OVERHEAD = 256  # rough bytes per row besides payload and metadata

#: commit attempts before :class:`ConcurrentCommit` (each lost race re-plans and tries the next number)
COMMIT_ATTEMPTS = 16
_RANK = "_rank"
_COMMIT = "_commit"

__all__ = ["BitstreamTable", "CommitResult", "COMMIT_ATTEMPTS", "ROW_GROUP_BYTES", "ROW_GROUP_MAX_ROWS"]


@dataclass(frozen=True)
class CommitResult:
    """What :meth:`BitstreamTable.commit` committed.

    ``dropped_rows`` / ``dropped_errors``: keys of this run left out because a concurrent commit made since the
    run's snapshot archived them first (their committed row stays current); ``attempts``: tries it took.
    """

    path: str
    seq: int
    rows: int
    errors: int
    attempts: int = 1
    dropped_rows: list[str] = field(default_factory=list)
    dropped_errors: list[str] = field(default_factory=list)


def _prefix_upper(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix`` (None if there is none)."""
    chars = list(prefix)
    while chars:
        c = ord(chars[-1]) + 1
        if 0xD800 <= c <= 0xDFFF:
            c = 0xE000
        if c <= 0x10FFFF:
            chars[-1] = chr(c)
            return "".join(chars)
        chars.pop()
    return None


def _key_filter(keys: Iterable[str] | None, prefix: str | None):
    """A pyarrow expression on ``key`` (None = everything). Returns ``False`` when nothing can match."""
    expr = None
    if keys is not None:
        if isinstance(keys, str):
            keys = [keys]
        wanted = list(dict.fromkeys(str(k) for k in keys))
        if not wanted:
            return False
        expr = pc.field("key").isin(pa.array(wanted, pa.string()))
    if prefix:
        # starts_with alone is not used for statistics pruning on every pyarrow version: add the key range
        e = (pc.field("key") >= prefix) & pc.starts_with(pc.field("key"), prefix)
        upper = _prefix_upper(prefix)
        if upper is not None:
            e = e & (pc.field("key") < upper)
        expr = e if expr is None else expr & e
    return expr


class BitstreamTable:
    """A Parquet bitstream table with a commit log (see the module docstring for layout and semantics).

    ``uri`` is a local folder, ``file://`` URL or ``s3://bucket/prefix``; ``storage_options`` go to s3fs.
    File paths returned by this class (:meth:`data_files`, :meth:`error_files`, :meth:`orphans`, :meth:`plan`)
    are filesystem paths without protocol; use them with :attr:`fs` / :attr:`arrow_fs`, or :meth:`uri_of`.
    """

    new_run_id = staticmethod(new_run_id)

    def __init__(self, uri: str, storage_options: dict | None = None):
        self.uri = uri
        self.storage_options = dict(storage_options or {})
        self.fs, self.root = open_fs(uri, self.storage_options)
        self._arrow_fs = None

    def __reduce__(self):  # ship to Ray workers by URI, not by live connections
        return (type(self), (self.uri, self.storage_options))

    def __repr__(self) -> str:
        return f"BitstreamTable({self.uri!r})"

    # --- paths ------------------------------------------------------------------------------------------------
    @property
    def arrow_fs(self):
        """The table's filesystem as a :mod:`pyarrow.fs` filesystem (for pyarrow / Ray Data readers)."""
        if self._arrow_fs is None:
            self._arrow_fs = arrow_filesystem(self.fs)
        return self._arrow_fs

    def path(self, rel: str) -> str:
        """Full filesystem path of a path relative to the table root."""
        return f"{self.root.rstrip('/')}/{rel}" if self.root != "/" else f"/{rel}"

    def uri_of(self, path: str) -> str:
        """A URI for a full path (``s3://...`` on S3, the plain path locally)."""
        return path if is_local(self.fs) else self.fs.unstrip_protocol(path)

    def _rel(self, p: str, folder: str) -> str:
        p = str(p)
        if "://" in p:
            p = self.fs._strip_protocol(p)
        root = self.root.rstrip("/") + "/"
        if p.startswith(root):
            p = p[len(root) :]
        if not is_direct_child(p, folder):
            raise TableError(f"{p!r} is not a file directly under {folder}/ of {self.uri}")
        return p

    def list_files(self, folder: str) -> list[str]:
        """Full paths of the plain files directly under ``folder`` (hidden temp files excluded)."""
        full = self.path(folder)
        if is_local(self.fs):
            try:
                names = os.listdir(full)
            except (FileNotFoundError, NotADirectoryError):
                return []
            return sorted(
                f"{full}/{n}" for n in names if not n.startswith(".") and os.path.isfile(os.path.join(full, n))
            )
        _invalidate(self.fs, full)
        try:
            entries = self.fs.ls(full, detail=True)
        except FileNotFoundError:
            return []
        out = []
        for e in entries:
            name = e["name"].rstrip("/")
            if e.get("type", "file") == "file" and not posixpath.basename(name).startswith(".") and name != full:
                out.append(name)
        return sorted(out)

    def read_files(self, paths: list[str]) -> dict[str, bytes]:
        if not paths:
            return {}
        if is_local(self.fs):
            out = {}
            for p in paths:
                with open(p, "rb") as f:
                    out[p] = f.read()
            return out
        got = self.fs.cat(paths, on_error="raise")
        if isinstance(got, bytes):  # one path may come back unwrapped
            got = {paths[0]: got}
        return got

    # --- writing ----------------------------------------------------------------------------------------------
    def write_part(self, run_id: str, kind: str, table: pa.Table, *, part: str | int | None = None) -> str:
        """Write one uncommitted Parquet file of ``kind`` ``"data"`` or ``"errors"``; return its relative path.

        The table is conformed to TABLE_SCHEMA / ERRORS_SCHEMA (:class:`TableError` names a bad column); data
        keys must be unique within a part. ``part`` defaults to random hex (safe from parallel workers).
        Nothing becomes visible until :meth:`commit` names the file.
        """
        run_id = check_name("run id", run_id)
        part = check_name("part", part if part is not None else secrets.token_hex(6))
        if kind == "data":
            schema, folder = TABLE_SCHEMA, DATA_DIR
        elif kind == "errors":
            schema, folder = ERRORS_SCHEMA, ERRORS_DIR
        else:
            raise TableError(f"kind must be 'data' or 'errors', not {kind!r}")
        table = conform_table(table, schema)
        if kind == "data" and table.num_rows and pc.count_distinct(table["key"]).as_py() != table.num_rows:
            raise TableError("duplicate keys within one data part")
        if table.num_rows:
            table = table.sort_by("key")
        rel = f"{folder}/{run_id}-{part}.parquet"
        full = self.path(rel)
        if is_local(self.fs):
            os.makedirs(os.path.dirname(full), exist_ok=True)
            if os.path.exists(full):
                raise TableError(f"part file exists already: {full}")
        elif self.fs.exists(full):
            raise TableError(f"part file exists already: {full}")
        if kind == "data":
            names = schema.names
            opts = dict(
                compression={n: ("NONE" if n == "payload" else "ZSTD") for n in names},
                use_dictionary=["mode", "codec", "model_sha256", "run_id"],
                write_statistics=[n for n in names if n not in ("payload", "metadata", "params")],
            )
            groups = _row_groups(table)
        else:
            opts = dict(compression="ZSTD")
            groups = [(0, table.num_rows)] if table.num_rows else []
        try:
            with pq.ParquetWriter(full, schema, filesystem=self.arrow_fs, **opts) as writer:
                for start, stop in groups:
                    writer.write_table(table.slice(start, stop - start), row_group_size=stop - start)
        except OSError as e:
            raise TableError(f"cannot write {self.uri_of(full)}: {e}") from e
        _invalidate(self.fs, self.path(folder))
        return rel

    def commit(
        self,
        run_id: str,
        data_files: Iterable[str],
        error_files: Iterable[str],
        *,
        rows: int,
        errors: int,
        report: dict | None = None,
        base: int | None = None,
        max_attempts: int = COMMIT_ATTEMPTS,
    ) -> CommitResult:
        """Make a run's part files visible, atomically, by creating its commit record ``_commits/<seq>.json``.

        Files may be given relative to the root (as :meth:`write_part` returns them) or as full paths/URIs;
        they must exist. A run id can be committed once.

        Optimistic concurrency: ``base`` is the sequence number of the last commit the run planned against (its
        snapshot; None: the head now). Before each attempt the run drops, from its parts, every key that a
        commit newer than ``base`` archived as a row (affected parts are rewritten; the first committed row of
        a key stays current), then claims ``head + 1`` with an exclusive create. Losing that race re-lists the
        log and tries again, with jittered pauses; :class:`ConcurrentCommit` after ``max_attempts``. A record
        found under our run id after an attempt whose answer was lost counts as committed.
        """
        run_id = check_name("run id", run_id)
        data_rel = list(dict.fromkeys(self._rel(p, DATA_DIR) for p in data_files))
        err_rel = list(dict.fromkeys(self._rel(p, ERRORS_DIR) for p in error_files))
        entries = self._commit_entries()
        if any(rec.get("run_id") == run_id for _, rec in entries):
            raise TableError(f"run {run_id} is committed already")
        for rel in data_rel + err_rel:
            if not self.fs.exists(self.path(rel)):
                raise TableError(f"cannot commit {run_id}: {rel} does not exist")
        base = _head(entries) if base is None else int(base)
        rows, errors = int(rows), int(errors)
        replaced: list[str] = []
        dropped_rows: list[str] = []
        dropped_errors: list[str] = []
        checked: set[int] = set()
        unknown: OSError | None = None
        for attempt in range(1, max_attempts + 1):
            for p, rec in entries:
                if rec["seq"] > base and rec.get("run_id") == run_id:  # ours: an earlier attempt's answer was lost
                    self._remove(replaced)
                    return CommitResult(self._rel(p, COMMITS_DIR), rec["seq"], rec.get("rows", rows),
                                        rec.get("errors", errors), attempt, dropped_rows, dropped_errors)
            newer = [rec for _, rec in entries if rec["seq"] > base and rec["seq"] not in checked]
            if newer:
                data_rel, d_rows, old_d = self._drop_keys(run_id, "data", data_rel, newer)
                err_rel, d_errs, old_e = self._drop_keys(run_id, "errors", err_rel, newer)
                dropped_rows += d_rows
                dropped_errors += d_errs
                replaced += old_d + old_e
                rows, errors = rows - len(d_rows), errors - len(d_errs)
                checked.update(rec["seq"] for rec in newer)
            seq = _head(entries) + 1
            conflicts = {"rows": len(dropped_rows), "errors": len(dropped_errors)}
            record = new_record(run_id=run_id, seq=seq, base=base, data_files=data_rel, error_files=err_rel,
                                rows=rows, errors=errors, conflicts=conflicts if any(conflicts.values()) else None,
                                report=report)
            rel = commit_record_path(seq)
            try:
                write_bytes_exclusive(self.fs, self.path(rel), dumps(record))
            except FileExistsError:
                pass  # another writer has this number: re-plan against it
            except OSError as e:
                if is_local(self.fs):
                    raise TableError(f"cannot create the commit record {self.uri_of(self.path(rel))}: {e}") from e
                unknown = e  # outcome unknown (the store may have taken the PUT): the re-listing below tells
            else:
                self._remove(replaced)
                return CommitResult(rel, seq, rows, errors, attempt, dropped_rows, dropped_errors)
            time.sleep(random.uniform(0, min(1.0, 0.02 * 2**attempt)))
            entries = self._commit_entries()
        why = f" (last store error: {unknown})" if unknown is not None else ""
        raise ConcurrentCommit(f"run {run_id} could not claim a commit number in {max_attempts} attempts on "
                               f"{self.uri}{why}") from unknown

    def _part_keys(self, kind: str, rels: list[str]) -> pa.Table:
        schema = TABLE_SCHEMA if kind == "data" else ERRORS_SCHEMA
        files = [(self.path(r), 0, i) for i, r in enumerate(rels)]
        if not files:
            return pa.table({"key": pa.array([], pa.string()), _RANK: pa.array([], pa.int64())})
        return self._to_table(self._dataset(files, schema), columns=["key", _RANK])

    def _drop_keys(self, run_id: str, kind: str, rels: list[str], newer: list[dict]):
        """Our ``kind`` parts without the keys that ``newer`` commits archived as rows: ``(parts, dropped keys,
        replaced originals)``. Parts holding such keys are rewritten under new names (uncommitted, like all)."""
        theirs = [r for rec in newer for r in rec.get("data_files") or []]
        if not rels or not theirs:
            return rels, [], []
        taken = pc.unique(self._part_keys("data", theirs)["key"])
        ours = self._part_keys(kind, rels)
        hit = ours.filter(pc.is_in(ours["key"], value_set=taken))
        if hit.num_rows == 0:
            return rels, [], []
        schema = TABLE_SCHEMA if kind == "data" else ERRORS_SCHEMA
        out, replaced = list(rels), []
        for i in sorted(set(hit[_RANK].to_pylist())):
            full = self.path(rels[i])
            try:
                part = pq.read_table(full, schema=schema, filesystem=self.arrow_fs)
            except (OSError, pa.ArrowInvalid) as e:
                raise TableError(f"cannot read {self.uri_of(full)} to re-plan the commit: {e}") from e
            keep = part.filter(pc.invert(pc.is_in(part["key"], value_set=taken)))
            out[i] = self.write_part(run_id, kind, keep) if keep.num_rows else None
            replaced.append(full)
        return [r for r in out if r is not None], hit["key"].to_pylist(), replaced

    def _remove(self, paths: list[str]) -> None:
        """Delete uncommitted part files that a re-planned commit replaced (best effort: else orphans)."""
        for p in paths:
            try:
                self.fs.rm_file(p)
            except OSError:
                pass

    def write_report(self, run_id: str, report: dict) -> str:
        """Write ``_reports/<run_id>.json`` (atomically); return its relative path."""
        run_id = check_name("run id", run_id)
        rel = f"{REPORTS_DIR}/{run_id}.json"
        write_bytes_atomic(self.fs, self.path(rel), dumps(report))
        _invalidate(self.fs, self.path(REPORTS_DIR))
        return rel

    def stored_bytes(self, files: Iterable[str]) -> int:
        """Total size in bytes of ``files`` (relative to the root, full paths or URIs); missing ones count 0."""
        paths = []
        root = self.root.rstrip("/") + "/"
        for f in files:
            f = str(f)
            if "://" in f:
                f = self.fs._strip_protocol(f)
            paths.append(f if f.startswith(root) else self.path(f))
        stats = stat_many(self.fs, list(dict.fromkeys(paths)))
        return sum(st[0] for st in stats.values() if st is not None)

    # --- commit log ---------------------------------------------------------------------------------------------
    def _commit_entries(self) -> list[tuple[str, dict]]:
        """``[(full path, record)]`` in log order; each record's ``seq`` is its number (legacy ones: position)."""
        paths = [p for p in self.list_files(COMMITS_DIR) if commit_sort_key(posixpath.basename(p)) is not None]
        paths.sort(key=lambda p: commit_sort_key(posixpath.basename(p)))
        blobs = self.read_files(paths)
        out = []
        for i, p in enumerate(paths):
            rec = parse_record(blobs[p], self.uri_of(p))
            key = commit_sort_key(posixpath.basename(p))
            rec["seq"] = key[1] if key[0] else i + 1
            out.append((p, rec))
        return out

    def committed(self) -> list[dict]:
        """Commit records, oldest first, each with its ``seq`` (a snapshot: pass it to :meth:`index` / :meth:`errors`
        and its last ``seq`` to :meth:`commit` as ``base``)."""
        return [rec for _, rec in self._commit_entries()]

    def exists(self) -> bool:
        """True when the table has at least one committed run."""
        return any(commit_sort_key(posixpath.basename(p)) is not None for p in self.list_files(COMMITS_DIR))

    def _ranked(self, kind: str, records: list[dict] | None = None) -> list[tuple[str, int, int]]:
        """``[(full path, commit index, rank)]`` of committed files, rank increasing with commit order."""
        records = self.committed() if records is None else records
        field = "data_files" if kind == "data" else "error_files"
        seen: dict[str, tuple[int, int]] = {}
        rank = 0
        for ci, rec in enumerate(records):
            for rel in rec.get(field) or []:
                seen.pop(rel, None)  # a file named twice belongs to its latest commit
                seen[rel] = (ci, rank)
                rank += 1
        return [(self.path(rel), ci, r) for rel, (ci, r) in seen.items()]

    def data_files(self) -> list[str]:
        """Full paths of committed data files, in commit order."""
        return [p for p, _, _ in self._ranked("data")]

    def error_files(self) -> list[str]:
        """Full paths of committed error files, in commit order."""
        return [p for p, _, _ in self._ranked("errors")]

    def orphans(self) -> list[str]:
        """Full paths of files under ``data/`` and ``_errors/`` that no commit names (left by crashed runs)."""
        referenced = {p for p, _, _ in self._ranked("data")} | {p for p, _, _ in self._ranked("errors")}
        present = self.list_files(DATA_DIR) + self.list_files(ERRORS_DIR)
        return sorted(p for p in present if p not in referenced)

    def reports(self) -> list[dict]:
        """Every ``_reports/<run_id>.json``, ordered by run id, each with its ``run_id`` set."""
        paths = [p for p in self.list_files(REPORTS_DIR) if p.endswith(".json")]
        blobs = self.read_files(paths)
        out = []
        for p in sorted(paths, key=posixpath.basename):
            try:
                rep = json.loads(blobs[p])
            except ValueError as e:
                raise TableError(f"damaged report {self.uri_of(p)}: {e}") from e
            if isinstance(rep, dict):
                rep = report_in_todays_words(rep)
                rep.setdefault("run_id", posixpath.basename(p)[: -len(".json")])
                out.append(rep)
        return out

    # --- reading ------------------------------------------------------------------------------------------------
    def _dataset(self, files: list[tuple[str, int, int]], schema: pa.Schema) -> ds.Dataset:
        full = pa.schema(list(schema) + [pa.field(_COMMIT, pa.int32()), pa.field(_RANK, pa.int64())])
        parts = [
            (pc.field(_COMMIT) == pa.scalar(ci, pa.int32())) & (pc.field(_RANK) == pa.scalar(r, pa.int64()))
            for _, ci, r in files
        ]
        try:
            return ds.FileSystemDataset.from_paths(
                [p for p, _, _ in files],
                schema=full,
                format=ds.ParquetFileFormat(),
                filesystem=self.arrow_fs,
                partitions=parts,
            )
        except (OSError, pa.ArrowInvalid) as e:
            raise TableError(f"cannot open the files of {self.uri}: {e}") from e

    def _to_table(self, dataset: ds.Dataset, **kw) -> pa.Table:
        try:
            return dataset.to_table(**kw)
        except (OSError, pa.ArrowInvalid) as e:
            raise TableError(f"cannot read {self.uri}: {e}") from e

    def _plan(self, filt, records=None, *, explicit: bool = False) -> list[tuple[tuple[str, int, int], list[str] | None]]:
        files = self._ranked("data", records)
        if not files or filt is False:
            return []
        kw = {"filter": filt} if filt is not None else {}
        keys = self._to_table(self._dataset(files, TABLE_SCHEMA), columns=["key", _RANK], **kw)
        if keys.num_rows == 0:
            return []
        best = keys.group_by("key").aggregate([(_RANK, "max")])
        rows_per = dict(zip(*keys.group_by(_RANK).aggregate([("key", "count")]).select([_RANK, "key_count"])
                            .to_pydict().values()))
        wins_per = dict(zip(*best.group_by(f"{_RANK}_max").aggregate([("key", "count")])
                            .select([f"{_RANK}_max", "key_count"]).to_pydict().values()))
        plan, listed = [], None
        for f in files:
            r = f[2]
            wins = wins_per.get(r, 0)
            if not wins:
                continue
            if wins == rows_per.get(r, 0) and not explicit:
                plan.append((f, None))
                continue
            if listed is None:  # every file's winners in one pass (a filter per file is quadratic at 1M rows)
                grouped = best.group_by(f"{_RANK}_max").aggregate([("key", "list")])
                listed = dict(zip(grouped[f"{_RANK}_max"].to_pylist(), grouped["key_list"].to_pylist()))
            plan.append((f, sorted(listed[r])))
        return plan

    def plan(self, *, keys: Iterable[str] | None = None, prefix: str | None = None,
             explicit: bool = False) -> list[tuple[str, list[str] | None]]:
        """Which committed data files hold the effective rows matching the filter.

        ``[(full path, None)]`` when every matching row of the file is effective, ``[(path, [keys])]`` when
        only those keys are (the others were superseded by a later commit); ``explicit``: keys listed for every
        file. Files with nothing to contribute are left out. Useful to split a restore over Ray tasks;
        :meth:`read` is built on it.
        """
        return [(f[0], w) for f, w in self._plan(_key_filter(keys, prefix), explicit=explicit)]

    def read(
        self,
        columns: list[str] | None = None,
        *,
        keys: Iterable[str] | None = None,
        prefix: str | None = None,
    ) -> pa.Table:
        """Effective committed rows (one per key, the latest commit's), sorted by key.

        ``keys`` keeps only those keys (``isin``), ``prefix`` only keys starting with it (both: intersection);
        filters are pushed down so non-matching files and row groups are skipped. ``columns`` selects columns
        (default: all of TABLE_SCHEMA).
        """
        columns = list(TABLE_SCHEMA.names) if columns is None else list(columns)
        unknown = [c for c in columns if c not in TABLE_SCHEMA.names]
        if unknown:
            raise TableError(f"unknown column(s) {', '.join(map(repr, unknown))}")
        out_schema = pa.schema([TABLE_SCHEMA.field(c) for c in columns])
        filt = _key_filter(keys, prefix)
        plan = self._plan(filt)
        if not plan:
            return out_schema.empty_table()
        scan_cols = list(dict.fromkeys(["key", *columns, _RANK]))
        kw = {"filter": filt} if filt is not None else {}
        pieces = []
        whole = [f for f, w in plan if w is None]
        if whole:
            pieces.append(self._to_table(self._dataset(whole, TABLE_SCHEMA), columns=scan_cols, **kw))
        for f, winners in plan:
            if winners is not None:
                only = pc.field("key").isin(pa.array(winners, pa.string()))
                pieces.append(
                    self._to_table(self._dataset([f], TABLE_SCHEMA), columns=scan_cols,
                                   filter=only if filt is None else filt & only)
                )
        table = pa.concat_tables(pieces)
        if pc.count_distinct(table["key"]).as_py() != table.num_rows:
            table = _keep_last(table)  # duplicates inside one commit's files: the later file wins
        table = table.sort_by("key")
        return pa.Table.from_arrays([table[c] for c in columns], schema=out_schema)

    def index(self, records: list[dict] | None = None) -> dict[str, tuple[int, str | None]]:
        """``key -> (source_size, source_etag)`` of the effective rows (reads only those columns) as of
        ``records`` (a :meth:`committed` snapshot; default: now)."""
        files = self._ranked("data", records)
        if not files:
            return {}
        t = self._to_table(self._dataset(files, TABLE_SCHEMA), columns=["key", "source_size", "source_etag", _RANK])
        t = t.sort_by(_RANK)  # stable: later commits overwrite earlier ones below
        return dict(zip(t["key"].to_pylist(), zip(t["source_size"].to_pylist(), t["source_etag"].to_pylist())))

    def errors(self, latest_only: bool = True, records: list[dict] | None = None) -> pa.Table:
        """Committed error rows whose key has no table row from the same or a later commit.

        ``latest_only``: one row per key, from its latest failing commit; otherwise every such error row
        (history). Sorted by key (then commit order). ``records``: a :meth:`committed` snapshot (default: now).
        """
        records = self.committed() if records is None else records
        efiles = self._ranked("errors", records)
        if not efiles:
            return ERRORS_SCHEMA.empty_table()
        et = self._to_table(self._dataset(efiles, ERRORS_SCHEMA))
        if et.num_rows == 0:
            return ERRORS_SCHEMA.empty_table()
        dfiles = self._ranked("data", records)
        ok: dict[str, int] = {}
        if dfiles:
            err_keys = pc.unique(et["key"])
            dt = self._to_table(
                self._dataset(dfiles, TABLE_SCHEMA), columns=["key", _COMMIT], filter=pc.field("key").isin(err_keys)
            )
            for k, c in zip(dt["key"].to_pylist(), dt[_COMMIT].to_pylist()):
                if c > ok.get(k, -1):
                    ok[k] = c
        keep = [ok.get(k, -1) < c for k, c in zip(et["key"].to_pylist(), et[_COMMIT].to_pylist())]
        et = et.filter(pa.array(keep, pa.bool_()))
        et = et.sort_by([("key", "ascending"), (_RANK, "ascending")])
        if latest_only and et.num_rows:
            et = _keep_last(et, sorted_by_key=True)
        return pa.Table.from_arrays([et[c] for c in ERRORS_SCHEMA.names], schema=ERRORS_SCHEMA)


def _head(entries: list[tuple[str, dict]]) -> int:
    return entries[-1][1]["seq"] if entries else 0


def _row_groups(table: pa.Table) -> list[tuple[int, int]]:
    """Row ranges of about ROW_GROUP_BYTES (payload + metadata + overhead), at most ROW_GROUP_MAX_ROWS rows."""
    n = table.num_rows
    if n == 0:
        return []
    sizes = pc.binary_length(table["payload"]).to_numpy(zero_copy_only=False)
    meta = pc.fill_null(pc.binary_length(table["metadata"]), 0).to_numpy(zero_copy_only=False)
    groups, start, acc = [], 0, 0
    for i in range(n):
        acc += int(sizes[i]) + int(meta[i]) + _ROW_OVERHEAD
        if acc >= ROW_GROUP_BYTES or i + 1 - start >= ROW_GROUP_MAX_ROWS:
            groups.append((start, i + 1))
            start, acc = i + 1, 0
    if start < n:
        groups.append((start, n))
    return groups


def _keep_last(table: pa.Table, *, sorted_by_key: bool = False) -> pa.Table:
    """The last row of each key (by row order, or by ``_rank`` then row order when not sorted by key)."""
    if not sorted_by_key:
        idx = pa.array(range(table.num_rows), pa.int64())
        table = table.append_column("__row", idx).sort_by([("key", "ascending"), (_RANK, "ascending"),
                                                            ("__row", "ascending")]).drop_columns(["__row"])
    k = table["key"].combine_chunks()
    if len(k) <= 1:
        return table
    last = pc.not_equal(k.slice(0, len(k) - 1), k.slice(1))
    mask = pa.concat_arrays([last, pa.array([True])])
    return table.filter(mask)
