"""The encoded latents the trainers learn from, cached on disk: each image read once (downscaled to a maximum
side), encoded by a model's encoder (tae-f2's, or a learned one), its channel sensitivities measured, and the
whole set stored as one ``.npz`` keyed by the file names, sizes, settings and the model's weights (encoder and
decoder: a learned encoder for the stock decoder makes other latents under the same decoder fingerprint)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch


def load_rgb(path: Path, max_side: int | None) -> np.ndarray:
    """8-bit RGB of an image, downscaled to ``max_side`` (Lanczos), cropped to multiples of 8."""
    from PIL import Image

    from latentarc.codec.images import read_image

    pic = read_image(path.read_bytes())
    rgb = pic.rgb if pic.rgb.ndim == 3 else np.repeat(pic.rgb[..., None], 3, axis=2)
    if rgb.dtype != np.uint8:
        rgb = (rgb / 257).astype(np.uint8)
    h, w = rgb.shape[:2]
    if max_side and max(h, w) > max_side:
        s = max_side / max(h, w)
        rgb = np.asarray(Image.fromarray(rgb[..., :3]).resize((max(8, round(w * s)), max(8, round(h * s))),
                                                            Image.LANCZOS))
    h, w = rgb.shape[:2]
    return np.ascontiguousarray(rgb[: h - h % 8, : w - w % 8, :3])


def encode_latents(paths: list[Path], model, max_side: int | None, cache_dir: Path, probes: int = 2,
                   root: Path | None = None) -> dict:
    """{name: (latent (C,h,w) float32, sensitivity (C,))}, from the cache when the key matches. Names are the
    paths relative to ``root`` (file names without one)."""
    from latentarc.codec.autoencoder import state_dict_fingerprint
    from latentarc.codec.quantize import decoder_sensitivity

    names = [p.relative_to(root).as_posix() if root else p.name for p in paths]
    key = hashlib.sha256(json.dumps([[n, p.stat().st_size] for n, p in zip(names, paths)]
                                    + [max_side, probes, state_dict_fingerprint(model)]).encode()).hexdigest()[:16]
    cache = cache_dir / f"tae-f2-latents-{key}.npz"
    if cache.is_file():
        with np.load(cache) as f:
            return {n: (f[f"z_{i}"], f[f"s_{i}"]) for i, n in enumerate(names)}
    out, arrays = {}, {}
    with torch.no_grad():
        for i, (n, p) in enumerate(zip(names, paths)):
            rgb = load_rgb(p, max_side)
            x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float().div(255).to(model.device)
            z = model.encode(x)[0]
            sens = decoder_sensitivity(model, z, crop=32, probes=probes)
            out[n] = (z.float().cpu().numpy(), sens)
            arrays[f"z_{i}"], arrays[f"s_{i}"] = out[n]
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(cache)
    return out
