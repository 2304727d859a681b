"""Where things live under a table root and how they are named: folders, commit record names, run ids.

    data/<run_id>-<part>.parquet        rows of TABLE_SCHEMA (one row per archived image)
    _errors/<run_id>-<part>.parquet     rows of ERRORS_SCHEMA (inputs that could not be archived)
    _commits/<seq>.json                 one record per committed run (the only thing readers trust)
    _reports/<run_id>.json              savings report of a run

Commit records are numbered ``<seq>`` (20 digits); tables written before numbering have
``<UTC stamp>-<run_id>.json`` records, ordered by name and before every numbered one.
"""

from __future__ import annotations

import datetime as _dt
import re
import secrets

from latentarc.pipeline.errors import TableError

DATA_DIR = "data"
ERRORS_DIR = "_errors"
COMMITS_DIR = "_commits"
REPORTS_DIR = "_reports"

_STAMP_FMT = "%Y%m%dT%H%M%S%fZ"
_COMMIT_RE = re.compile(r"^(\d{8}T\d{12}Z)-(.+)\.json$")  # legacy records: <UTC stamp>-<run_id>.json
_SEQ_RE = re.compile(r"^(\d{20})\.json$")
SEQ_DIGITS = 20
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def commit_sort_key(name: str) -> tuple | None:
    """Order of a ``_commits/`` file name in the log (legacy stamps first, then by number); None: not a record."""
    m = _SEQ_RE.match(name)
    if m:
        return (1, int(m.group(1)), "")
    if _COMMIT_RE.match(name):
        return (0, 0, name)
    return None


def legacy_commit_run(name: str) -> str | None:
    """The run id a legacy ``<stamp>-<run_id>.json`` record name carries (None for numbered records)."""
    m = _COMMIT_RE.match(name)
    return m.group(2) if m else None


def commit_record_path(seq: int) -> str:
    """``_commits/<seq>.json``, relative to the root."""
    return f"{COMMITS_DIR}/{seq:0{SEQ_DIGITS}d}.json"


def new_run_id() -> str:
    """A sortable run id: UTC timestamp to the microsecond plus 6 random hex digits."""
    return f"{_dt.datetime.now(_dt.timezone.utc).strftime(_STAMP_FMT)}-{secrets.token_hex(3)}"


def check_name(what: str, name: str) -> str:
    """``name`` if it is safe as a file-name part (letters, digits, ``.``, ``_``, ``-``), else ``TableError``."""
    name = str(name)
    if not _NAME_RE.match(name):
        raise TableError(f"invalid {what} {name!r}: use letters, digits, '.', '_' and '-' only")
    return name


def is_direct_child(rel: object, folder: str) -> bool:
    """True when ``rel`` names a file directly under ``folder/`` (``data/x.parquet``), as records must."""
    parts = rel.split("/") if isinstance(rel, str) else []
    return len(parts) == 2 and parts[0] == folder and parts[1] not in ("", ".", "..")
