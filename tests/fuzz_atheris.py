"""Coverage-guided (libFuzzer) fuzzing of the stream parsers with atheris - not collected by pytest.

Run directly (``tests/test_fuzz.py::test_atheris_harness_runs_clean`` runs it for a bounded number of runs)::

    LATENTARC_MODEL_DIR=../shared/models python tests/fuzz_atheris.py -runs=20000 [corpus_dir]

Each input is tried twice: as it is (the envelope checks must catch it) and with a freshly computed CRC-32C over
everything but its last 4 bytes (so the structural checks behind the CRC are reached). Parsing goes through
``bitstream.parse``, ``NeuralCodec.parse`` and ``NeuralCodec.info`` (which entropy-decodes the payload); any
exception that is not a latentarc typed error is a crash. The decoder network is not run (too slow for
libFuzzer's loop); ``tests/test_fuzz.py`` covers full decodes with Hypothesis.
"""

from __future__ import annotations

import os
import struct
import sys

import atheris

# heavy dependencies first, uninstrumented: only latentarc's own parse code is instrumented
import constriction  # noqa: F401
import google_crc32c  # noqa: F401
import numpy  # noqa: F401
import PIL.Image  # noqa: F401
import torch  # noqa: F401

with atheris.instrument_imports(include=["latentarc"]):
    from latentarc.codec import bitstream, entropy, quantize  # noqa: F401
    from latentarc.codec.errors import LatentarcError
    from latentarc.codec.neural import NeuralCodec

from latentarc.codec.models import load_model  # noqa: E402

#: small pixel guard: forged sizes stay cheap to entropy-decode inside the fuzzing loop
CODEC = NeuralCodec(load_model("tae-f2", device="cpu"), max_pixels=1 << 16)
#: this process' own memory high-water mark may not pass this (run with -rss_limit_mb=0: libFuzzer's check
#: reads ru_maxrss, which a child inherits from its parent across fork+exec on Linux)
RSS_LIMIT_MB = int(os.environ.get("LATENTARC_FUZZ_RSS_LIMIT_MB", "2048"))


def _vm_hwm_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _one(data: bytes) -> None:
    try:
        bitstream.parse(data)
    except LatentarcError:
        return
    try:
        CODEC.info(data)  # NeuralCodec.parse + entropy decode of the payload
    except LatentarcError:
        pass


def TestOneInput(data: bytes) -> None:  # noqa: N802 - atheris' name
    _one(data)
    if len(data) > 4:
        body = data[:-4]
        _one(body + struct.pack("<I", bitstream.crc32c(body)))
    hwm = _vm_hwm_mb()
    if hwm > RSS_LIMIT_MB:
        raise MemoryError(f"memory high-water mark {hwm:.0f} MB passed {RSS_LIMIT_MB} MB on this input")


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
