"""The interface every latent autoencoder implements, whatever its family (TAE, diffusers VAEs), and the
registry of model specs (:data:`MODELS`) the families add themselves to.

The codec only needs: images in [0, 1] → latents at 1/``downscale`` resolution, latents → images, and a
fingerprint of the *decoder* weights, which streams carry so that an archive can never be decoded by a model
that would give other pixels.
"""

from __future__ import annotations

import abc
import hashlib
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from .errors import UnknownModel
from .registry import Registry
from .weights import WeightFile


class LatentAutoencoder(nn.Module, abc.ABC):
    """Images (N, 3, H, W) in [0, 1], H and W multiples of ``downscale``  ⇄  latents (N, C, H/d, W/d)."""

    #: registry name, written into streams
    name: str
    latent_channels: int
    downscale: int = 8
    #: lower precisions the *encoder-side* passes can run in (``encode`` and ``decode_unclamped``, which only
    #: choose which stream is written); ``decode``, which reconstructs an archive's pixels, is always float32
    fast_dtypes: frozenset = frozenset()

    @property
    @abc.abstractmethod
    def fingerprint(self) -> str:
        """Hex SHA-256 identifying the decoder weights."""

    @abc.abstractmethod
    def encode(self, images: torch.Tensor, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Latents in float32; ``dtype``: float32 or one of :attr:`fast_dtypes` for the network's arithmetic."""

    @abc.abstractmethod
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Return images in [0, 1] (clamped)."""

    def decode_unclamped(self, latents: torch.Tensor, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The decoder's output before its final clamp (what sensitivity probes differentiate); families whose
        decoder has no such clamp decode as usual. ``dtype`` as for :meth:`encode`."""
        return self.decode(latents)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def decoded_error_grad(self, latents: torch.Tensor, images: torch.Tensor,
                           weight: torch.Tensor) -> tuple[float, torch.Tensor]:
        """Weighted sum of squared errors of ``decode(latents)`` against ``images`` (``weight``: (N, 1, H, W)),
        and its gradient with respect to ``latents``: what the encoder-side latent search
        (``codec.latent_search``) descends. This default keeps the whole decoder graph in memory; autoencoders
        with tiled decoders override it to bound memory by the tile."""
        with torch.enable_grad():
            z = latents.detach().requires_grad_(True)
            err = ((self.decode(z) - images) ** 2 * weight).sum()
            (grad,) = torch.autograd.grad(err, z)
        return float(err.detach()), grad


def state_dict_fingerprint(module: nn.Module) -> str:
    """SHA-256 over a module's tensors (names, dtypes, shapes, bytes), independent of the file format."""
    return tensors_fingerprint(module.state_dict())


def tensors_fingerprint(state: dict) -> str:
    """SHA-256 over named tensors (names, dtypes, shapes, bytes), independent of the file format."""
    h = hashlib.sha256()
    for key, t in sorted(state.items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@dataclass(frozen=True)
class ModelSpec:
    """One model name: its pinned weight files and how to build it from them.

    ``build(spec, options)`` gets the spec's ``options`` merged with the caller's, plus ``paths`` (role → verified
    file) and ``weights`` (the caller's explicit file or folder, or None)."""

    name: str
    description: str
    weights: dict[str, WeightFile] = field(default_factory=dict)
    build: Callable[["ModelSpec", dict], LatentAutoencoder] | None = None
    options: dict = field(default_factory=dict)
    #: how new streams of this model are entropy-coded when the caller names no entropy model: the one its
    #: latents were trained with (``codec.latent_coding``)
    entropy_model: str = "per-channel"


#: model name → :class:`ModelSpec`; ``prefix:<ref>`` families (``diffusers:``, ``tae-f2-le:``) build a spec per ref.
#: Complete once ``codec.models`` is imported (it imports every family).
MODELS: Registry[ModelSpec] = Registry("model", error=UnknownModel)
