"""What a codec is, as a value: the name and build options the CLI reads once and Ray ships to every actor.

A :class:`CodecSpec` is frozen and made of plain values (names, numbers, a path), so it pickles and prints as it
is; ``codec.codecs.build`` turns it into a codec through the codec registry (``codec.base.CODECS``). Adding an
option means a field here, the codec that reads it, and its command-line flag (``jobs/cli.py``), nothing else:
the flag's destination has the field's name and :meth:`CodecSpec.from_args` picks it up.

Operating points (quality, target_bpp and the quality floors) are not part of the spec: one codec serves every
operating point.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["CodecSpec", "DEFAULT_AUTO_CODECS", "DEFAULT_CODEC", "ENCODER_PRECISIONS", "default_device"]

#: the codec new streams use when none is named: tae-f2 fine-tuned for rate, MSE and LPIPS with its own context
#: model (``codec.encoders.SHIPPED_FT``); streams of every other model keep decoding with their own
DEFAULT_CODEC = "tae-f2-ft"
#: the codecs ``auto`` tries when none are named
DEFAULT_AUTO_CODECS = (DEFAULT_CODEC, "avif", "jxl")

#: the choices of ``encoder_precision`` (``codec.precision``)
ENCODER_PRECISIONS = ("float32", "bfloat16")


@dataclass(frozen=True)
class CodecSpec:
    name: str = DEFAULT_CODEC
    #: explicit weight file or folder (else ``$LATENTARC_MODEL_DIR``, the user cache, a checked download)
    weights: str | None = None
    #: torch device; None: CUDA when present, else CPU
    device: str | None = None
    # ---- neural codecs (``codec.neural``)
    #: one quantization step for all channels (the baseline), instead of per-channel adaptive steps
    global_step: bool = False
    #: how new streams' latents are entropy-coded (``codec.latent_coding``; None: the model's own, per-channel for
    #: tae-f2); decoding follows the stream
    entropy_model: str | None = None
    #: RD-optimised rounding strength (None: the entropy model's default; 0: plain rounding)
    rdoq: float | None = None
    #: never code at a reduced resolution (``codec.neural.CODED_SCALES``): low bpp targets overshoot instead
    full_resolution: bool = False
    #: iterations of the encoder-side latent search (``codec.latent_search``; 0: off)
    latent_search: int = 0
    #: Hutchinson probes (decoder backward passes) per channel-sensitivity estimate (``quantize.decoder_sensitivity``)
    probes: int = 2
    #: arithmetic of the encoder and the sensitivity probes: float32, or bfloat16 (faster, slightly other streams;
    #: ``codec.precision``); decoding is always float32
    encoder_precision: str = "float32"
    #: check faithful refinement against each original at encode, and record the verdict in the stream
    verify_refine: bool = False
    #: check realistic refinement (K, eta) against each original at encode, and record the choice in the stream
    verify_realistic: bool = False
    #: the refiner those checks use (a ``codec.refine.REFINERS`` name or a train-refiner folder; None: the codec's
    #: own for each mode)
    refiner: str | None = None
    # ---- auto (``codec.codecs.AutoCodec``)
    #: the codecs auto chooses from, comma-separated (None: :data:`DEFAULT_AUTO_CODECS`)
    codecs: str | None = None

    def replace(self, **changes) -> "CodecSpec":
        return dataclasses.replace(self, **changes)

    def member(self, name: str) -> "CodecSpec":
        """The spec of one codec ``auto`` chooses from: the same options, another name."""
        return dataclasses.replace(self, name=name, codecs=None)

    @classmethod
    def from_args(cls, args, **overrides) -> "CodecSpec":
        """The spec of a parsed command line: every field whose name the namespace holds (``--entropy-model`` →
        ``entropy_model``), then ``overrides``."""
        given = vars(args)
        found = {f.name: given[f.name] for f in dataclasses.fields(cls) if f.name in given}
        return cls(**{**found, **overrides})


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
