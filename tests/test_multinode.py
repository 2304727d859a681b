"""A worker node lost in the middle of a compress, on a real two-node Ray cluster on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

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


def test_worker_node_killed_mid_compress(tmp_path):
    """Every input ends as exactly one row or one error when a node dies mid-run (nothing lost, nothing twice),
    the driver joins a loopback cluster by its 127.0.0.1 address, and a --retry-errors run completes the table."""
    src = tmp_path / "src"
    src.mkdir()
    photos = sorted(PHOTOS.glob("*.png"))
    names = [f"{i:02d}.png" for i in range(8)]
    for i, name in enumerate(names):
        Image.open(photos[i]).convert("RGB").crop((0, 0, 192, 128)).save(src / name)
    table = tmp_path / "table"
    env = dict(os.environ, LATENTARC_MODEL_DIR=str(MODELS))
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run([sys.executable, str(REPO / "tests" / "multinode_scenario.py"), str(src), str(table),
                          str(MODELS)], env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["address"].startswith("127.0.0.1:")
    assert 3 <= result["parts_at_kill"] < len(names), result  # the node died mid-run
    assert result["rc_first"] in (0, 1), result  # it ended: complete, or with errors recorded
    first_rows, first_errors = result["after_first"]["rows"], result["after_first"]["errors"]
    assert len(first_rows) == len(set(first_rows)) and not set(first_rows) & set(first_errors)
    assert sorted(first_rows + first_errors) == names  # lost = 0, duplicated = 0
    assert result["rc_retry"] == 0, result
    rows, errors = _accounted(BitstreamTable(str(table)))
    assert rows == names and not errors
    codec = load_codec(weights=str(MODELS), device="cpu")
    for r in BitstreamTable(str(table)).read(columns=["key", "payload", "width"]).to_pylist():
        assert codec.decode(r["payload"]).image.size[0] == r["width"] == 192
