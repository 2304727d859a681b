"""The Ray Data datasink of the compress job: uncommitted Parquet parts, committed later by the driver."""

from __future__ import annotations

import pyarrow as pa
from ray.data import Datasink

from .stages import KIND_ROW, part_stats
from .table.schema import WrittenPart


class ArchiveSink(Datasink):
    """Each write task stores its rows and its errors as uncommitted parts and returns what it wrote.

    The driver commits exactly the parts listed in :attr:`result`. Parts written by a task attempt that Ray
    retried are never listed, so they stay invisible (orphans, reported by ``verify``), and a crash before the
    commit leaves no visible row at all.
    """

    def __init__(self, table_uri: str, storage_options: dict | None, run_id: str, rows_per_part: int = 64):
        self.table_uri, self.storage_options, self.run_id = table_uri, storage_options, run_id
        self.rows_per_part = rows_per_part
        self.result: list[WrittenPart] = []

    @property
    def min_rows_per_write(self) -> int:
        """Ray Data buffers blocks up to this many rows per write, so one-image blocks do not become one-row
        Parquet files."""
        return self.rows_per_part

    def write(self, blocks, ctx) -> WrittenPart:
        from .table import BitstreamTable
        from .table.schema import ERRORS_SCHEMA, TABLE_SCHEMA, rows_to_table

        table = BitstreamTable(self.table_uri, self.storage_options)
        rows, errors = [], []
        for block in blocks:
            block = block if isinstance(block, pa.Table) else pa.Table.from_pandas(block)
            for r in block.to_pylist():
                (rows if r["kind"] == KIND_ROW else errors).append(r)
        data = [table.write_part(self.run_id, "data", rows_to_table(rows, TABLE_SCHEMA))] if rows else []
        errs = [table.write_part(self.run_id, "errors", rows_to_table(errors, ERRORS_SCHEMA))] if errors else []
        return WrittenPart(tuple(data), tuple(errs), tuple(r["key"] for r in rows), tuple(r["key"] for r in errors),
                           part_stats(rows))

    def on_write_complete(self, write_result) -> None:
        self.result = list(write_result.write_returns)

    @property
    def supports_distributed_writes(self) -> bool:
        return True

    def get_name(self) -> str:
        return "LatentarcArchive"
