"""The TAE-FLUX.2 implementation against the real checkpoints, weight resolution and its failure modes."""

from __future__ import annotations

import hashlib
import http.server
import shutil
import threading
from functools import partial

import numpy as np
import pytest
import torch

from latentarc.codec import models
from latentarc.codec.errors import UnknownModel, WeightsChecksumMismatch, WeightsNotFound
from latentarc.codec.metrics import psnr
from latentarc.codec.weights import WeightFile, resolve

from .conftest import MODELS, photo_crop

pytestmark = pytest.mark.shared("models", "photos")


def test_tae_f2_reconstructs_photos(codec):
    """Without quantization the autoencoder alone must reach the quality its README states (27–33 dB)."""
    model = codec.model
    for i in (3, 17):
        pic = photo_crop(i, 256)
        x = torch.from_numpy(pic.rgb).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            z = model.encode(x)
            y = model.decode(z)
        assert z.shape == (1, 32, 32, 32)
        out = (y[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        assert psnr(pic.rgb, out) > 27.0


def test_tiled_equals_untiled(codec):
    """Tiles with a halo wider than the receptive field give the same latent and pixels as one pass."""
    model = codec.model
    x = torch.from_numpy(photo_crop(5, 256).rgb).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        z_full, y_full = model.encode(x), model.decode(model.encode(x))
        saved = model.tile
        try:
            model.tile = 8  # 64 px cores: a 4x4 grid of tiles
            z_tiled = model.encode(x)
            y_tiled = model.decode(z_tiled)
        finally:
            model.tile = saved
    assert torch.allclose(z_full, z_tiled, atol=1e-4)
    assert torch.allclose(y_full, y_tiled, atol=1e-4)


def test_batched_tiles_equal_tile_by_tile(codec):
    """Tiles of one shape sent through the network together (what a GPU does) give the values of one tile at a
    time; every tile is run once, grouped by shape, never more than the batch per call."""
    from latentarc.codec.tiling import tile_batches, tile_grid

    model = codec.model
    x = torch.from_numpy(photo_crop(7, 320).rgb).permute(2, 0, 1)[None].float() / 255
    saved = model.tile, model.tile_batch
    try:
        model.tile = 12  # 40 latents → 4×4 cores of 10: haloed tiles of four shapes (corner, edges, inside)
        with torch.no_grad():
            model.tile_batch = 1
            z1 = model.encode(x)
            y1 = model.decode(z1)
            model.tile_batch = 4
            z4 = model.encode(x)
            y4 = model.decode(z1)
    finally:
        model.tile, model.tile_batch = saved
    assert torch.allclose(z1, z4, atol=1e-5) and torch.allclose(y1, y4, atol=1e-5)
    tiles = list(tile_grid(40, 40, 12, 9))
    groups = tile_batches(tiles, 4)
    assert sorted(t for g in groups for t in g) == sorted(tiles)
    assert all(0 < len(g) <= 4 and len({(t.yb - t.ya, t.xb - t.xa) for t in g}) == 1 for g in groups)
    assert len(groups) < len(tiles)


def test_unknown_model_is_a_clear_error():
    with pytest.raises(UnknownModel, match="tae-f2"):
        models.load_model("no-such-model")


def _spec(path):
    return WeightFile(path.name, "http://127.0.0.1:9/unused", hashlib.sha256(path.read_bytes()).hexdigest())


def test_resolution_order_and_checks(tmp_path, monkeypatch):
    real = MODELS / "taef2_decoder.pth"
    spec = _spec(real)
    # explicit file and folder
    assert resolve(spec, explicit=real) == real
    assert resolve(spec, explicit=MODELS) == MODELS / real.name
    with pytest.raises(WeightsNotFound):
        resolve(spec, explicit=tmp_path / "missing.pth")
    # $LATENTARC_MODEL_DIR, then the user cache
    monkeypatch.setenv("LATENTARC_MODEL_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(WeightsNotFound, match="downloads are disabled"):
        resolve(spec, allow_download=False)
    cached = tmp_path / "cache" / "latentarc" / "models" / real.name
    cached.parent.mkdir(parents=True)
    shutil.copy(real, cached)
    assert resolve(spec, allow_download=False) == cached
    # a file with the right name but other bytes is refused
    bad = bytearray(cached.read_bytes())
    bad[1000] ^= 0xFF
    cached.write_bytes(bytes(bad))
    with pytest.raises(WeightsChecksumMismatch):
        resolve(spec, allow_download=False)


@pytest.fixture
def http_root(tmp_path):
    """A real HTTP server on 127.0.0.1 standing in for the public weight host."""
    root = tmp_path / "www"
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield root, f"http://127.0.0.1:{srv.server_address[1]}/"
    srv.shutdown()


def test_download_verifies_sha256(tmp_path, monkeypatch, http_root):
    root, base = http_root
    real = MODELS / "taef2_encoder.pth"
    shutil.copy(real, root / real.name)
    monkeypatch.delenv("LATENTARC_MODEL_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    good = WeightFile(real.name, base + real.name, _spec(real).sha256)
    got = resolve(good, allow_download=True)
    assert got.read_bytes() == real.read_bytes()
    # the served file changes: the download is rejected and nothing is left in the cache
    got.unlink()
    (root / real.name).write_bytes(b"not the weights")
    with pytest.raises(WeightsChecksumMismatch):
        resolve(good, allow_download=True)
    assert not any((tmp_path / "cache" / "latentarc" / "models").iterdir())
    # an unreachable host is a WeightsNotFound, not a traceback
    with pytest.raises(WeightsNotFound):
        resolve(WeightFile("x.pth", base + "missing.pth", "0" * 64), allow_download=True)
