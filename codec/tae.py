"""Tiny AutoEncoder (TAESD family) that loads the original ``.pth`` checkpoints, including TAE-FLUX.2.

The FLUX.2 variant adds a GroupNorm branch to the blocks at latent resolution (encoder blocks 11–13, decoder
blocks 3–5): ``x ← x + conv1x1(relu(GroupNorm(4, 4C)(conv1x1(x))))`` before the usual residual block. diffusers'
``AutoencoderTiny`` has no such branch, hence this implementation. Module indices match the checkpoints'
``nn.Sequential`` keys exactly, so ``load_state_dict(strict=True)`` validates the architecture.

Both networks are split where the resolution changes: the GroupNorm part (global statistics over the whole
latent) runs on the full latent, which is small (1/64 of the pixels), while the full-resolution convolutions run
tile by tile through :func:`run_tiled`.

Determinism across thread counts: oneDNN's 1x1 convolution over 256 channels (the GroupNorm branch) blocks its
reduction differently with 1 and 2 threads, so decoded pixels differed by ±1 in a few places. The latent-
resolution part therefore runs on PyTorch's native convolution (oneDNN off), which is thread-count invariant;
it is 1/64 of the pixels, so this costs little. The full-resolution stages were measured invariant with oneDNN.
"""

from __future__ import annotations

import contextlib
import warnings

import torch
from torch import nn

from .autoencoder import MODELS, LatentAutoencoder, ModelSpec
from .errors import ModelError
from .tiling import run_tiled, tile_grid
from .weights import WeightFile


def _conv(n_in: int, n_out: int, **kw) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kw)


class Clamp(nn.Module):
    """Soft clamp of decoder input latents to (-3, 3), as in the checkpoints."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class Block(nn.Module):
    def __init__(self, n_in: int, n_out: int, groupnorm_branch: bool = False):
        super().__init__()
        # in-place activations and residual add: no fresh full-resolution tensor per ReLU (the same values; autograd
        # is unaffected since no convolution needs its own output for its backward)
        self.conv = nn.Sequential(_conv(n_in, n_out), nn.ReLU(inplace=True), _conv(n_out, n_out), nn.ReLU(inplace=True),
                                  _conv(n_out, n_out))
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.fuse = nn.ReLU(inplace=True)
        self.pool = (
            nn.Sequential(
                nn.Conv2d(n_in, 4 * n_in, 1, bias=False),
                nn.GroupNorm(4, 4 * n_in),
                nn.ReLU(),
                nn.Conv2d(4 * n_in, n_in, 1, bias=False),
            )
            if groupnorm_branch
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x).add_(self.skip(x)))


def build_encoder(latent_channels: int, groupnorm_deep: bool) -> nn.Sequential:
    B = lambda gn=False: Block(64, 64, gn)  # noqa: E731
    down = lambda: _conv(64, 64, stride=2, bias=False)  # noqa: E731
    return nn.Sequential(
        _conv(3, 64), B(),
        down(), B(), B(), B(),
        down(), B(), B(), B(),
        down(), B(groupnorm_deep), B(groupnorm_deep), B(groupnorm_deep),
        _conv(64, latent_channels),
    )  # fmt: skip


def build_decoder(latent_channels: int, groupnorm_deep: bool) -> nn.Sequential:
    B = lambda gn=False: Block(64, 64, gn)  # noqa: E731
    up = lambda: (nn.Upsample(scale_factor=2), _conv(64, 64, bias=False))  # noqa: E731
    return nn.Sequential(
        Clamp(), _conv(latent_channels, 64), nn.ReLU(),
        B(groupnorm_deep), B(groupnorm_deep), B(groupnorm_deep), *up(),
        B(), B(), B(), *up(),
        B(), B(), B(), *up(),
        B(), _conv(64, 3),
    )  # fmt: skip


@contextlib.contextmanager
def _native_conv():
    """oneDNN off for the block (thread-count-invariant convolutions); silences its unrelated TF32 notice."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*TF32.*")
        with torch.backends.mkldnn.flags(enabled=False):
            yield


