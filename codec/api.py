"""Entry points most callers need: open a codec by name, or the codec that a stream names."""

from __future__ import annotations

import os

import torch

from . import bitstream
from .neural import NeuralCodec
from .registry import load_model

DEFAULT_CODEC = "tae-f2"


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_codec(
    name: str = DEFAULT_CODEC,
    *,
    weights: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    adaptive: bool = True,
) -> NeuralCodec:
    """A :class:`NeuralCodec` over the registry model ``name`` (weights verified, cached per process)."""
    return NeuralCodec(load_model(name, weights=weights, device=device or default_device()), adaptive=adaptive)


def codec_for_stream(data: bytes, **kw) -> NeuralCodec:
    """The codec a stream was made with, after the envelope (magic, version, CRC) checks out."""
    return load_codec(bitstream.parse(data).codec, **kw)
