"""Connecting to Ray and sizing the actor pools from what the cluster really has."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import threading
import warnings
from dataclasses import dataclass


LOOPBACK = "127.0.0.1"


def _is_loopback(address: str) -> bool:
    """Whether a ``host:port`` Ray address names this machine's loopback interface."""
    host = address.split("://", 1)[-1].rsplit(":", 1)[0]
    return host in (LOOPBACK, "localhost")


def loopback_only() -> None:
    """Keep a Ray on this machine on 127.0.0.1. Ray names a node by the machine's network address unless told
    otherwise: a local cluster then listens on every interface (its runtime-env agent on the network address),
    and a driver joining a loopback cluster rewrites 127.0.0.1 to the network address, where nothing listens, and
    waits for ever. Ray's switch for this is read when ``ray`` is imported, by the driver and by every process it
    starts, so it must be set before the first import. It only decides how a process names its own node."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def init_ray(address: str | None = None, *, num_cpus: int | None = None, progress: bool = True) -> None:
    """Join ``address`` (``auto``, ``ray://…``; default ``$RAY_ADDRESS``) or start a local Ray on this machine.

    A Ray already initialised in this process (tests, notebooks) is used as it is.
    """
    import logging

    address = address or os.environ.get("RAY_ADDRESS") or None
    if not address or _is_loopback(address):
        loopback_only()
    import ray

    if not ray.is_initialized():
        # Ray's and Ray Data's INFO lines (cluster start, execution plans) bury the run summary on a terminal;
        # warnings and errors still show, and the full logs stay in the session folder under /tmp/ray
        kwargs = {"log_to_driver": True, "include_dashboard": False, "logging_level": logging.WARNING}
        if address:
            if _is_loopback(address):  # a driver finds its raylet by node IP: a loopback cluster needs ours too
                kwargs["_node_ip_address"] = LOOPBACK
            ray.init(address=address, **kwargs)
        else:
            # the embedded cluster serves this machine only: it listens on loopback, not on the network
            ray.init(address="local", num_cpus=num_cpus, _node_ip_address=LOOPBACK,
                     _system_config=local_system_config(), **kwargs)
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = progress
    if not progress:
        logging.getLogger("ray.data").setLevel(logging.WARNING)


def local_system_config() -> dict:
    """Ray settings for a cluster this process starts on its own machine. Ray keeps only as many idle worker
    processes as the machine has CPUs and ends the rest after a second idle; a run's model actors count among
    them, so the workers of its read and write tasks were ended between stages and between a run's passes, and
    each next task waited for a fresh Python process (about 1.5 s here). Keeping up to 8 idle made the
    fault-and-retry scenario of tests/test_reliability.py 15% faster on 2 CPUs (44 s against 52 s, two runs
    each); an idle worker costs about 100 MB."""
    return {"num_workers_soft_limit": 8}


#: Deliberate fault tolerance for the model actors. Ray Data's defaults are unlimited restarts and retries
#: (max_restarts=-1, max_task_retries=-1), so one input that kills its actor every time (native crash, OOM
#: kill) would loop forever. Three restarts and three retries ride out a lost node or a transient OOM, then
#: the batch fails and the driver records its inputs as errors instead of losing or retrying them endlessly.
ACTOR_FAULT_TOLERANCE = {"max_restarts": 3, "max_task_retries": 3}


def actor_pool_args(plan: "PoolPlan") -> dict:
    """Keyword arguments for ``map_batches`` with a callable class on the planned pool."""
    from ray.data import ActorPoolStrategy

    return {
        # every actor that fits now starts up front and loads its model once (an autoscaling pool from one
        # actor cost +84% against a plain loop on 2 CPUs: the second actor came late in short runs) and stays
        # (with a floor of one, Ray Data retired an actor whenever small images briefly starved the pool: a
        # 300-image run lost its second actor after 16 s and went on at half speed); the pool may still grow to
        # plan.size when resources held elsewhere (another job, a pool still shutting down) come free, instead of
        # waiting forever for actors it cannot place
        "compute": ActorPoolStrategy(min_size=plan.initial, max_size=plan.size, initial_size=plan.initial),
        "num_cpus": plan.num_cpus,
        "num_gpus": plan.num_gpus,
        **ACTOR_FAULT_TOLERANCE,
    }


_OVERRIDES: dict[str, list] = {}  # DataContext attribute -> [saved value, holders]
_OVERRIDES_LOCK = threading.Lock()


@contextlib.contextmanager
def context_override(attr: str, value):
    """Set a global Ray Data context attribute for the duration; concurrent runs in one driver process (threads)
    share it, so the first holder saves the old value and the last one restores it (a plain save/restore would
    leave the override behind when two runs exit out of order)."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    with _OVERRIDES_LOCK:
        held = _OVERRIDES.setdefault(attr, [getattr(ctx, attr), 0])
        held[1] += 1
        setattr(ctx, attr, value)
    try:
        yield
    finally:
        with _OVERRIDES_LOCK:
            held[1] -= 1
            if held[1] == 0:
                setattr(ctx, attr, held[0])
                del _OVERRIDES[attr]


@contextlib.contextmanager
def tolerate_failed_blocks():
    """Let the run go on past a block whose task failed for good (Ray Data drops such blocks); the driver's
    accounting then retries or records the block's inputs. The default (0) would abort the whole run — and lose
    every other input's work — for one bad batch."""
    try:
        with context_override("max_errored_blocks", -1):
            yield
    finally:
        # drop any reference cycle still holding the pool's actor handles (a failed block's traceback can), so
        # the next run in this process (watch mode) finds the actors' CPUs free
        gc.collect()


@contextlib.contextmanager
def patient_execution():
    """No wall-clock abort for a slow run. Ray Data's default gives up on a dataset that moves no block for 30
    minutes (``execution_no_progress_timeout_s``) and the whole run is lost with it; one 6 MP image searched by
    ``--codec auto`` on a busy 2-CPU machine took longer than that (seen in a real run). Failures are handled
    by the actors' retries and the driver's accounting instead. Set before the dataset is created: Ray Data
    snapshots the context then."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    if "execution_no_progress_timeout_s" not in {f.name for f in dataclasses.fields(ctx)}:  # older Ray Data
        yield
        return
    with context_override("execution_no_progress_timeout_s", -1):
        yield


@contextlib.contextmanager
def quiet_remote_args_notice():
    """Ray ≥ 2.5x warns that remote args such as max_restarts move to named parameters by 2.64 (pinned below
    that in pyproject); the values above are deliberate, so the notice is silenced where they are passed."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated.*")
        yield


