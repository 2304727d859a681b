"""On-demand bulk restore: decode all of a table, or the rows a key list or prefix selects, back to images.

Only the needed rows are read: the driver asks the table's plan which committed files hold the selected keys'
current rows (latest commit wins; statistics prune the rest), then read tasks open just those files with the key
filter pushed down to Parquet. Images are written under their keys with the suffix of the output
format (``a/b.jpg`` → ``a/b.png``); keys that would escape the destination are refused and reported.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from .errors import UnsafeKey

SUFFIXES = (".png", ".tiff", ".webp")


@dataclass
class RestoreResult:
    requested: int
    restored: int
    failures: list[dict] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # asked-for keys the table does not hold
    seconds: float = 0.0


def run_restore(
    table_uri: str,
    dst: str,
    *,
    keys: list[str] | None = None,
    prefix: str | None = None,
    table_options: dict | None = None,
    dst_options: dict | None = None,
    weights: str | None = None,
    workers: int | None = None,
    batch_size: int = 4,
    suffix: str = ".png",
    refine=None,
    refiner: str | None = None,
) -> RestoreResult:
    """Restore the selected rows (all of the table when neither ``keys`` nor ``prefix`` is given). ``refine``
    (a ``codec.refine.RefineConfig``) and ``refiner`` (a refiner name) apply diffusion refinement to neural rows."""
    import ray.data

    from .runtime import actor_pool_args, patient_execution, plan_pool, quiet_remote_args_notice
    from .stages import RestoreActor, read_rows
    from .storage import open_fs, safe_join
    from .table import BitstreamTable

    if suffix not in SUFFIXES:
        raise ValueError(f"output format must be one of {SUFFIXES}")
    t0 = time.perf_counter()
    table = BitstreamTable(table_uri, table_options)
    result = RestoreResult(requested=0, restored=0)
    seen: set[str] = set()
    fs, root = open_fs(dst, dst_options)
    items = []
    for path, only in table.plan(keys=keys, prefix=prefix):
        if only is not None:  # refuse unsafe keys up front (they are checked again where files are written)
            safe = []
            for k in only:
                try:
                    safe_join(root, k, fs=fs)
                    safe.append(k)
                except UnsafeKey as e:
                    result.failures.append({"key": k, "error_type": "UnsafeKey", "message": str(e)})
                    seen.add(k)
            only = safe
        items.append({"path": path, "winners": None if only is None else json.dumps(only)})
    if items:
        plan = plan_pool(workers)
        with patient_execution():  # set before the dataset exists: Ray Data snapshots the context at creation
            ds = ray.data.from_items(items, override_num_blocks=len(items))
            ds = ds.map_batches(read_rows, batch_size=1, batch_format="pyarrow", num_cpus=plan.decode_cpus,
                                fn_kwargs={"table": table, "keys": keys, "prefix": prefix})
            with quiet_remote_args_notice():
                ds = ds.map_batches(
                    RestoreActor,
                    batch_size=batch_size,
                    batch_format="pyarrow",
                    fn_constructor_kwargs={"dst": dst, "storage_options": dst_options, "weights": weights,
                                           "suffix": suffix, "refine": refine, "refiner": refiner},
                    **actor_pool_args(plan),
                )
            for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
                for r in batch.to_pylist():
                    seen.add(r["key"])
                    if r["ok"]:
                        result.restored += 1
                    else:
                        result.failures.append({"key": r["key"], "error_type": r["error_type"], "message": r["message"]})
    if keys is not None:
        result.missing = sorted(set(keys) - seen)
    result.requested = len(seen) + len(result.missing)
    result.seconds = time.perf_counter() - t0
    return result
