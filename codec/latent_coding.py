"""Entropy coders for quantized latents, by name and by the id a stream carries.

Two kinds: the per-channel parametric model (``entropy.py``: three integers of side information per channel,
one law per channel) and learned context models (``context_model.py``: no side information, one law per
symbol, predicted from what is already decoded). The stream's ``entropy_model`` id picks the decoder, so old
streams stay decodable when the default changes.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from . import entropy
from .errors import CorruptStream, UnsupportedVersion
from .quantize import QuantParams, centred


class LatentCoder(Protocol):
    id: int
    name: str

    # ``laws``: what ``rd_quantize`` recorded while choosing these symbols (None: compute them)
    def encode(self, symbols: np.ndarray, qp: QuantParams, laws=None) -> tuple[bytes, bytes]: ...  # (side, payload)

    def check_side(self, side: bytes, qp: QuantParams) -> None: ...  # CorruptStream before any network runs

    def decode(self, side: bytes, payload: bytes, qp: QuantParams, shape: tuple[int, int, int]) -> np.ndarray: ...

    def ideal_bits(self, symbols: np.ndarray, qp: QuantParams, laws=None) -> tuple[float, int]: ...  # (bits, side B)

    #: RD-optimised rounding strength new streams get by default (0: plain rounding); coders that can price a
    #: symbol before coding it implement ``rd_quantize(latent, qp, strength, laws=None) -> symbols``, filling
    #: ``laws`` (a list) with what ``encode`` / ``ideal_bits`` can then reuse
    default_rdoq: float


class PerChannelCoder:
    id, name = entropy.ENTROPY_MODEL_ID, "per-channel"
    default_rdoq = 0.0  # its laws are fitted to the symbols after quantization: nothing to price them with before

    def _models(self, symbols):
        return [entropy.fit(s) for s in symbols.reshape(symbols.shape[0], -1)]

    def encode(self, symbols, qp, laws=None):
        models = self._models(symbols)
        return entropy.pack_models(models), entropy.encode(symbols.reshape(symbols.shape[0], -1), models)

    def check_side(self, side, qp):
        entropy.unpack_models(side, qp.channels)  # range checks

    def decode(self, side, payload, qp, shape):
        models = entropy.unpack_models(side, qp.channels)
        return entropy.decode(payload, models, shape[1] * shape[2]).reshape(shape)

    def ideal_bits(self, symbols, qp, laws=None):
        models = self._models(symbols)
        flat = symbols.reshape(symbols.shape[0], -1)
        return sum(entropy.ideal_bits(s, m) for s, m in zip(flat, models)), len(entropy.pack_models(models))


class ContextCoder:
    """A learned context model; loaded lazily (the registry is imported by every codec)."""

    def __init__(self, model_id: int, name: str, default_rdoq: float = 1.0):
        self.id, self.name, self.default_rdoq = model_id, name, default_rdoq

    @property
    def model(self):
        from .context_model import by_id

        return by_id(self.id)

    def encode(self, symbols, qp, laws=None):
        return b"", self.model.encode(symbols, qp.steps, laws)

    def check_side(self, side, qp):
        if side:
            raise CorruptStream("the context entropy model carries no side information")

    def decode(self, side, payload, qp, shape):
        self.check_side(side, qp)
        return self.model.decode(payload, qp.steps, shape)

    def ideal_bits(self, symbols, qp, laws=None):
        return self.model.ideal_bits(symbols, qp.steps, laws), 0

    def rd_quantize(self, latent: np.ndarray, qp: QuantParams, strength: float, laws: list | None = None) -> np.ndarray:
        """Symbols minimising ``(u − q)² + strength · (ln 2 / 6) · bits`` per symbol (``u``: the centred latent in
        step units); ``strength`` 1 is the high-rate slope of a uniform quantizer."""
        return self.model.rd_quantize(centred(latent, qp), qp.steps.astype(np.int64),
                                      strength * math.log(2) / 6, laws).astype(np.int32)


_CODERS = [PerChannelCoder(), ContextCoder(2, "tae-f2-ctx")]
BY_NAME = {c.name: c for c in _CODERS}
BY_ID = {c.id: c for c in _CODERS}


def coder(name: str) -> LatentCoder:
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown entropy model {name!r}; known: {', '.join(BY_NAME)}") from None


def coder_for_id(model_id: int) -> LatentCoder:
    try:
        return BY_ID[model_id]
    except KeyError:
        raise UnsupportedVersion(f"entropy model id {model_id} is not known to this build") from None
