"""On-demand bulk restore: decode all of a table, or the rows a key list or prefix selects, back to images.

Only the needed rows are read: the driver asks the table's plan which committed files hold the selected keys'
current rows (latest commit wins; statistics prune the rest), then read tasks, a few actor batches' worth of keys
each, open just those files with the key filter pushed down to Parquet. Images are written under their keys with
the suffix of the output format (``a/b.jpg`` → ``a/b.png``); keys that would escape the destination are refused
and reported.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field

from .errors import UnsafeKey

log = logging.getLogger("latentarc.restore")

SUFFIXES = (".png", ".tiff", ".webp")
READ_BATCHES = 4  # actor batches per read task (and block) in a restore's first pass


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
    retry_passes: int = 1,
    faults=None,
) -> RestoreResult:
    """Restore the selected rows (all of the table when neither ``keys`` nor ``prefix`` is given). ``refine``
    (a ``codec.refine.RefineConfig``) and ``refiner`` (a refiner name) apply diffusion refinement to neural rows.

    Every selected key ends as restored or as a failure: keys that come back from no batch (a lost node, a batch
    that failed after Ray's retries) get ``retry_passes`` more passes, one row per batch, then are reported as
    ``BatchFailed``. Files are written atomically, so a lost writer never leaves a partial file under a final name.
    ``faults``: a ``pipeline.faults.FaultPlan`` for the crash-safety tests.
    """
    from .storage import open_fs
    from .table import BitstreamTable

    if suffix not in SUFFIXES:
        raise ValueError(f"output format must be one of {SUFFIXES}")
    t0 = time.perf_counter()
    table = BitstreamTable(table_uri, table_options)
    result = RestoreResult(requested=0, restored=0)
    fs, root = open_fs(dst, dst_options)
    plan = table.plan(keys=keys, prefix=prefix, explicit=True)  # every selected key, with the file holding it
    expected = {k for _, ks in plan for k in ks}
    seen: set[str] = set()
    stage = {"dst": dst, "storage_options": dst_options, "weights": weights, "suffix": suffix, "refine": refine,
             "refiner": refiner, "faults": faults}
    for attempt in range(1 + max(0, retry_passes)):
        # a read task per few batches: blocks that small spread a file's rows over the whole pool, and a batch
        # that fails (failing its whole block) costs only its block; a retry pass reads and decodes one row each
        chunk = READ_BATCHES * batch_size if not attempt else 1
        items = _plan_items(plan, chunk, fs, root, result, seen)
        if items:
            _restore_pass(table, items, stage, workers=workers, batch_size=batch_size if not attempt else 1,
                          result=result, seen=seen)
        lost = sorted(expected - seen)
        if not lost or attempt == retry_passes:
            break
        log.warning("restore: %d rows came back from no batch (a lost node or a batch that failed for good); "
                    "pass %d takes them one per batch", len(lost), attempt + 2)
        plan = table.plan(keys=lost, explicit=True)
    for k in sorted(expected - seen):
        result.failures.append({"key": k, "error_type": "BatchFailed",
                                "message": "its batch failed after Ray's retries and the run's retry passes "
                                           "(see the Ray logs); restore it again with --keys"})
        seen.add(k)
    if keys is not None:
        result.missing = sorted(set(keys) - seen)
    result.requested = len(seen) + len(result.missing)
    result.seconds = time.perf_counter() - t0
    return result


def _plan_items(plan: list, chunk: int, fs, root: str, result: RestoreResult, seen: set[str]) -> list[dict]:
    """Read items of at most ``chunk`` keys each, from an explicit plan; keys that would escape the destination are
    refused here (and checked again where files are written)."""
    from .storage import safe_join

    items = []
    for path, keys in plan:
        safe = []
        for k in keys:
            try:
                safe_join(root, k, fs=fs)
                safe.append(k)
            except UnsafeKey as e:
                result.failures.append({"key": k, "error_type": "UnsafeKey", "message": str(e)})
                seen.add(k)
        items += [{"path": path, "keys": json.dumps(safe[i:i + chunk])} for i in range(0, len(safe), chunk)]
    return items


def _restore_pass(table, items: list[dict], stage: dict, *, workers: int | None, batch_size: int,
                  result: RestoreResult, seen: set[str]) -> None:
    """One Ray Data pass: read the planned rows, decode and write them on the actor pool, tally the outcomes.
    Rows of a block that failed for good come back in no outcome (the caller retries or reports them)."""
    import ray.data

    from .runtime import actor_pool_args, patient_execution, plan_pool, quiet_remote_args_notice, tolerate_failed_blocks
    from .stages import RestoreActor, read_rows

    # per pass: a retry pass sizes its pool on the nodes that are left (and for the blocks it has)
    plan = plan_pool(workers, inputs=len(items))
    with tolerate_failed_blocks(), patient_execution():  # set before the dataset exists (Ray Data snapshots it)
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        ds = ds.map_batches(read_rows, batch_size=1, batch_format="pyarrow", num_cpus=plan.decode_cpus,
                            fn_kwargs={"table": table})
        with quiet_remote_args_notice():
            ds = ds.map_batches(RestoreActor, batch_size=batch_size, batch_format="pyarrow",
                                fn_constructor_kwargs=stage, **actor_pool_args(plan))
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            for r in batch.to_pylist():
                if r["key"] in seen:  # a block Ray ran twice (a retried task whose first result also arrived)
                    continue
                seen.add(r["key"])
                if r["ok"]:
                    result.restored += 1
                else:
                    result.failures.append({"key": r["key"], "error_type": r["error_type"], "message": r["message"]})
