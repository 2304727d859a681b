"""Shared fixtures: the real weights from ../shared/models and real photos from ../shared/data.

A test module that needs part of ``../shared`` says so with ``pytestmark = pytest.mark.shared("models", ...)``;
when that part is absent its tests are skipped with the reason, and the rest of the suite still runs.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest

from latentarc.pipeline.runtime import loopback_only

loopback_only()  # before any test module imports ray: every Ray process of the suite listens on 127.0.0.1 only

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("LATENTARC_SHARED", REPO.parent / "shared"))
MODELS = SHARED / "models"
PHOTOS = SHARED / "data" / "photos"
EDGE = SHARED / "data" / "edge"
TRAIN = SHARED / "data" / "train"
PERCEPTUAL_CHECK = SHARED / "data" / "perceptual-check"

#: what each ``shared`` marker argument needs on disk
SHARED_PARTS = {
    "models": MODELS / "taef2_decoder.pth",
    "photos": PHOTOS,
    "edge": EDGE,
    "train": TRAIN,
    "perceptual": MODELS / "perceptual",
    "perceptual-check": PERCEPTUAL_CHECK / "expected.json",
}


def missing_shared(*parts: str) -> list[str]:
    """The parts of ``../shared`` among ``parts`` that are not on disk."""
    unknown = set(parts) - set(SHARED_PARTS)
    if unknown:
        raise ValueError(f"unknown shared part(s) {sorted(unknown)}; known: {sorted(SHARED_PARTS)}")
    return [p for p in parts if not SHARED_PARTS[p].exists()]


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "shared(*parts): needs these parts of ../shared (" + ", ".join(SHARED_PARTS) + "); "
        "skipped with the reason when one is absent")


#: fixtures that read ../shared: a test using one needs its parts whatever its markers say
FIXTURE_NEEDS = {"codec": ("models",), "global_codec": ("models",), "small_pic": ("photos",)}


def pytest_collection_modifyitems(config, items):
    for item in items:
        parts = [p for m in item.iter_markers("shared") for p in m.args]
        parts += [p for f in getattr(item, "fixturenames", ()) for p in FIXTURE_NEEDS.get(f, ())]
        parts = list(dict.fromkeys(parts))
        missing = missing_shared(*parts)
        if missing:
            where = ", ".join(str(SHARED_PARTS[p]) for p in missing)
            item.add_marker(pytest.mark.skip(
                reason=f"needs ../shared {'/'.join(missing)} (not found: {where}; set LATENTARC_SHARED)"))


@pytest.fixture(scope="session", autouse=True)
def _model_dir():
    """Point weight resolution at the shared weights and forbid downloads (no hub access here)."""
    old = {k: os.environ.get(k) for k in ("LATENTARC_MODEL_DIR", "LATENTARC_OFFLINE")}
    os.environ["LATENTARC_MODEL_DIR"] = str(MODELS)
    os.environ["LATENTARC_OFFLINE"] = "1"
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def codec():
    from latentarc.codec.api import load_codec

    return load_codec("tae-f2", device="cpu")


@pytest.fixture(scope="session")
def global_codec():
    from latentarc.codec.api import load_codec

    return load_codec("tae-f2", device="cpu", adaptive=False)


def photo_crop(index: int, size: int = 128):
    """A centre crop of a real photo as a Picture (crops keep the tests fast on 2 CPU cores)."""
    from latentarc.codec.images import Picture, read_image

    pic = read_image(sorted(PHOTOS.glob("*.png"))[index].read_bytes())
    h, w = pic.rgb.shape[:2]
    y, x = (h - size) // 2, (w - size) // 2
    return Picture(np.ascontiguousarray(pic.rgb[y : y + size, x : x + size]), None, pic.mode)


def photo_png(index: int, width: int = 64, height: int | None = None) -> bytes:
    """PNG bytes of a ``width`` x ``height`` crop from the centre of held-out photo ``index`` (a real source file)."""
    from PIL import Image

    im = Image.open(sorted(PHOTOS.glob("*.png"))[index])
    w, h = im.size
    buf = io.BytesIO()
    im.crop((w // 2, h // 2, w // 2 + width, h // 2 + (height or width))).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def small_pic():
    return photo_crop(0, 96)


# --- object store (moto's S3 server on 127.0.0.1, nothing else) ----------------------------------------------
@pytest.fixture(scope="session")
def s3():
    """A moto S3 server on 127.0.0.1 for the session; yields s3fs storage options pointing at it.

    s3fs accepts ``endpoint_url`` at the top level (as well as inside ``client_kwargs``).
    """
    from moto.server import ThreadedMotoServer

    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "NO_PROXY": "127.0.0.1",
        "no_proxy": "127.0.0.1",
    }
    dropped = ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")
    old = {k: os.environ.get(k) for k in (*env, *dropped)}
    os.environ.update(env)
    for k in dropped:
        os.environ.pop(k, None)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield {"endpoint_url": f"http://127.0.0.1:{port}", "key": "testing", "secret": "testing"}
    finally:
        server.stop()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def bucket(s3):
    """A fresh, empty bucket on the moto server; returns ``"s3://<name>"``."""
    import uuid

    import s3fs

    fs = s3fs.S3FileSystem(**s3, use_listings_cache=False, skip_instance_cache=True)
    name = f"test-{uuid.uuid4().hex[:16]}"
    fs.mkdir(name)
    yield f"s3://{name}"
    try:
        fs.rm(name, recursive=True)
    except Exception:  # noqa: BLE001 - cleanup of an in-memory server
        pass


# --- Ray: one local cluster for the whole session -------------------------------------------------------------
@pytest.fixture(scope="session")
def ray_cluster():
    """``ray.init(num_cpus=2)`` once, on loopback; the pipeline joins it instead of starting its own."""
    import ray

    from latentarc.pipeline.runtime import local_system_config

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1", _system_config=local_system_config())  # a new cluster, on loopback only
    yield
    ray.shutdown()
