"""Learned encoders for the frozen tae-f2 decoder (``latentarc train-codec``), loadable through the model registry.

Why a separate kind of model: a fine-tuned encoder changes only which latent is quantized, never how a latent is
decoded. Such a model therefore keeps the stock model's *name* (``tae-f2``, written into every stream) and its
*decoder fingerprint*, so its streams decode with today's ``tae-f2`` decoder and nothing else is needed to
read them; only the encoder weights differ.

Two ways to load one:

* ``tae-f2-le:<folder>`` — any folder that ``train-codec`` wrote (``encoder.safetensors`` + ``config.json``);
  the file's SHA-256 must match the one its ``config.json`` records.
* a shipped name in :data:`SHIPPED` (e.g. ``tae-f2-le``) — the folder ``codec/weights/<name>/`` of this project,
  its SHA-256 pinned here in the code. Empty until a trained encoder is shipped.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import ModelError
from .autoencoder import MODELS, ModelSpec
from .tae import TAE_F2, TinyAutoencoder, load_checkpoint
from .weights import WEIGHTS_DIR, WeightFile, resolve

ENCODER_FILE = "encoder.safetensors"
CONFIG_FILE = "config.json"
PREFIX = "tae-f2-le"
BASE_MODEL = "tae-f2"

#: shipped encoders: name → SHA-256 of ``codec/weights/<name>/encoder.safetensors`` (none shipped yet)
SHIPPED: dict[str, str] = {}


def encoder_state(folder: str | Path, sha256: str) -> dict:
    """The encoder tensors of ``folder``, after its file is checked against ``sha256``."""
    from safetensors.torch import load_file

    path = resolve(WeightFile(ENCODER_FILE, "", sha256), explicit=Path(folder), allow_download=False)
    try:
        return load_file(str(path))
    except Exception as e:  # noqa: BLE001 - a damaged safetensors header, ...: one typed error
        raise ModelError(f"{path}: not a loadable safetensors file ({type(e).__name__})") from None


def folder_sha256(folder: str | Path) -> str:
    """The encoder SHA-256 a ``train-codec`` folder's ``config.json`` records."""
    cfg = Path(folder) / CONFIG_FILE
    try:
        meta = json.loads(cfg.read_text())
        if meta["base_model"] != BASE_MODEL:
            raise ModelError(f"{cfg}: an encoder for {meta['base_model']!r}, not {BASE_MODEL!r}")
        return str(meta["encoder_sha256"])
    except (OSError, KeyError, TypeError, ValueError) as e:
        raise ModelError(f"{folder}: not a train-codec encoder folder ({type(e).__name__}: {e})") from None


def with_encoder(base, state: dict):
    """A :class:`~latentarc.codec.tae.TinyAutoencoder` with ``base``'s decoder, name and fingerprint and the
    encoder ``state`` — what streams from a fine-tuned encoder need to decode with ``base``."""
    return _assemble(state, base.decoder.state_dict(), tile=base.tile, halo=base.halo)


def _assemble(enc_state: dict, dec_state: dict, **kw):
    s = TAE_F2
    return TinyAutoencoder(BASE_MODEL, enc_state, dec_state, decoder_sha256=s.weights["decoder"].sha256,
                           latent_channels=s.options["latent_channels"], groupnorm_deep=s.options["groupnorm_deep"],
                           **kw)


@MODELS.register_prefix(PREFIX)
def _folder_spec(ref: str) -> ModelSpec:
    """``tae-f2-le:<folder>``: the folder's encoder (its hash checked against its config) and tae-f2's decoder."""
    return ModelSpec(name=f"{PREFIX}:{ref}", description=f"learned encoder in {ref} for the frozen {BASE_MODEL} decoder",
                     weights={"decoder": TAE_F2.weights["decoder"]},
                     build=lambda s, opts: _assemble(encoder_state(ref, folder_sha256(ref)),
                                                     load_checkpoint(opts["paths"]["decoder"])))


def _build_shipped(s: ModelSpec, opts: dict):
    encoder = encoder_state(WEIGHTS_DIR / s.name, opts["encoder_sha256"])
    return _assemble(encoder, load_checkpoint(opts["paths"]["decoder"]))


for _name, _sha in SHIPPED.items():
    MODELS.add(_name, ModelSpec(name=_name, description=f"learned encoder for the frozen {BASE_MODEL} decoder (train-codec); "
                                               f"streams decode with {BASE_MODEL}",
                       weights={"decoder": TAE_F2.weights["decoder"]},
                       build=_build_shipped, options={"encoder_sha256": _sha}))
