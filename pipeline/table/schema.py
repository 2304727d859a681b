"""Arrow schemas of the bitstream table and the errors table (``../shared/DESIGN.md`` §3).

Column names and types of DESIGN §3 are a contract: never drop or retype them. Extra columns here:
``source_etag`` (change detection for incremental runs), ``ms_ssim`` (measured at encode time, when the job
computes it), ``run_id`` (which run wrote the row), ``guarantee`` (``codec.guarantee``), ``lpips`` /
``dists`` (measured when the job has an LPIPS / DISTS floor; ``codec.floors``) and ``compute_s`` / ``gpu_s``
(what the encode cost; ``pipeline.compute_clock``). Non-nullable fields are required in every row.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa

from latentarc.pipeline.errors import TableError

SCHEMA_VERSION = "1"

TIMESTAMP = pa.timestamp("us", tz="UTC")

TABLE_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("source_size", pa.int64(), nullable=False),
        pa.field("source_sha256", pa.string(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("mode", pa.string(), nullable=False),
        pa.field("codec", pa.string(), nullable=False),
        pa.field("format_version", pa.int32(), nullable=False),
        pa.field("model_sha256", pa.string(), nullable=True),
        pa.field("params", pa.string(), nullable=False),  # JSON
        pa.field("payload", pa.large_binary(), nullable=False),
        pa.field("payload_size", pa.int64(), nullable=False),
        pa.field("payload_crc32c", pa.int64(), nullable=False),
        pa.field("bpp", pa.float64(), nullable=False),
        pa.field("psnr", pa.float64(), nullable=False),
        pa.field("metadata", pa.binary(), nullable=True),
        pa.field("encoded_at", TIMESTAMP, nullable=False),
        # extras
        pa.field("source_etag", pa.string(), nullable=True),
        pa.field("ms_ssim", pa.float64(), nullable=True),
        pa.field("run_id", pa.string(), nullable=False),
        # what the restored image promises (codec.guarantee): bytes-exact, pixels-exact or lossy; null in rows
        # written before the column existed
        pa.field("guarantee", pa.string(), nullable=True),
        # perceptual distances of the stored stream (codec.metrics), measured for an LPIPS / DISTS floor; null
        # otherwise and in rows written before the columns existed
        pa.field("lpips", pa.float64(), nullable=True),
        pa.field("dists", pa.float64(), nullable=True),
        # what encoding the row cost (pipeline.compute_clock): the encode actor's CPU seconds, and GPU wall seconds
        # when it ran on CUDA; null in rows written before the columns existed (gpu_s also on CPU)
        pa.field("compute_s", pa.float64(), nullable=True),
        pa.field("gpu_s", pa.float64(), nullable=True),
    ],
    metadata={"latentarc.table": "bitstream", "latentarc.schema_version": SCHEMA_VERSION},
)

ERRORS_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("error_type", pa.string(), nullable=False),
        pa.field("message", pa.string(), nullable=False),
        pa.field("at", TIMESTAMP, nullable=False),
        # extras
        pa.field("source_size", pa.int64(), nullable=True),
        pa.field("source_etag", pa.string(), nullable=True),
        pa.field("run_id", pa.string(), nullable=False),
    ],
    metadata={"latentarc.table": "errors", "latentarc.schema_version": SCHEMA_VERSION},
)



@dataclass(frozen=True)
class TableRow:
    """One image of the bitstream table: the columns of :data:`TABLE_SCHEMA`, nullable ones defaulting to None
    (``tests/test_structure.py`` holds the two equal)."""

    key: str
    source_uri: str
    source_size: int
    source_sha256: str
    width: int
    height: int
    mode: str
    codec: str
    format_version: int
    params: str  # JSON
    payload: bytes
    payload_size: int
    payload_crc32c: int
    bpp: float
    psnr: float
    encoded_at: datetime
    run_id: str
    model_sha256: str | None = None
    metadata: bytes | None = None
    source_etag: str | None = None
    ms_ssim: float | None = None
    guarantee: str | None = None
    lpips: float | None = None
    dists: float | None = None
    compute_s: float | None = None
    gpu_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ErrorRow:
    """One input that could not be archived: the columns of :data:`ERRORS_SCHEMA`."""

    key: str
    source_uri: str
    stage: str
    error_type: str
    message: str
    at: datetime
    run_id: str
    source_size: int | None = None
    source_etag: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PartStats:
    """What the run summary adds up over one write task's data rows (``savings.build_report``), so the driver never
    re-reads the table; an error-only part has the zero value."""

    original_bytes: int = 0
    payload_bytes: int = 0
    pixels: int = 0
    bpp: tuple[float, ...] = ()
    psnr: tuple[float, ...] = ()
    codecs: tuple[str, ...] = ()
    per_guarantee: dict[str, dict] = field(default_factory=dict)  # guarantee → rows, original and payload bytes
    compute_s: float | None = None
    gpu_s: float | None = None
    compute_rows: int = 0
    per_codec: dict[str, dict] = field(default_factory=dict)


@dataclass(frozen=True)
class WrittenPart:
    """What one write task put on storage — uncommitted Parquet parts of each table, the keys in them — which the
    driver commits (``ArchiveSink.on_write_complete`` collects them)."""

    data_files: tuple[str, ...] = ()
    error_files: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    error_keys: tuple[str, ...] = ()
    stats: PartStats = PartStats()


__all__ = ["ERRORS_SCHEMA", "SCHEMA_VERSION", "TABLE_SCHEMA", "TIMESTAMP", "ErrorRow", "PartStats", "TableRow",
           "WrittenPart", "conform_table", "rows_to_table"]


def _row_label(i: int, row: dict) -> str:
    key = row.get("key") if isinstance(row, dict) else None
    return f"row {i}" + (f" (key {key!r})" if key is not None else "")


def rows_to_table(rows: list[dict[str, Any]], schema: pa.Schema, *, strict: bool = False) -> pa.Table:
    """A table of ``schema`` from row dicts, with errors that name the offending column.

    Every non-nullable column must be present and not None in every row; nullable ones may be left out.
    Keys that are not columns of ``schema`` are ignored (rows of a mixed data/errors block carry both sets),
    unless ``strict``, which refuses them (catches a misspelt nullable column). Values are converted by pyarrow (numpy scalars, ``datetime`` for timestamps, ``bytes`` or
    ``memoryview`` for binaries).
    """
    names = set(schema.names)
    required = [f.name for f in schema if not f.nullable]
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise TableError(f"row {i} is a {type(row).__name__}, not a dict")
        if strict:
            extra = sorted(set(row) - names)
            if extra:
                raise TableError(f"{_row_label(i, row)}: unknown column(s) {', '.join(map(repr, extra))}")
        for name in required:
            if row.get(name) is None:
                raise TableError(f"{_row_label(i, row)}: required column {name!r} is missing or None")
    if not rows:
        return schema.empty_table()
    columns = []
    for f in schema:
        values = [row.get(f.name) for row in rows]
        try:
            columns.append(pa.array(values, type=f.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError) as e:
            raise TableError(f"column {f.name!r} ({f.type}): {e}") from e
    return pa.Table.from_arrays(columns, schema=schema)


def conform_table(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` cast to ``schema`` (column order, types, nullability), or :class:`TableError` naming the column.

    Missing nullable columns are filled with nulls; missing required columns, nulls in required columns,
    unknown columns and impossible casts are refused.
    """
    extra = [n for n in table.column_names if n not in schema.names]
    if extra:
        raise TableError(f"unknown column(s) {', '.join(map(repr, extra))}")
    columns = []
    for f in schema:
        if f.name not in table.column_names:
            if not f.nullable:
                raise TableError(f"required column {f.name!r} is missing")
            columns.append(pa.nulls(table.num_rows, type=f.type))
            continue
        col = table[f.name]
        if col.type != f.type:
            try:
                col = col.cast(f.type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
                raise TableError(f"column {f.name!r}: cannot cast {col.type} to {f.type}: {e}") from e
        if not f.nullable and col.null_count:
            raise TableError(f"required column {f.name!r} has {col.null_count} null value(s)")
        columns.append(col)
    return pa.Table.from_arrays(columns, schema=schema)
