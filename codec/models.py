"""The model zoo: a name → a built autoencoder with verified weights.

As in CompressAI's zoo, a name resolves to weights with known hashes, so a stream that names ``tae-f2`` can
always be matched to exactly the weights that made it. Families add their :class:`ModelSpec` to
:data:`~latentarc.codec.autoencoder.MODELS` where they are defined; importing this module imports every family:
``tae-f2`` (``tae``), ``diffusers:<hub id or folder>`` (``diffusers_vae``) and the trained tae-f2 models
(``encoders``): learned encoders ``tae-f2-le:<folder>`` / shipped ones, and fine-tuned autoencoders
``tae-f2-ft:<folder>``.
"""

from __future__ import annotations

import os
import threading

import torch

from . import diffusers_vae, encoders, tae  # noqa: F401  (each family adds its specs to MODELS)
from .autoencoder import MODELS, LatentAutoencoder, ModelSpec
from .weights import resolve

__all__ = ["MODELS", "ModelSpec", "available", "spec", "resolve_weights", "load_model"]

_CACHE: dict[tuple, LatentAutoencoder] = {}
_LOCK = threading.Lock()


def available() -> list[str]:
    return MODELS.names()


def spec(name: str) -> ModelSpec:
    """The spec of ``name`` (``UnknownModel`` if no family claims it)."""
    return MODELS.get(name)


def resolve_weights(name: str, *, weights: str | os.PathLike | None = None) -> dict[str, "os.PathLike"]:
    """Find and verify every pinned weight file of the model ``name`` (role → path) without building it: a job
    checks this on the driver before it starts workers, so missing weights are one clear error, not one per actor.
    ``diffusers:…`` models pin no file (they resolve when built): ``{}``."""
    s = spec(name)
    return {role: resolve(wf, explicit=weights) for role, wf in s.weights.items()}


def load_model(name: str, *, weights: str | os.PathLike | None = None, device: str | torch.device | None = None,
               **options) -> LatentAutoencoder:
    """Build (once per process) the model ``name`` with verified weights, on ``device`` (default CPU).

    ``weights`` is an explicit file or folder; otherwise files resolve through ``$LATENTARC_MODEL_DIR``, the
    user cache, then a checked download (``codec.weights.resolve``).
    """
    device = torch.device(device or "cpu")
    key = (name, str(weights), str(device), tuple(sorted(options.items())))
    with _LOCK:
        if key not in _CACHE:
            s = spec(name)
            paths = resolve_weights(name, weights=weights)
            _CACHE[key] = s.build(s, dict(s.options, **options, paths=paths, weights=weights)).to(device)
        return _CACHE[key]
