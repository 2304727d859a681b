"""Entry points most callers need: open a neural codec over a model with Python objects, or the codec that a
stream names. Jobs build codecs from a :class:`~latentarc.codec.spec.CodecSpec` (``codec.codecs.build``)."""

from __future__ import annotations

import os

import torch

from .codecs import codec_for_stream
from .models import load_model
from .neural import NeuralCodec
from .spec import DEFAULT_CODEC, default_device

__all__ = ["DEFAULT_CODEC", "load_codec", "codec_for_stream", "default_device"]


def load_codec(
    name: str = DEFAULT_CODEC,
    *,
    weights: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    adaptive: bool = True,
    entropy_model: str | None = None,
    rdoq: float | None = None,
    verify_refine: bool = False,
    refiner=None,
    verify_realistic: bool = False,
    realistic_refiner=None,
    latent_search: int = 0,
    encoder_precision: str = "float32",
    full_resolution: bool = False,
) -> NeuralCodec:
    """A :class:`NeuralCodec` over the model ``name`` (weights verified, cached per process).

    ``entropy_model`` names how new streams are entropy-coded (``codec.latent_coding``; None: the model's own),
    ``rdoq`` the strength of RD-optimised rounding (None: the entropy model's default; 0: plain rounding);
    ``verify_refine`` checks faithful refinement (with ``refiner``, a refiner object or name, default the codec's
    own) against each original and records the verdict in the stream (``codec.verdicts``), ``verify_realistic``
    does the same for realistic refinement (with ``realistic_refiner``); ``latent_search`` the iterations of the
    encoder-side latent search (``codec.latent_search``; 0: the encoder's latent as it is);
    ``encoder_precision`` the arithmetic of the encoder-side passes (``codec.precision``); ``full_resolution``
    never codes a low ``target_bpp`` at a reduced resolution (``codec.neural.CODED_SCALES``)."""
    return NeuralCodec(load_model(name, weights=weights, device=device or default_device()), adaptive=adaptive,
                       entropy_model=entropy_model, rdoq=rdoq, verify_refine=verify_refine, refiner=refiner,
                       verify_realistic=verify_realistic, realistic_refiner=realistic_refiner,
                       latent_search=latent_search, encoder_precision=encoder_precision,
                       full_resolution=full_resolution)