@dataclass(frozen=True)
class PoolPlan:
    """How many model actors, and what each asks the scheduler for."""

    size: int
    num_cpus: float
    num_gpus: float
    decode_cpus: float  # per decode task (and per write task)
    initial: int = 1  # actors that can be placed right now


    @property
    def device(self) -> str:
        return "cuda" if self.num_gpus else "cpu"


def plan_pool(workers: int | None = None, inputs: int | None = None) -> PoolPlan:
    """One actor per GPU when the cluster has GPUs; otherwise one per CPU, each holding 0.75 CPU so that
    decode tasks (0.25 CPU) can always be scheduled beside a full pool instead of starving behind it. Never more
    actors than ``inputs`` (the blocks the pool will get): each one loads a model for nothing otherwise."""
    import ray

    res, free = ray.cluster_resources(), ray.available_resources()
    gpus, cpus = int(res.get("GPU", 0)), float(res.get("CPU", 1))
    size = workers or gpus or max(1, int(cpus))
    if inputs is not None:
        size = min(size, max(1, inputs))
    if gpus:
        return PoolPlan(size=size, num_cpus=1.0, num_gpus=1.0, decode_cpus=1.0,
                        initial=_fits(size, float(free.get("GPU", 0)), 1.0))
    # leave room for read-and-decode tasks beside the pool (write tasks ask for no CPU)
    return PoolPlan(size=size, num_cpus=0.75, num_gpus=0.0, decode_cpus=0.25,
                    initial=_fits(size, float(free.get("CPU", 0)) - 0.5, 0.75))


def _fits(size: int, free: float, each: float) -> int:
    return max(1, min(size, int(free / each + 1e-9)))