def _autocast(device: torch.device, dtype: torch.dtype):
    """The full-resolution parts at ``dtype`` (float32: as they are). The latent-resolution parts never are: they
    run on native convolutions, which have no fast low-precision kernels, and hold the GroupNorm statistics."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


#: index of the first encoder layer at latent resolution / first decoder layer above it
_ENC_SPLIT = 11
_DEC_SPLIT = 6
#: how far (in latents) the tiled parts of both networks reach. The encoder's body sees 65 px around an output:
#: 4 px of 3×3 convolutions at full resolution, then per downsampling stage its stride-2 convolution and nine
#: 3×3 convolutions (+1+18 px at ½, +2+36 px at ¼, +4 px into ⅛) — 8.125 latents; the decoder's tail mirrors
#: it (a change of one latent-resolution feature moves pixels up to 8.125 latents away, measured). A 9-latent
#: halo therefore gives every tile core exactly the untiled values (tests/test_models.py checks it).
_REACH = 9
#: tiles of one shape per network call on a GPU (a tile alone keeps a data-centre GPU a few percent busy; eight
#: haloed tiles of 768-px cores hold about 5 GB of float32 activations); on a CPU tile by tile, which bounds memory and
#: loses nothing there, since one tile already keeps every core busy
GPU_TILE_BATCH = 8


class TinyAutoencoder(LatentAutoencoder):
    """TAESD-family autoencoder with tiled full-resolution stages.

    ``tile`` is the largest kept tile core in latent units (8 px each; cores are balanced, ``tiling.spans``) and
    ``halo`` the context around it, at least the networks' reach (:data:`_REACH`), so tiles give exactly the untiled
    values. The defaults, 96 and 9 latents (768 px cores, 72 px of context), bound the full-resolution activations
    to about ``(8*(tile+2*halo))² × 64 ch × 4 B`` ≈ 210 MB per tensor; a 12 MP photo then computes about 1.4× its
    pixels (the earlier 64/16 tiles: about 2×). docs/economics.md has the measured speed and memory.
    ``tile_batch``: tiles of one shape per network call (None: :data:`GPU_TILE_BATCH` on CUDA, 1 elsewhere).
    """

    fast_dtypes = frozenset({torch.bfloat16})

    def __init__(
        self,
        name: str,
        encoder_state: dict,
        decoder_state: dict,
        *,
        latent_channels: int,
        groupnorm_deep: bool,
        decoder_sha256: str,
        tile: int = 96,
        halo: int = _REACH,
        tile_batch: int | None = None,
    ):
        super().__init__()
        self.name = name
        self.latent_channels = latent_channels
        self.encoder = build_encoder(latent_channels, groupnorm_deep)
        self.decoder = build_decoder(latent_channels, groupnorm_deep)
        self.encoder.load_state_dict(encoder_state, strict=True)
        self.decoder.load_state_dict(decoder_state, strict=True)
        # channels-last: oneDNN's direct convolutions need no layout reorders then — about 1.3x faster on CPU
        # (docs/economics.md), the same values up to float rounding
        self.to(memory_format=torch.channels_last)
        self.eval().requires_grad_(False)
        self._fingerprint = decoder_sha256
        self.tile, self.halo, self.tile_batch = tile, halo, tile_batch

    def _batch(self, device: torch.device) -> int:
        if self.tile_batch is not None:
            return self.tile_batch
        return GPU_TILE_BATCH if device.type == "cuda" else 1

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def encode(self, images: torch.Tensor, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        body, head = self.encoder[:_ENC_SPLIT], self.encoder[_ENC_SPLIT:]
        with _autocast(images.device, dtype):
            feats = run_tiled(body, _channels_last(images), unit_in=8, unit_out=1, out_channels=64, tile=self.tile,
                              halo=self.halo, batch=self._batch(images.device))
        with _native_conv():
            return head(feats.float()).contiguous()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self._decode(latents, torch.float32)

    def decode_unclamped(self, latents: torch.Tensor, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The decode the sensitivity probes differentiate: this family's decoder ends in the clamp, as the
        probes have always seen it; ``dtype`` runs the full-resolution tail at lower precision."""
        return self._decode(latents, dtype)

    def _decode(self, latents: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        head, tail = self.decoder[:_DEC_SPLIT], self.decoder[_DEC_SPLIT:]
        with _native_conv():
            feats = head(_channels_last(latents))
        with _autocast(latents.device, dtype):
            out = run_tiled(tail, feats, unit_in=1, unit_out=8, out_channels=3, tile=self.tile, halo=self.halo,
                            batch=self._batch(latents.device))
        return out.float().clamp_(0, 1).contiguous()

    def decoded_error_grad(self, latents: torch.Tensor, images: torch.Tensor,
                           weight: torch.Tensor) -> tuple[float, torch.Tensor]:
        """Tile by tile, so memory is bounded by one tile's graph whatever the image size: the latent-resolution
        head runs once with its graph (it is small, and its GroupNorm needs the whole latent), each tile's
        full-resolution tail is back-propagated on its own into the head's output, then the head once. The sum
        over tile cores is the error of the whole decoded image, so the gradient is exact."""
        head, tail = self.decoder[:_DEC_SPLIT], self.decoder[_DEC_SPLIT:]
        with torch.enable_grad():
            z = latents.detach().requires_grad_(True)
            with _native_conv():
                feats = head(z)
            f = feats.detach().requires_grad_(True)
            total = 0.0
            for t in tile_grid(f.shape[2], f.shape[3], self.tile, _REACH):
                out = t.core(tail(f[:, :, t.ya : t.yb, t.xa : t.xb]), 8).clamp(0, 1)
                rows, cols = slice(t.y0 * 8, t.y1 * 8), slice(t.x0 * 8, t.x1 * 8)
                err = ((out - images[:, :, rows, cols]) ** 2 * weight[:, :, rows, cols]).sum()
                err.backward()
                total += float(err.detach())
            with _native_conv():
                feats.backward(f.grad)
        return total, z.grad


def load_checkpoint(path) -> dict:
    try:  # weights_only: a checkpoint is tensors, never code; a pickle that wants more is refused
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - UnpicklingError, truncated zip, ...: one typed error
        raise ModelError(f"{path}: not a loadable weights-only checkpoint ({type(e).__name__})") from None


def build_tae(s: ModelSpec, opts: dict) -> TinyAutoencoder:
    """A TAE from its spec's two pinned ``.pth`` checkpoints (``opts["paths"]``)."""
    opts = dict(opts)
    paths = opts.pop("paths")
    opts.pop("weights", None)
    return TinyAutoencoder(s.name, load_checkpoint(paths["encoder"]), load_checkpoint(paths["decoder"]),
                           decoder_sha256=s.weights["decoder"].sha256, **opts)


_TAESD_BASE = "https://github.com/madebyollin/taesd/raw/main/"

TAE_F2 = MODELS.add("tae-f2", ModelSpec(
    name="tae-f2",
    description="Tiny AutoEncoder for the FLUX.2 VAE latent space (32 ch, 1/8 res), MIT, madebyollin/taesd",
    weights={
        "encoder": WeightFile("taef2_encoder.pth", _TAESD_BASE + "taef2_encoder.pth",
                              "10a4e1021e89d7551eaf161352da8dbd0b1aa83872ae28b150c1df1ce2f147b6"),
        "decoder": WeightFile("taef2_decoder.pth", _TAESD_BASE + "taef2_decoder.pth",
                              "0a44a31e1ae59eb9dbf9359d24942fd3ef5928162c1800d97a28c61d51be0ab5"),
    },
    build=build_tae,
    options={"latent_channels": 32, "groupnorm_deep": True},
))
