"""The archival job: list a source, archive what is new or changed, commit it, and report the savings.

Guarantees: every listed input ends as exactly one committed row or error (the driver checks the keys that came
back against the keys it sent, gives any shortfall one more pass, one input per batch, and records what still
failed as an error rather than losing it); a run's parts become visible together through one commit record; a
crashed run leaves only invisible orphans, and re-running it archives what it had not committed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from latentarc.codec.spec import CodecSpec

from .savings import DEFAULT_PRICE_PER_CPU_HOUR, DEFAULT_PRICE_PER_GB_MONTH, DEFAULT_PRICE_PER_GPU_HOUR, build_report

log = logging.getLogger("latentarc.compress")


@dataclass
class CompressOptions:
    #: the codec every actor builds (codec.spec.CodecSpec; a name alone is that codec with default options):
    #: neural, avif/jxl/webp/jpeg, passthrough, jpeg-exact, lossless (the --lossless policy: nothing changes a
    #: pixel), or auto (per image, the smallest stream among ``spec.codecs`` meeting the min_psnr / min_ms_ssim /
    #: max_lpips / max_dists floors, else the original file or its jpeg-exact transcode)
    codec: CodecSpec | str = field(default_factory=CodecSpec)
    quality: float | None = None
    target_bpp: float | None = None
    min_psnr: float | None = None
    min_ms_ssim: float | None = None
    max_lpips: float | None = None  # perceptual floors (codec.floors); rows then carry the lpips / dists measured
    max_dists: float | None = None
    workers: int | None = None
    batch_size: int = 1  # images per actor call: images are encoded one at a time, so 1 balances load best
    rows_per_part: int = 64  # Parquet part size: the sink buffers this many rows before writing a part
    max_pixels: int | None = None
    retry_errors: bool = False
    #: passes after the first over inputs that came back from no batch (a lost node, a batch that failed after
    #: Ray's retries), one input per batch; what still fails is recorded as a BatchFailed error
    retry_passes: int = 1
    price_per_gb_month: float = DEFAULT_PRICE_PER_GB_MONTH
    price_per_cpu_hour: float = DEFAULT_PRICE_PER_CPU_HOUR  # prices the rows' compute_s / gpu_s (savings.py)
    price_per_gpu_hour: float = DEFAULT_PRICE_PER_GPU_HOUR
    ms_ssim: bool = True
    extensions: set[str] | None = None
    #: crash-safety harness hooks (pipeline/faults.py): a FaultPlan for the actors, and a callable run after the
    #: parts are written and before the commit
    faults: object = field(default=None, repr=False)
    before_commit: object = field(default=None, repr=False)

    def __post_init__(self):
        if isinstance(self.codec, str):
            self.codec = CodecSpec(self.codec)
        from latentarc.codec.latent_coding import ENTROPY_MODELS

        chosen = self.codec.entropy_model
        if chosen is not None and chosen not in ENTROPY_MODELS:  # a ctx:<folder> research model
            raise ValueError(f"archives use a shipped entropy model ({', '.join(ENTROPY_MODELS)}), not "
                             f"{chosen!r}: its streams would decode only beside that folder")
        # checked here, not in every actor: a bad option fails the job before it starts (LatentSearch validates)
        from latentarc.codec.latent_search import LatentSearch

        LatentSearch(self.codec.latent_search)


def pending(listing, table, *, retry_errors: bool, records: list[dict] | None = None):
    """Objects that are new or changed (size or ETag differ) relative to what the table already holds.

    Inputs that failed before and have not changed are skipped too (their error is on record) unless
    ``retry_errors``; a changed object is always retried. ``records``: the commit-log snapshot to plan against
    (``table.committed()``; default: now).
    """
    done = dict(table.index(records))
    if not retry_errors:
        errs = table.errors(records=records)
        if errs.num_rows:
            for k, size, etag in zip(errs["key"].to_pylist(), errs["source_size"].to_pylist(), errs["source_etag"].to_pylist()):
                done.setdefault(k, (size, etag))
    todo, skipped = [], 0
    for o in listing:
        prev = done.get(o.key)
        if prev is not None and prev[0] == o.size and prev[1] == o.etag:
            skipped += 1
        else:
            todo.append(o)
    return todo, skipped


def _archive_pass(todo: list, opts: CompressOptions, *, run_id: str, table_uri: str, source_options: dict | None,
                  table_options: dict | None, batch_size: int) -> list:
    """One Ray Data pass over ``todo``: read and decode, encode on the actor pool, write uncommitted parts.
    Returns the parts written (``WrittenPart``); inputs of a block that failed for good are in none of them."""
    import ray.data

    from latentarc.codec.codecs import capabilities
    from latentarc.codec.images import DEFAULT_MAX_PIXELS

    from .runtime import actor_pool_args, patient_execution, plan_pool, quiet_remote_args_notice, tolerate_failed_blocks
    from .sink import ArchiveSink
    from .stages import EncodeActor, read_and_decode

    # per pass: a retry pass sizes its pool on the nodes that are left (and for the inputs it has)
    plan = plan_pool(opts.workers, inputs=len(todo))
    knobs = {"quality": opts.quality, "target_bpp": opts.target_bpp, "min_psnr": opts.min_psnr,
             "min_ms_ssim": opts.min_ms_ssim, "max_lpips": opts.max_lpips, "max_dists": opts.max_dists}
    # before the dataset exists: Ray Data snapshots the context at creation
    with tolerate_failed_blocks(), patient_execution():
        # one image per block (up to 50k blocks): an actor that draws large images must not hold others back
        n_blocks = max(1, min(len(todo), 50_000))
        ds = ray.data.from_items([asdict(o) for o in todo], override_num_blocks=n_blocks)
        ds = ds.map_batches(
            read_and_decode,
            batch_size=batch_size,
            batch_format="pyarrow",
            num_cpus=plan.decode_cpus,
            fn_kwargs={"storage_options": source_options, "run_id": run_id,
                       "max_pixels": opts.max_pixels or DEFAULT_MAX_PIXELS,
                       # passthrough, jpeg-exact, lossless and auto may store the original bytes
                       "keep_source": capabilities(opts.codec.name).keeps_source},
        )
        with quiet_remote_args_notice():
            ds = ds.map_batches(
                EncodeActor,
                batch_size=batch_size,
                batch_format="pyarrow",
                fn_constructor_kwargs={"spec": opts.codec, "knobs": knobs,
                                       "run_id": run_id, "ms_ssim": opts.ms_ssim, "faults": opts.faults},
                **actor_pool_args(plan),
            )
        sink = ArchiveSink(table_uri, table_options, run_id, rows_per_part=opts.rows_per_part)
        # the write tasks ask for no CPU (they write Parquet: I/O and a little encoding). At the default 1 CPU they
        # could never be placed beside a full pool (2 × 0.75 of 2 CPUs) and the run waited forever for its own
        # sink; at a decode task's 0.25 they waited behind the read tasks, which took the room left beside the
        # pool, so encoded rows piled up in the object store until the last input was read
        ds.write_datasink(sink, ray_remote_args={"num_cpus": 0})
    return sink.result


def run_compress(
    src: str,
    table_uri: str,
    opts: CompressOptions,
    *,
    source_options: dict | None = None,
    table_options: dict | None = None,
) -> dict:
    """Run one pass; returns the savings report (also written to ``TABLE/_reports/<run>.json``)."""
    from .table.schema import ERRORS_SCHEMA, ErrorRow, WrittenPart, rows_to_table
    from .storage import list_source
    from .table import BitstreamTable

    t0 = time.perf_counter()
    table = BitstreamTable(table_uri, table_options)
    run_id = table.new_run_id()
    listing = list_source(src, source_options, extensions=opts.extensions)
    # one snapshot of the commit log for planning; the commit re-plans against whatever lands after it
    records = table.committed()
    base = records[-1]["seq"] if records else 0
    todo, skipped = pending(listing, table, retry_errors=opts.retry_errors, records=records)
    log.info("run %s: %d listed, %d unchanged, %d to archive", run_id, len(listing), skipped, len(todo))

    parts: list[WrittenPart] = []
    left = todo
    for attempt in range(1 + max(0, opts.retry_passes)):
        if not left:
            break
        if attempt:
            log.warning("run %s: %d inputs came back from no batch (a lost node or a batch that failed for good); "
                        "pass %d takes them one per batch", run_id, len(left), attempt + 1)
        # a retry pass takes one input per batch: a failing batch then holds only the input that fails it
        parts += _archive_pass(left, opts, run_id=run_id, table_uri=table_uri, source_options=source_options,
                               table_options=table_options, batch_size=opts.batch_size if not attempt else 1)
        # account for every input: anything that came back neither as a row nor as an error is retried, then
        # recorded, never lost
        returned = {k for p in parts for k in p.keys} | {k for p in parts for k in p.error_keys}
        left = [o for o in left if o.key not in returned]
    if left:
        now = datetime.now(timezone.utc)
        lost = [ErrorRow(key=o.key, source_uri=o.uri, source_size=o.size, source_etag=o.etag, stage="pipeline",
                         error_type="BatchFailed", at=now, run_id=run_id,
                         message="its batch failed after Ray's retries and the run's retry passes (see the Ray logs); "
                                 "re-run with --retry-errors")
                for o in left]
        path = table.write_part(run_id, "errors", rows_to_table([e.as_dict() for e in lost], ERRORS_SCHEMA))
        parts.append(WrittenPart(error_files=(path,), error_keys=tuple(o.key for o in left)))
    data_files = [f for p in parts for f in p.data_files]
    error_files = [f for p in parts for f in p.error_files]
    n_rows = sum(len(p.keys) for p in parts)
    n_errors = sum(len(p.error_keys) for p in parts)
    if callable(opts.before_commit):
        opts.before_commit()
    stored = table.stored_bytes(data_files + error_files)
    report = build_report(run_id=run_id, source=src, table=table_uri, listed=len(listing), skipped=skipped,
                          parts=parts, errors=n_errors, stored_bytes=stored, seconds=time.perf_counter() - t0,
                          price_per_gb_month=opts.price_per_gb_month,
                          price_per_cpu_hour=opts.price_per_cpu_hour, price_per_gpu_hour=opts.price_per_gpu_hour,
                          extra={"codec": opts.codec.name, "knobs": {k: v for k, v in
                                 {"quality": opts.quality, "target_bpp": opts.target_bpp,
                                  "min_psnr": opts.min_psnr, "min_ms_ssim": opts.min_ms_ssim,
                                  "max_lpips": opts.max_lpips, "max_dists": opts.max_dists}.items() if v is not None}})
    if data_files or error_files:
        done = table.commit(run_id, data_files, error_files, rows=n_rows, errors=n_errors, report=report,
                            base=base)
        if done.dropped_rows or done.dropped_errors:
            # a concurrent run committed these keys first: its rows stay current, ours were left out
            report["rows"], report["errors"] = done.rows, done.errors
            report["concurrent"] = {"dropped_rows": len(done.dropped_rows),
                                    "dropped_errors": len(done.dropped_errors), "commit_attempts": done.attempts}
    table.write_report(run_id, report)
    return report


def watch(src: str, table_uri: str, opts: CompressOptions, interval: float, *, iterations: int | None = None,
          on_report=None, **kw) -> list[dict]:
    """Stream mode: poll the source every ``interval`` seconds and archive what arrived (``iterations`` bounds
    the loop for tests; ``None`` runs until interrupted)."""
    reports = []
    i = 0
    while iterations is None or i < iterations:
        r = run_compress(src, table_uri, opts, **kw)
        reports.append(r)
        if on_report:
            on_report(r)
        i += 1
        if iterations is None or i < iterations:
            time.sleep(interval)
    return reports
