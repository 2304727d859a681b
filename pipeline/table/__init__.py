"""The bitstream table: Parquet files plus a commit log, on a local folder or an object store. This package owns
the format: where files live and how they are named (``layout``), the row schemas (``schema``), the commit
record and run report as files (``records``), and the table itself (``store``: writing parts, committing,
reading). ``verify`` reads through the same public functions.

Layout under the table root::

    data/<run_id>-<part>.parquet        rows of TABLE_SCHEMA (one row per archived image)
    _errors/<run_id>-<part>.parquet     rows of ERRORS_SCHEMA (inputs that could not be archived)
    _commits/<seq>.json                 one record per committed run (the only thing readers trust)
    _reports/<run_id>.json              savings report of a run

Why a commit log: a run writes many part files from many workers, possibly on S3 where nothing can be renamed
atomically. Part files are invisible until one commit record naming them is written (one PUT on S3, temp file +
``os.replace`` locally), so a crashed run leaves only orphans (:meth:`BitstreamTable.orphans`) and never a
half-visible table. Readers list ``_commits/`` and read exactly the files the records name.

Later commits win: when a key appears in several commits (a changed source re-archived by a later run), the
row of the latest commit is the effective one, in :meth:`~BitstreamTable.read` and
:meth:`~BitstreamTable.index` alike. Commit records are ordered by their sequence number ``<seq>``
(20 digits, 1, 2, 3, ...); tables written before sequence numbers have ``<UTC stamp>-<run_id>.json`` records,
ordered by name and before every numbered one.

Concurrent writers commit optimistically: a run claims ``head + 1`` by creating its record exclusively
(:func:`~latentarc.pipeline.storage.write_bytes_exclusive`); the loser re-plans against every commit made
since the snapshot it planned from (dropping its rows for keys those commits archived: the first committed
row of a key stays current) and claims the next number. See docs/jobs-and-table.md, "Concurrent writers".

Row groups: data files are cut into row groups of about :data:`ROW_GROUP_BYTES` (32 MiB) of payload, at most
:data:`ROW_GROUP_MAX_ROWS` rows, rows sorted by key within a file. Restores read whole row groups, so a
selective restore costs at most ~32 MiB per matching group, large enough for efficient ranged S3 reads and
for Ray Data read tasks, small enough that a ``--keys`` restore does not pull whole files. ``key`` min/max
statistics (with the sort) let ``isin`` / prefix filters skip row groups and files. Payload is stored
without compression and without dictionary encoding (it is entropy coded already); other columns use zstd.
"""

from .layout import (COMMITS_DIR, DATA_DIR, ERRORS_DIR, REPORTS_DIR, check_name, commit_sort_key, is_direct_child,
                     legacy_commit_run, new_run_id)
from .records import LEGACY_REPORT_KEYS, record_problems, report_in_todays_words
from .schema import ERRORS_SCHEMA, TABLE_SCHEMA, conform_table, rows_to_table
from .store import COMMIT_ATTEMPTS, ROW_GROUP_BYTES, ROW_GROUP_MAX_ROWS, BitstreamTable, CommitResult

__all__ = ["BitstreamTable", "CommitResult", "COMMIT_ATTEMPTS", "ROW_GROUP_BYTES", "ROW_GROUP_MAX_ROWS",
           "DATA_DIR", "ERRORS_DIR", "COMMITS_DIR", "REPORTS_DIR", "TABLE_SCHEMA", "ERRORS_SCHEMA", "conform_table",
           "rows_to_table", "check_name", "commit_sort_key", "is_direct_child", "legacy_commit_run", "new_run_id",
           "record_problems", "report_in_todays_words", "LEGACY_REPORT_KEYS"]
