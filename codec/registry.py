"""Model registry: a name → how to build the autoencoder and which pinned weight files it needs.

As in CompressAI's zoo, a name resolves to weights with known hashes, so a stream that names ``tae-f2`` can
always be matched to exactly the weights that made it. Families register a builder with :func:`register`;
names of the form ``diffusers:<hub id or folder>`` build a diffusers VAE on demand (see ``diffusers_vae``).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Callable

import torch

from .autoencoder import LatentAutoencoder
from .errors import ModelError, UnknownModel
from .weights import WeightFile, resolve

_TAESD_BASE = "https://github.com/madebyollin/taesd/raw/main/"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    weights: dict[str, WeightFile] = field(default_factory=dict)
    build: Callable[["ModelSpec", dict], LatentAutoencoder] | None = None
    options: dict = field(default_factory=dict)


_REGISTRY: dict[str, ModelSpec] = {}
_PREFIX_BUILDERS: dict[str, Callable[[str, dict], LatentAutoencoder]] = {}
_CACHE: dict[tuple, LatentAutoencoder] = {}
_LOCK = threading.Lock()


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def register_prefix(prefix: str):
    """Decorator: ``prefix:<ref>`` names are built by the decorated ``fn(ref, options)``."""

    def deco(fn):
        _PREFIX_BUILDERS[prefix] = fn
        return fn

    return deco


def available() -> list[str]:
    return sorted(_REGISTRY) + [f"{p}:<ref>" for p in sorted(_PREFIX_BUILDERS)]


def spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModel(f"unknown model {name!r}; known: {', '.join(available())}") from None


def resolve_weights(name: str, *, weights: str | os.PathLike | None = None) -> dict[str, "os.PathLike"]:
    """Find and verify every weight file of the registered model ``name`` without building it: a job checks
    this on the driver before it starts workers, so missing weights are one clear error, not one per actor.
    Prefix names (``diffusers:…``) resolve when built; they return ``{}`` here."""
    prefix, _, ref = name.partition(":")
    if ref and prefix in _PREFIX_BUILDERS:
        return {}
    s = spec(name)
    return {role: resolve(wf, explicit=weights) for role, wf in s.weights.items()}


def load_model(
    name: str,
    *,
    weights: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    **options,
) -> LatentAutoencoder:
    """Build (once per process) the model ``name`` with verified weights, on ``device`` (default CPU).

    ``weights`` is an explicit file or folder; otherwise files resolve through ``$LATENTARC_MODEL_DIR``, the
    user cache, then a checked download (``codec.weights.resolve``).
    """
    device = torch.device(device or "cpu")
    key = (name, str(weights), str(device), tuple(sorted(options.items())))
    with _LOCK:
        if key not in _CACHE:
            prefix, _, ref = name.partition(":")
            if ref and prefix in _PREFIX_BUILDERS:
                model = _PREFIX_BUILDERS[prefix](ref, dict(options, weights=weights))
            else:
                s = spec(name)
                paths = {role: resolve(wf, explicit=weights) for role, wf in s.weights.items()}
                model = s.build(s, dict(s.options, **options, paths=paths))
            _CACHE[key] = model.to(device)
        return _CACHE[key]


def _build_tae(s: ModelSpec, opts: dict) -> LatentAutoencoder:
    from .tae import TinyAutoencoder

    paths = opts.pop("paths")

    def load(p):
        try:  # weights_only: a checkpoint is tensors, never code; a pickle that wants more is refused
            return torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - UnpicklingError, truncated zip, ...: one typed error
            raise ModelError(f"{p}: not a loadable weights-only checkpoint ({type(e).__name__})") from None
    return TinyAutoencoder(
        s.name,
        load(paths["encoder"]),
        load(paths["decoder"]),
        decoder_sha256=s.weights["decoder"].sha256,
        **opts,
    )


register(
    ModelSpec(
        name="tae-f2",
        description="Tiny AutoEncoder for the FLUX.2 VAE latent space (32 ch, 1/8 res), MIT, madebyollin/taesd",
        weights={
            "encoder": WeightFile(
                "taef2_encoder.pth",
                _TAESD_BASE + "taef2_encoder.pth",
                "10a4e1021e89d7551eaf161352da8dbd0b1aa83872ae28b150c1df1ce2f147b6",
            ),
            "decoder": WeightFile(
                "taef2_decoder.pth",
                _TAESD_BASE + "taef2_decoder.pth",
                "0a44a31e1ae59eb9dbf9359d24942fd3ef5928162c1800d97a28c61d51be0ab5",
            ),
        },
        build=_build_tae,
        options={"latent_channels": 32, "groupnorm_deep": True},
    )
)
from . import diffusers_vae  # noqa: E402,F401  (registers the "diffusers:" prefix)
from . import encoders  # noqa: E402,F401  (registers "tae-f2-le:<folder>" and the shipped learned encoders)
