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
from .errors import CorruptStream, ModelError, UnsupportedVersion
from .quantize import QuantParams, centred
from .registry import Registry
from .weights import WEIGHTS_DIR


class LatentCoder(Protocol):
    id: int
    name: str

    # ``laws``: what ``rd_quantize`` recorded while choosing these symbols (None: compute them)
    def encode(self, symbols: np.ndarray, qp: QuantParams, laws=None) -> tuple[bytes, bytes]: ...  # (side, payload)

    def check_side(self, side: bytes, qp: QuantParams) -> None: ...  # CorruptStream before any network runs

    def decode(self, side: bytes, payload: bytes, qp: QuantParams, shape: tuple[int, int, int]) -> np.ndarray: ...

    def ideal_bits(self, symbols: np.ndarray, qp: QuantParams, laws=None) -> tuple[float, int]: ...  # (bits, side B)

    #: RD-optimised rounding strength new streams get by default (0: plain rounding)
    default_rdoq: float
    #: whether the coder can price a symbol before coding it, and so offers ``rd_quantize``
    prices_symbols: bool

    # symbols chosen for rate and distortion together, filling ``laws`` (a list) with what ``encode`` /
    # ``ideal_bits`` can then reuse; only where ``prices_symbols``
    def rd_quantize(self, latent: np.ndarray, qp: QuantParams, strength: float, laws: list | None = None
                    ) -> np.ndarray: ...


class PerChannelCoder:
    id, name = entropy.ENTROPY_MODEL_ID, "per-channel"
    default_rdoq = 0.0  # its laws are fitted to the symbols after quantization: nothing to price them with before
    prices_symbols = False

    def rd_quantize(self, latent, qp, strength, laws=None):
        raise NotImplementedError("the per-channel model cannot price symbols before coding them")

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
    """A learned context model shipped in ``codec/weights/<name>/``, its weight file's SHA-256 pinned here;
    loaded (and the hash checked) on first use, since every codec imports this module."""

    prices_symbols = True

    def __init__(self, model_id: int, name: str, sha256: str, default_rdoq: float = 1.0):
        self.id, self.name, self.sha256, self.default_rdoq = model_id, name, sha256, default_rdoq
        self._model = None

    @property
    def model(self):
        if self._model is None:
            from .context_model import ContextEntropyModel

            self._model = ContextEntropyModel.load(WEIGHTS_DIR / self.name, sha256=self.sha256)
            if self._model.id != self.id:
                raise ModelError(f"{self.name}: the shipped model says id {self._model.id}, streams say {self.id}")
        return self._model

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


#: entropy models by name (``--entropy-model``) and by the id streams carry
ENTROPY_MODELS: Registry[LatentCoder] = Registry("entropy model", error=ValueError,
                                                  id_error=UnsupportedVersion)
ENTROPY_MODELS.add(PerChannelCoder.name, PerChannelCoder(), id=PerChannelCoder.id)
ENTROPY_MODELS.add("tae-f2-ctx", ContextCoder(
    3, "tae-f2-ctx", "800768fb2ecbbb7691dc6fd39220ca54b4025106dab2278ce0670fee02249322"), id=3)
# the context model of the fine-tuned autoencoder tae-f2-ft (stage 3), trained on its latents; plain rounding
# by default: with this model RD-optimised rounding cost LPIPS for its bits (docs/training.md). Id 5, because
# the research context models kept in docs/results were written with id 4 and must stay loadable as ctx:<folder>
ENTROPY_MODELS.add("tae-f2-ft-ctx", ContextCoder(
    5, "tae-f2-ft-ctx", "cc547c651680bd69c2f45a9c21868bae929c47e3ea468ce203a6419ef7076699", default_rdoq=0.0), id=5)
# the first context model, trained on evaluation photos: kept so that streams carrying id 2 decode
ENTROPY_MODELS.add("tae-f2-ctx-v1", ContextCoder(
    2, "tae-f2-ctx-v1", "483bc374226e7a06546c4a14ca2e6eefe3f3d1a6e4f0c3422d74fbb743fc7e29"), id=2)


FOLDER_PREFIX = "ctx"


@ENTROPY_MODELS.register_prefix(FOLDER_PREFIX)
class FolderContextCoder(ContextCoder):
    """``ctx:<folder>``: a context model ``train-entropy`` wrote (stage 3, research), loaded now. It codes with
    the id it was trained for, which must not be a shipped model's: its streams decode only with a codec built
    with this same coder (``NeuralCodec`` prefers its own coder for its id), never with a shipped model."""

    def __init__(self, folder: str):
        from .context_model import ContextEntropyModel

        model = ContextEntropyModel.load(folder)
        try:
            taken = ENTROPY_MODELS.by_id(model.id).name
        except UnsupportedVersion:
            taken = None
        if taken is not None:
            raise ModelError(f"{folder}: its id {model.id} is the shipped {taken!r} model's; retrain it with a "
                             "free --model-id so its streams can never be taken for that model's")
        super().__init__(model.id, f"{FOLDER_PREFIX}:{folder}", "")
        self._model = model


def coder(name: str) -> LatentCoder:
    return ENTROPY_MODELS.get(name)


def coder_for_id(model_id: int) -> LatentCoder:
    return ENTROPY_MODELS.by_id(model_id)
