"""Learned tae-f2 models (``latentarc train-codec``), loadable through the model registry.

Two kinds, because they differ in what a stream needs to decode:

* **A learned encoder for the frozen decoder** (stage 1) changes only which latent is quantized, never how a
  latent is decoded. Such a model keeps the stock model's *name* (``tae-f2``, written into every stream) and its
  *decoder fingerprint*, so its streams decode with today's ``tae-f2`` decoder and nothing else is needed.
  ``tae-f2-le:<folder>`` loads any folder ``train-codec`` wrote (``encoder.safetensors`` + ``config.json``; the
  file's SHA-256 must match the one its ``config.json`` records); a shipped name in :data:`SHIPPED` (e.g.
  ``tae-f2-le``) loads ``codec/weights/<name>/`` with its SHA-256 pinned here.
* **A fine-tuned autoencoder** (stage 2: encoder and decoder trained jointly) decodes latents differently, so it
  is a model of its own: ``tae-f2-ft:<folder>`` (``encoder.safetensors`` + ``decoder.safetensors`` +
  ``config.json``). Its fingerprint is its decoder file's SHA-256 and its streams name it, so they can never be
  decoded by the stock decoder (or this one decode a stock stream): both kinds of stream stay decodable, each by
  its own model. A shipped one (:data:`SHIPPED_FT`, e.g. ``tae-f2-ft``) loads ``codec/weights/<name>/`` with
  both files' SHA-256 pinned here, and codes its new streams with the context model trained on its latents.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelError
from .autoencoder import MODELS, ModelSpec
from .tae import TAE_F2, TinyAutoencoder, load_checkpoint
from .weights import WEIGHTS_DIR, WeightFile, resolve

ENCODER_FILE = "encoder.safetensors"
DECODER_FILE = "decoder.safetensors"
CONFIG_FILE = "config.json"
PREFIX = "tae-f2-le"
FT_PREFIX = "tae-f2-ft"
BASE_MODEL = "tae-f2"

#: shipped encoders: name → SHA-256 of ``codec/weights/<name>/encoder.safetensors`` (none shipped yet)
SHIPPED: dict[str, str] = {}


@dataclass(frozen=True)
class ShippedAutoencoder:
    """A fine-tuned autoencoder in ``codec/weights/<name>/``: both files' SHA-256 pinned (the decoder's is the
    model's fingerprint, which its streams carry), and the context entropy model trained on its latents, which its
    new streams use unless told otherwise."""

    encoder_sha256: str
    decoder_sha256: str
    entropy_model: str


#: shipped fine-tuned autoencoders (``train-codec`` stages 1–2, with the stage-3 context model named)
SHIPPED_FT: dict[str, ShippedAutoencoder] = {
    FT_PREFIX: ShippedAutoencoder(encoder_sha256="e04409c2a010ff47b17e724dca46f9bf347e82f7a830cd858157ce9ef755b377",
                                  decoder_sha256="6d4c984d40b8ca4515facee465f58286beb6954df381dfdd6649cb0290181687",
                                  entropy_model="tae-f2-ft-ctx"),
}


def encoder_state(folder: str | Path, sha256: str) -> dict:
    """The encoder tensors of ``folder``, after its file is checked against ``sha256``."""
    return _state(folder, ENCODER_FILE, sha256)


def decoder_state(folder: str | Path, sha256: str) -> dict:
    """The decoder tensors of a stage-2 ``folder``, after its file is checked against ``sha256``."""
    return _state(folder, DECODER_FILE, sha256)


def _state(folder: str | Path, file: str, sha256: str) -> dict:
    from safetensors.torch import load_file

    path = resolve(WeightFile(file, "", sha256), explicit=Path(folder), allow_download=False)
    try:
        return load_file(str(path))
    except Exception as e:  # noqa: BLE001 - a damaged safetensors header, ...: one typed error
        raise ModelError(f"{path}: not a loadable safetensors file ({type(e).__name__})") from None


def folder_meta(folder: str | Path, *, decoder: bool = False) -> dict:
    """A ``train-codec`` folder's ``config.json`` (``decoder``: it must hold a fine-tuned decoder too)."""
    cfg = Path(folder) / CONFIG_FILE
    try:
        meta = json.loads(cfg.read_text())
        if meta["base_model"] != BASE_MODEL:
            raise ModelError(f"{cfg}: a model for {meta['base_model']!r}, not {BASE_MODEL!r}")
        if not meta.get("encoder_sha256"):
            raise ModelError(f"{cfg}: records no encoder_sha256")
        if decoder and not meta.get("decoder_sha256"):
            raise ModelError(f"{folder}: a learned encoder for the stock decoder (load it as {PREFIX}:{folder}), "
                             "not a fine-tuned autoencoder")
        return meta
    except (OSError, KeyError, TypeError, ValueError) as e:
        raise ModelError(f"{folder}: not a train-codec folder ({type(e).__name__}: {e})") from None


