"""diffusers VAEs behind the codec interface, on tiny randomly initialised models saved to disk (no network)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from latentarc.codec.diffusers_vae import DiffusersAutoencoder  # noqa: E402
from latentarc.codec.errors import ModelError, WeightsNotFound  # noqa: E402
from latentarc.codec.models import load_model  # noqa: E402

KL_SCALE, KL_SHIFT = 0.5, 0.1
TINY_SCALE = 2.0


def make_kl(seed: int = 0, scaling_factor: float = KL_SCALE, shift_factor: float | None = KL_SHIFT):
    torch.manual_seed(seed)
    return diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
        scaling_factor=scaling_factor,
        shift_factor=shift_factor,
    )


def make_tiny(seed: int = 0):
    torch.manual_seed(seed)
    return diffusers.AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
        latent_channels=4,
        scaling_factor=TINY_SCALE,
    )


def save(vae, folder):
    vae.save_pretrained(folder, safe_serialization=True)
    assert (folder / "diffusion_pytorch_model.safetensors").is_file()
    return folder


def images(n=2, h=32, w=48, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, h, w, generator=g)


@pytest.fixture(scope="module")
def kl_dir(tmp_path_factory):
    return save(make_kl(), tmp_path_factory.mktemp("kl"))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save(make_tiny(), tmp_path_factory.mktemp("tiny"))


@pytest.mark.parametrize("kind", ["kl", "tiny"])
def test_shapes_range_determinism(kind, kl_dir, tiny_dir):
    folder = kl_dir if kind == "kl" else tiny_dir
    m = load_model("diffusers:" + str(folder))
    assert isinstance(m, DiffusersAutoencoder)
    assert m.name == "diffusers:" + str(folder)
    assert m.downscale == 8 and m.latent_channels == 4
    assert not m.training and not any(p.requires_grad for p in m.parameters())

    x = images()
    z = m.encode(x)
    assert z.shape == (2, 4, 4, 6) and z.dtype == torch.float32
    assert torch.equal(z, m.encode(x)), "encode must be deterministic (posterior mean, not a sample)"
    y = m.decode(z)
    assert y.shape == x.shape
    assert y.min() >= 0 and y.max() <= 1
    assert torch.equal(y, m.decode(z))


def test_kl_matches_raw_diffusers_with_scale_and_shift(kl_dir):
    m = load_model("diffusers:" + str(kl_dir))
    raw = make_kl()  # same seed → same weights as the saved model
    raw.eval()
    x = images()
    with torch.no_grad():
        mean = raw.encode(x * 2 - 1).latent_dist.mean
        z = m.encode(x)
        torch.testing.assert_close(z, (mean - KL_SHIFT) * KL_SCALE)
        ref = ((raw.decode(z / KL_SCALE + KL_SHIFT).sample + 1) / 2).clamp(0, 1)
        torch.testing.assert_close(m.decode(z), ref)


def test_tiny_matches_raw_diffusers_with_scale(tiny_dir):
    m = load_model("diffusers:" + str(tiny_dir))
    raw = make_tiny()
    raw.eval()
    x = images()
    with torch.no_grad():
        lat = raw.encode(x * 2 - 1).latents  # diffusers' AutoencoderTiny takes [-1, 1] images
        z = m.encode(x)
        torch.testing.assert_close(z, lat * TINY_SCALE)
        ref = ((raw.decode(z / TINY_SCALE).sample + 1) / 2).clamp(0, 1)
        torch.testing.assert_close(m.decode(z), ref)


def test_kl_without_shift_factor(tmp_path):
    m = load_model("diffusers:" + str(save(make_kl(shift_factor=None), tmp_path / "noshift")))
    raw = make_kl(shift_factor=None).eval()
    x = images(n=1)
    with torch.no_grad():
        torch.testing.assert_close(m.encode(x), raw.encode(x * 2 - 1).latent_dist.mean * KL_SCALE)


def test_fingerprint_stable_and_discriminating(tmp_path, kl_dir):
    a = load_model("diffusers:" + str(kl_dir))
    copy = tmp_path / "kl-copy"
    shutil.copytree(kl_dir, copy)
    b = load_model("diffusers:" + str(copy))
    assert a is not b
    assert len(a.fingerprint) == 64 and a.fingerprint == b.fingerprint
    assert a.fingerprint == a.fingerprint  # cached, still equal

    other_seed = load_model("diffusers:" + str(save(make_kl(seed=7), tmp_path / "kl-seed7")))
    assert other_seed.fingerprint != a.fingerprint
    # same weights, other latent normalisation: decodes differently, so it must not match either
    other_scale = load_model("diffusers:" + str(save(make_kl(scaling_factor=0.25), tmp_path / "kl-scale")))
    assert other_scale.fingerprint != a.fingerprint


def test_kl_tiling_option(tmp_path):
    folder = save(make_kl(), tmp_path / "kl-tiled")
    m = load_model("diffusers:" + str(folder), tiling=True)
    assert m.vae.use_tiling
    x = images(n=1, h=64, w=64)  # larger than sample_size=32, so diffusers actually tiles
    z = m.encode(x)
    assert z.shape == (1, 4, 8, 8)
    y = m.decode(z)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1


def test_tiny_rejects_tiling(tiny_dir):
    with pytest.raises(ValueError, match="tiling"):
        load_model("diffusers:" + str(tiny_dir), tiling=True)


def test_bad_input_size(kl_dir):
    m = load_model("diffusers:" + str(kl_dir))
    with pytest.raises(ValueError, match="multiples of 8"):
        m.encode(torch.rand(1, 3, 30, 32))


def test_missing_folder(tmp_path):
    with pytest.raises(WeightsNotFound, match="config.json"):
        load_model("diffusers:" + str(tmp_path / "does-not-exist"))


def test_folder_without_weights(tmp_path):
    folder = tmp_path / "config-only"
    make_kl().save_config(folder)
    with pytest.raises(WeightsNotFound) as info:
        load_model("diffusers:" + str(folder))
    assert "\n" not in str(info.value)


def test_unsupported_class(tmp_path):
    folder = tmp_path / "unet"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(ModelError, match="not supported"):
        load_model("diffusers:" + str(folder))
