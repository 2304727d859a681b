"""The arithmetic of the encoder-side passes: float32 (the default), or bfloat16 where the hardware does it.

The encoder network and the channel-sensitivity probes only decide *which* stream is written; the decoder that
reconstructs an archive's pixels always runs in float32, so every stream decodes to the same pixels whatever
precision wrote it. bfloat16 halves the encoder's time on CPUs with AVX512-BF16 or AMX and on recent GPUs, but its
streams decode below float32's at the same size — about 0.01 dB on photos decoded near 23 dB, 0.03–0.07 dB near
33 dB, 0.2–0.3 dB near 38 dB (docs/economics.md) — so it is an explicit choice.
Where bfloat16 would only be emulated (slower than float32) it is refused.
"""

from __future__ import annotations

import torch

from .autoencoder import LatentAutoencoder
from .spec import ENCODER_PRECISIONS


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 convolutions in hardware (not by emulation)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return False


def encoder_dtype(choice: str, model: LatentAutoencoder) -> torch.dtype:
    """The dtype ``choice`` means for ``model`` on its device; ``bfloat16`` needs a model that supports it
    (``fast_dtypes``) and a device that computes it natively."""
    if choice not in ENCODER_PRECISIONS:
        raise ValueError(f"encoder precision {choice!r}: expected one of {', '.join(ENCODER_PRECISIONS)}")
    if choice == "float32":
        return torch.float32
    if torch.bfloat16 not in model.fast_dtypes:
        raise ValueError(f"model {model.name} cannot run its encoder in bfloat16")
    if not native_bfloat16(model.device):
        raise ValueError(f"{model.device} has no native bfloat16: it would be slower than float32")
    return torch.bfloat16
