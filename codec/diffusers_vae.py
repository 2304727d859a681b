"""Stable-Diffusion-family VAEs from diffusers (``AutoencoderKL``, ``AutoencoderTiny``) behind the codec interface.

Names are ``diffusers:<hub id or local folder>``. The wrapper only adapts conventions, read from diffusers 0.42:

* both classes take and return images in [-1, 1] at their public ``encode``/``decode`` (``AutoencoderTiny``'s
  ``EncoderTiny`` maps [-1, 1] → [0, 1] internally and ``DecoderTiny`` maps back), so we convert from/to [0, 1];
* latents are given in the diffusion model's normalised space, ``(z - shift_factor) * scaling_factor``, exactly
  as the pipelines do (a ``None`` ``shift_factor``, the ``AutoencoderKL`` default, means 0;
  ``AutoencoderTiny`` defaults to ``scaling_factor`` 1.0, TAESD latents being trained in the scaled space). ``AutoencoderTiny.scale_latents`` is *not* used: it only maps
  latents to [0, 1] for storing them as uint8 images;
* ``AutoencoderKL`` returns a Gaussian posterior; we take its mean so encoding is deterministic.

The fingerprint hashes the whole state dict, including two buffers holding ``scaling_factor`` and
``shift_factor``, because those change the decoded pixels as much as the weights do. Models are loaded in
float32: fp16 SD/SDXL VAEs overflow (diffusers' ``force_upcast``), and other dtypes would give other pixels.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch

from .autoencoder import MODELS, LatentAutoencoder, ModelSpec, state_dict_fingerprint
from .errors import LatentarcError, ModelError, WeightsNotFound
from .weights import ENV_OFFLINE


class DiffusersAutoencoder(LatentAutoencoder):
    """Wraps a loaded diffusers ``AutoencoderKL`` or ``AutoencoderTiny`` (kept as ``self.vae``).

    ``tiling=True`` (``AutoencoderKL`` only) turns on diffusers' built-in tiled encode/decode, which diffusers
    applies only to inputs larger than ``config.sample_size`` pixels, to bound memory on large images. Tiles are
    blended, so results differ slightly from untiled ones: encoder and decoder should agree on the setting.
    """

    def __init__(self, name: str, vae: torch.nn.Module, *, tiling: bool = False):
        import diffusers

        super().__init__()
        self.name = name
        self.vae = vae
        cfg = vae.config
        self._kl = isinstance(vae, diffusers.AutoencoderKL)
        if self._kl:
            self.downscale = 2 ** (len(cfg.block_out_channels) - 1)
        elif isinstance(vae, diffusers.AutoencoderTiny):
            # EncoderTiny: first block keeps the resolution, every later one starts with a stride-2 conv
            self.downscale = 2 ** (len(cfg.encoder_block_out_channels) - 1)
        else:
            raise ModelError(f"{name}: unsupported diffusers class {type(vae).__name__}")
        self.latent_channels = int(cfg.latent_channels)
        # persistent buffers so that state_dict_fingerprint covers them (shape (1,): it cannot hash 0-dim tensors)
        self.register_buffer("latent_scale", torch.tensor([float(cfg.scaling_factor)]))
        self.register_buffer("latent_shift", torch.tensor([float(cfg.get("shift_factor") or 0.0)]))
        if tiling:
            if not self._kl:
                raise ValueError(f"{name}: tiling is only supported for AutoencoderKL")
            vae.enable_tiling()
        self.eval().requires_grad_(False)
        self._fingerprint: str | None = None

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = state_dict_fingerprint(self)
        return self._fingerprint

    def _check(self, t: torch.Tensor, unit: int, what: str) -> None:
        if t.ndim != 4 or t.shape[-1] % unit or t.shape[-2] % unit:
            raise ValueError(
                f"{self.name}: {what} must be (N, C, H, W) with H, W multiples of {unit}; got {tuple(t.shape)}"
            )

    def encode(self, images: torch.Tensor, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        self._check(images, self.downscale, "images")
        x = images.to(device=self.device, dtype=self.vae.dtype) * 2 - 1
        out = self.vae.encode(x)
        z = out.latent_dist.mean if self._kl else out.latents
        return (z.float() - self.latent_shift) * self.latent_scale

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        self._check(latents, 1, "latents")
        z = latents.to(device=self.device, dtype=torch.float32) / self.latent_scale + self.latent_shift
        x = self.vae.decode(z.to(self.vae.dtype)).sample
        return ((x.float() + 1) / 2).clamp_(0, 1)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def _looks_local(ref: str) -> bool:
    """Hub ids are ``owner/name``; anything absolute, relative-dotted, home-based or deeper is a path."""
    return os.path.isabs(ref) or ref.startswith((".", "~")) or ref.count("/") > 1 or os.path.exists(ref)


@MODELS.register_prefix("diffusers")
def _spec(ref: str) -> ModelSpec:
    """``diffusers:<ref>``: weights come from the hub or a folder when built, so the spec pins no file."""
    return ModelSpec(name="diffusers:" + ref, description=f"diffusers VAE {ref}",
                     build=lambda s, options: _load(ref, options))


def _load(ref: str, options: dict) -> LatentAutoencoder:
    """Build ``diffusers:<ref>``; ``ref`` is a hub id or a local folder saved with ``save_pretrained``.

    Options: ``subfolder`` (e.g. ``"vae"`` inside a full pipeline), ``tiling`` (see the class), ``weights``
    (a local folder to read instead of ``ref``, which stays the model's name). Hub downloads go through the
    Hugging Face cache and are disabled by ``$LATENTARC_OFFLINE``.
    """
    import diffusers

    opts = dict(options)
    opts.pop("paths", None)
    subfolder = opts.pop("subfolder", None)
    tiling = bool(opts.pop("tiling", False))
    source = str(opts.pop("weights", None) or ref)
    if opts:
        raise ModelError(f"diffusers:{ref}: unknown option(s) {', '.join(sorted(opts))}")

    local = _looks_local(source)
    folder = Path(source).expanduser() / (subfolder or "")
    if local and not (folder / "config.json").is_file():
        raise WeightsNotFound(f"diffusers:{ref}: no VAE config.json in {folder}")
    kw: dict = {"subfolder": subfolder}
    # without accelerate diffusers would warn on every load, then fall back to this anyway
    load_kw = {"low_cpu_mem_usage": importlib.util.find_spec("accelerate") is not None}
    if local:
        source = str(Path(source).expanduser())
        # diffusers loads .bin files with weights_only=True, so only a missing safetensors file falls back to it
        kw["use_safetensors"] = True if any(folder.glob("*.safetensors")) else None
    elif os.environ.get(ENV_OFFLINE):
        kw["local_files_only"] = True

    classes = {"AutoencoderKL": diffusers.AutoencoderKL, "AutoencoderTiny": diffusers.AutoencoderTiny}
    try:
        cfg_kw = {k: v for k, v in kw.items() if k != "use_safetensors"}
        config = diffusers.AutoencoderKL.load_config(source, **cfg_kw)
        cls = classes.get(config.get("_class_name"))
        if cls is None:
            raise ModelError(
                f"diffusers:{ref}: class {config.get('_class_name')!r} is not supported "
                f"(only {', '.join(classes)})"
            )
        vae = cls.from_pretrained(source, **kw, **load_kw)
    except LatentarcError:
        raise
    except Exception as e:  # hub, network, file and format errors all mean "these weights are not usable here"
        raise WeightsNotFound(f"diffusers:{ref}: cannot load VAE from {source!r} ({_one_line(e)})") from e
    return DiffusersAutoencoder("diffusers:" + ref, vae.float(), tiling=tiling)
