"""Deliberate faults for the crash-safety harness (tests/test_reliability.py), off unless a plan is given.

A compress or restore run can be told to kill its model actor's process the first time a batch holds a given
key (``os._exit``: no cleanup, as an OOM kill or a segfault would do; a marker file makes it happen once across
actor restarts), or to raise in every attempt at the batch holding a key (an application error that retries
cannot cure). The job must keep every input either way.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path


class FaultInjected(RuntimeError):
    """Raised by a fault plan; never by real code."""


@dataclass(frozen=True)
class FaultPlan:
    crash_actor_on: str | None = None
    raise_in_batch_with: str | None = None
    marker_dir: str | None = None

    def before_batch(self, keys: list[str]) -> None:
        if self.crash_actor_on in keys:
            # a stable name: str hashes are salted per process, and the restarted actor is another process
            tag = hashlib.sha256(self.crash_actor_on.encode()).hexdigest()[:12]
            marker = Path(self.marker_dir or "/tmp") / f"latentarc-crashed-{tag}"
            if not marker.exists():
                marker.touch()
                os._exit(137)
        if self.raise_in_batch_with in keys:
            raise FaultInjected(f"injected failure in the batch holding {self.raise_in_batch_with}")
