"""A worker node lost in the middle of a compress and of a restore, on a real two-node Ray cluster on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from latentarc.codec.api import load_codec
from latentarc.pipeline.table import BitstreamTable

from .conftest import MODELS, PHOTOS, REPO

pytestmark = pytest.mark.shared("models", "photos")


def _accounted(table: BitstreamTable) -> tuple[list[str], list[str]]:
    rows = table.read(columns=["key"])["key"].to_pylist()
    errors = table.errors()["key"].to_pylist()
    assert len(rows) == len(set(rows)), "a key with two current rows"
    assert not set(rows) & set(errors), "a key both archived and failed"
    return sorted(rows), sorted(errors)


def test_worker_node_killed_mid_compress_and_mid_restore(tmp_path):
    """A node dies in the middle of a compress and of a restore on a real two-node loopback cluster: both runs
    end complete in one command (the inputs the dead node held get a retry pass), every input ends as exactly one
    row (nothing lost, nothing twice), and every restored file is whole under its final name."""
    src = tmp_path / "src"
    src.mkdir()
    photos = sorted(PHOTOS.glob("*.png"))
    names = [f"{i:02d}.png" for i in range(8)]
    for i, name in enumerate(names):
        Image.open(photos[i]).convert("RGB").crop((0, 0, 192, 128)).save(src / name)
    table, dst = tmp_path / "table", tmp_path / "restored"
    env = dict(os.environ, LATENTARC_MODEL_DIR=str(MODELS))
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run([sys.executable, str(REPO / "tests" / "multinode_scenario.py"), str(src), str(table),
                          str(dst), str(MODELS)], env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print("multinode:", result)
    assert result["address"].startswith("127.0.0.1:")
    assert 3 <= result["parts_at_kill"] < len(names), result  # the node died mid-compress
    assert result["rc_compress"] == 0, (result, out.stderr[-3000:])
    assert sorted(result["after_compress"]["rows"]) == names and not result["after_compress"]["errors"]
    rows, errors = _accounted(BitstreamTable(str(table)))
    assert rows == names and not errors  # lost = 0, duplicated = 0
    assert 1 <= result["files_at_kill"] < len(names), result  # the node died mid-restore
    assert result["rc_restore"] == 0, (result, out.stderr[-3000:])
    assert result["restore_summary"][0].startswith(f"restored {len(names)} of {len(names)} images"), result
    # whole files under their final names, nothing else visible, each equal to a fresh decode of its row
    visible = sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if not p.name.startswith("."))
    assert visible == names
    codec = load_codec(weights=str(MODELS), device="cpu")
    for r in BitstreamTable(str(table)).read(columns=["key", "payload", "width"]).to_pylist():
        with Image.open(dst / r["key"]) as im:
            im.load()
            restored = np.asarray(im.convert("RGB"))
        assert restored.shape == (128, 192, 3) and r["width"] == 192
        assert np.array_equal(restored, np.asarray(codec.decode(r["payload"]).image.convert("RGB"))), r["key"]
