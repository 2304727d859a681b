"""What one image cost to encode: the actor process's CPU seconds and, on CUDA, the GPU's wall seconds.

CPU seconds are ``time.process_time`` deltas: every thread of the actor process (torch intra-op threads, libavif
or libjxl workers), not the wall clock, so a busy machine's waiting is not billed. Ray's own threads in the actor
run too and add a little. GPU seconds are the wall time between two ``torch.cuda.synchronize`` calls around the
image: the device is held for that long, whatever share of it the kernels used. These are the row columns
``compute_s`` and ``gpu_s`` that ``savings.compute_cost`` prices.
"""

from __future__ import annotations

import time
from typing import NamedTuple


class Reading(NamedTuple):
    compute_s: float
    gpu_s: float | None  # None: the actor has no GPU


class ComputeClock:
    """``start()`` before an image's work, ``stop()`` after it: a :class:`Reading`."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self._cpu = self._wall = 0.0

    def _sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def start(self) -> None:
        self._sync()
        self._cpu, self._wall = time.process_time(), time.perf_counter()

    def stop(self) -> Reading:
        self._sync()
        wall = time.perf_counter() - self._wall
        return Reading(time.process_time() - self._cpu, wall if self.cuda else None)