def folder_sha256(folder: str | Path) -> str:
    """The encoder SHA-256 a ``train-codec`` folder's ``config.json`` records."""
    return str(folder_meta(folder)["encoder_sha256"])


def with_encoder(base, state: dict):
    """A :class:`~latentarc.codec.tae.TinyAutoencoder` with ``base``'s decoder, name and fingerprint and the
    encoder ``state`` — what streams from a fine-tuned encoder need to decode with ``base``."""
    return _assemble(state, base.decoder.state_dict(), **_tiling(base))


def with_weights(base, encoder: dict, decoder: dict, *, name: str, fingerprint: str):
    """A model of its own (stage 2): ``encoder`` and ``decoder`` tensors, named ``name`` with the decoder
    ``fingerprint`` — streams it writes decode only with it."""
    return _assemble(encoder, decoder, name=name, decoder_sha256=fingerprint, **_tiling(base))


def _tiling(base) -> dict:
    """``base``'s tiling settings, which a model assembled from it keeps (same tiles, same values)."""
    return {"tile": base.tile, "halo": base.halo, "tile_batch": base.tile_batch}


def _assemble(enc_state: dict, dec_state: dict, *, name: str = BASE_MODEL, decoder_sha256: str | None = None,
              **kw):
    s = TAE_F2
    return TinyAutoencoder(name, enc_state, dec_state, decoder_sha256=decoder_sha256 or s.weights["decoder"].sha256,
                           latent_channels=s.options["latent_channels"], groupnorm_deep=s.options["groupnorm_deep"],
                           **kw)


@MODELS.register_prefix(PREFIX)
def _folder_spec(ref: str) -> ModelSpec:
    """``tae-f2-le:<folder>``: the folder's encoder (its hash checked against its config) and tae-f2's decoder."""
    return ModelSpec(name=f"{PREFIX}:{ref}", description=f"learned encoder in {ref} for the frozen {BASE_MODEL} decoder",
                     weights={"decoder": TAE_F2.weights["decoder"]},
                     build=lambda s, opts: _assemble(encoder_state(ref, folder_sha256(ref)),
                                                     load_checkpoint(opts["paths"]["decoder"])))


@MODELS.register_prefix(FT_PREFIX)
def _finetuned_spec(ref: str) -> ModelSpec:
    """``tae-f2-ft:<folder>``: the folder's encoder and decoder (both hashes checked against its config)."""
    name = f"{FT_PREFIX}:{ref}"

    def build(s: ModelSpec, opts: dict):
        meta = folder_meta(ref, decoder=True)
        return _finetuned(ref, name, meta["encoder_sha256"], meta["decoder_sha256"])

    return ModelSpec(name=name, description=f"fine-tuned {BASE_MODEL} autoencoder in {ref} (its own decoder)",
                     build=build)


def _build_shipped(s: ModelSpec, opts: dict):
    encoder = encoder_state(WEIGHTS_DIR / s.name, opts["encoder_sha256"])
    return _assemble(encoder, load_checkpoint(opts["paths"]["decoder"]))


def _finetuned(folder: str | Path, name: str, encoder_sha256: str, decoder_sha256: str):
    """A fine-tuned autoencoder from ``folder``'s two files (each checked against its hash), named ``name``, its
    fingerprint the decoder file's hash."""
    return _assemble(encoder_state(folder, encoder_sha256), decoder_state(folder, decoder_sha256), name=name,
                     decoder_sha256=decoder_sha256)


def _build_shipped_ft(s: ModelSpec, opts: dict):
    return _finetuned(WEIGHTS_DIR / s.name, s.name, opts["encoder_sha256"], opts["decoder_sha256"])


for _name, _ft in SHIPPED_FT.items():
    MODELS.add(_name, ModelSpec(name=_name, description=f"{BASE_MODEL} fine-tuned for rate, distortion and LPIPS "
                                f"(train-codec; its own decoder, streams decode only with {_name})",
                                build=_build_shipped_ft, entropy_model=_ft.entropy_model,
                                options={"encoder_sha256": _ft.encoder_sha256, "decoder_sha256": _ft.decoder_sha256}))

for _name, _sha in SHIPPED.items():
    MODELS.add(_name, ModelSpec(name=_name, description=f"learned encoder for the frozen {BASE_MODEL} decoder (train-codec); "
                                               f"streams decode with {BASE_MODEL}",
                       weights={"decoder": TAE_F2.weights["decoder"]},
                       build=_build_shipped, options={"encoder_sha256": _sha}))
