"""Entry points most callers need: open a codec by name, or the codec that a stream names."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch

from .neural import NeuralCodec
from .registry import load_model

if TYPE_CHECKING:
    from .base import ImageCodec

DEFAULT_CODEC = "tae-f2"


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_codec(
    name: str = DEFAULT_CODEC,
    *,
    weights: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    adaptive: bool = True,
    entropy_model: str = "per-channel",
    rdoq: float | None = None,
    verify_refine: bool = False,
    refiner=None,
    latent_search: int = 0,
) -> NeuralCodec:
    """A :class:`NeuralCodec` over the registry model ``name`` (weights verified, cached per process);
    ``entropy_model`` names how new streams are entropy-coded (``codec.latent_coding``), ``rdoq`` the strength of
    RD-optimised rounding (None: the entropy model's default; 0: plain rounding); ``verify_refine`` checks
    faithful refinement (with ``refiner``, default the codec's own) against each original and records the verdict
    in the stream (``codec.refine.Verdict``); ``latent_search`` the iterations of the encoder-side latent search
    (``codec.latent_search``; 0: the encoder's latent as it is)."""
    return NeuralCodec(load_model(name, weights=weights, device=device or default_device()), adaptive=adaptive,
                       entropy_model=entropy_model, rdoq=rdoq, verify_refine=verify_refine, refiner=refiner,
                       latent_search=latent_search)


def codec_for_stream(data: bytes, **kw) -> "ImageCodec":
    """The codec a stream was made with, after the envelope (magic, version, CRC) checks out: neural, classical
    or passthrough (dispatch on the stream's codec name through :func:`latentarc.codec.codecs.get_codec`)."""
    from .codecs import codec_for_stream as _dispatch

    return _dispatch(data, **kw)
