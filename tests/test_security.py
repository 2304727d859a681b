"""Security properties, each checked against the real code path.

* Weights are never unpickled with code execution: a weight file whose unpickling would run a command is
  refused even when its SHA-256 matches the pin, and the command does not run (``torch.load(weights_only=True)``
  for ``.pth`` files; diffusers reads ``.bin`` with ``weights_only=True`` too).
* Credentials from storage options never appear in logs, reports, commit records, tables or error messages.
* A restore never writes outside its destination, whatever keys the table holds.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
import pickle
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3fs
import torch
from PIL import Image

from latentarc.codec import bitstream
from latentarc.codec.errors import ModelError
from latentarc.codec.models import MODELS as MODEL_SPECS
from latentarc.codec.models import ModelSpec, load_model, spec
from latentarc.codec.tae import build_tae
from latentarc.codec.weights import WeightFile, sha256_file
from latentarc.pipeline.errors import UnsafeKey
from latentarc.pipeline.table.schema import TABLE_SCHEMA
from latentarc.pipeline.storage import read_bytes, safe_join
from latentarc.pipeline.table import BitstreamTable

from .conftest import MODELS, PHOTOS, photo_crop

pytestmark = pytest.mark.shared("models", "photos")


# ============================================================================================ weights
class _Payload:
    """Unpickling this runs ``touch <marker>`` (harmless, and visible)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _malicious_files(folder: Path, marker: Path) -> dict[str, Path]:
    """The payload in each form a weight file can take: torch.save's zip, a legacy raw pickle, and a real
    state dict with the payload hidden among the tensors."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {"zip": folder / "zip.pth", "raw": folder / "raw.pth", "nested": folder / "nested.pth"}
    torch.save(_Payload(marker), out["zip"])
    out["raw"].write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    torch.save({"0.weight": torch.zeros(2, 2), "1.bias": torch.ones(2), "extra": _Payload(marker)}, out["nested"])
    return out


def test_payload_is_armed(tmp_path):
    """Control: loaded *without* weights_only, the same files do run the command - so the refusals below mean
    something."""
    marker = tmp_path / "armed"
    files = _malicious_files(tmp_path / "w", marker)
    torch.load(files["zip"], map_location="cpu", weights_only=False)
    assert marker.exists()
    marker.unlink()
    pickle.loads(files["raw"].read_bytes())
    assert marker.exists()


@pytest.mark.parametrize("form", ["zip", "raw", "nested"])
def test_pinned_but_malicious_pth_is_refused_without_running_code(tmp_path, form):
    """A test-only registry entry whose pinned SHA-256 *matches* the malicious file: resolution accepts the
    file, the TAE builder's ``torch.load(weights_only=True)`` refuses it, and the command never runs."""
    marker = tmp_path / f"pwned-{form}"
    path = _malicious_files(tmp_path / "w", marker)[form]
    digest = sha256_file(path)
    name = f"test-malicious-{form}-{uuid.uuid4().hex[:8]}"
    MODEL_SPECS.add(name, ModelSpec(
        name=name,
        description="test only: a pinned weight file whose unpickling would run a command",
        weights={"encoder": WeightFile(path.name, "http://127.0.0.1:9/never", digest),
                 "decoder": WeightFile(path.name, "http://127.0.0.1:9/never", digest)},
        build=build_tae,
        options={"latent_channels": 32, "groupnorm_deep": True},
    ))
    try:
        assert spec(name).weights["decoder"].sha256 == digest
        with pytest.raises(Exception) as e:  # noqa: PT011 - whichever error, it must not load
            load_model(name, weights=str(path.parent))
        assert isinstance(e.value, ModelError), repr(e.value)  # typed, one line in the CLI
        assert not marker.exists(), "unpickling the weight file ran code"
    finally:
        MODEL_SPECS.remove(name)


def test_tampered_weight_is_refused_before_it_is_opened(tmp_path):
    """A malicious file under the real tae-f2 names fails the pinned SHA-256: it is never even unpickled."""
    marker = tmp_path / "pwned-tampered"
    files = _malicious_files(tmp_path / "w", marker)
    folder = tmp_path / "weights"
    folder.mkdir()
    for role in ("encoder", "decoder"):
        (folder / spec("tae-f2").weights[role].filename).write_bytes(files["zip"].read_bytes())
    from latentarc.codec.errors import WeightsChecksumMismatch

    with pytest.raises(WeightsChecksumMismatch):
        load_model("tae-f2", weights=str(folder))
    assert not marker.exists()


def test_diffusers_bin_weights_load_weights_only(tmp_path):
    """A local diffusers VAE folder with a malicious ``diffusion_pytorch_model.bin`` (no safetensors): refused,
    the command never runs."""
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    vae = diffusers.AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1), latent_channels=4,
    )
    folder = tmp_path / "vae"
    vae.save_pretrained(folder, safe_serialization=False)
    bins = list(folder.glob("*.bin"))
    assert bins and not list(folder.glob("*.safetensors"))
    marker = tmp_path / "pwned-diffusers"
    state = dict(vae.state_dict())
    state["extra"] = _Payload(marker)
    torch.save(state, bins[0])
    with pytest.raises(ModelError):
        load_model(f"diffusers:{folder}")
    assert not marker.exists()


# ======================================================================================= credentials
SECRET = "SECRET-DO-NOT-LEAK-123"
KEY_ID = "AKIALEAKTEST0000"


def _crop_png(i: int, size=(40, 32)) -> bytes:
    im = Image.open(sorted(PHOTOS.glob("*.png"))[i])
    w, h = im.size
    buf = io.BytesIO()
    im.crop((w // 2, h // 2, w // 2 + size[0], h // 2 + size[1])).save(buf, format="PNG")
    return buf.getvalue()


def _strings(value):
    """Every str / bytes inside a (nested) Python value."""
    if isinstance(value, (str, bytes, bytearray)):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, (list, tuple, set)):
        for v in value:
            yield from _strings(v)


def _contains_secret(value) -> bool:
    for s in _strings(value):
        if (SECRET in s) if isinstance(s, str) else (SECRET.encode() in s):
            return True
    return False


def _ray_logs_dir() -> Path | None:
    try:
        import ray._private.worker as w

        return Path(w._global_node.get_logs_dir_path())
    except Exception:  # noqa: BLE001 - another Ray version: the conventional location
        p = Path("/tmp/ray/session_latest/logs")
        return p if p.is_dir() else None


@pytest.mark.usefixtures("ray_cluster")
def test_credentials_never_leak_from_a_compress_run(s3, bucket, capfd):
    """A real compress job (S3 source and table, one broken input) with a distinctive secret in the storage
    options: the secret is in no output, log, report, commit record, Parquet file (data or errors) or error."""
    from latentarc.codec.spec import CodecSpec
    from latentarc.pipeline.compress import CompressOptions, run_compress

    logged = io.StringIO()  # pytest's log capture is off (see pyproject): catch latentarc's own records
    handler = logging.StreamHandler(logged)
    lat_logger = logging.getLogger("latentarc")
    old_level = lat_logger.level
    lat_logger.addHandler(handler)
    lat_logger.setLevel(logging.DEBUG)
    opts = dict(s3, key=KEY_ID, secret=SECRET)
    fs = s3fs.S3FileSystem(**opts, use_listings_cache=False, skip_instance_cache=True)
    src, table_uri = f"{bucket}/incoming", f"{bucket}/archive"
    fs.pipe(f"{src}/a/one.png", _crop_png(0))
    fs.pipe(f"{src}/two.png", _crop_png(1))
    fs.pipe(f"{src}/broken/notes.png", b"not a png at all")
    report = run_compress(
        src, table_uri,
        CompressOptions(CodecSpec(weights=str(MODELS)), quality=60, batch_size=2, workers=1, ms_ssim=False),
        source_options=opts, table_options=opts,
    )
    # the secret really was in use: everything was read from and written to S3 with it
    assert report["rows"] == 2 and report["errors"] == 1, report
    out, err = capfd.readouterr()
    assert SECRET not in out and SECRET not in err
    lat_logger.removeHandler(handler)
    lat_logger.setLevel(old_level)
    assert logged.getvalue() and SECRET not in logged.getvalue()
    assert not _contains_secret(report) and SECRET not in json.dumps(report, default=str)

    table = BitstreamTable(table_uri, opts)
    assert not _contains_secret(table.committed()) and not _contains_secret(table.reports())
    errors = table.errors()
    assert errors.num_rows == 1 and not _contains_secret(errors.to_pylist())

    # every object the run wrote, raw, and every Parquet file column by column (zstd hides raw bytes)
    objects = [p for p in fs.find(table_uri.removeprefix("s3://"))]
    parquet = [p for p in objects if p.endswith(".parquet")]
    assert any("/data/" in p for p in parquet) and any("/_errors/" in p for p in parquet)
    for p in objects:
        assert SECRET.encode() not in fs.cat_file(p), p
    for p in parquet:
        with fs.open(p, "rb") as f:
            pf = pq.ParquetFile(f)
            t = pf.read()
            assert not _contains_secret(t.to_pylist()), p
            assert not _contains_secret(dict(pf.metadata.metadata or {})), p
            assert not _contains_secret(dict(t.schema.metadata or {})), p

    # Ray's own logs (workers, raylet, GCS) for this session
    logs = _ray_logs_dir()
    if logs is not None:
        assert any(f.is_file() for f in logs.iterdir()), f"no Ray logs under {logs}"
        hits = [str(f) for f in logs.rglob("*") if f.is_file() and SECRET.encode() in f.read_bytes()]
        assert not hits, f"secret found in Ray logs: {hits}"


def test_storage_errors_do_not_echo_credentials(s3, bucket):
    """Failures that happen *with* the options in hand (unreachable endpoint, missing object) name the object,
    never the secret - in the exception, its traceback, and the error record the compress job would store."""
    import traceback

    from latentarc.pipeline.stages import read_and_decode

    unreachable = {"endpoint_url": "http://127.0.0.1:9", "key": KEY_ID, "secret": SECRET,
                   "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2}}
    cases = [("s3://nowhere/x.png", unreachable), (f"{bucket}/missing.png", dict(s3, key=KEY_ID, secret=SECRET))]
    for uri, opts in cases:
        with pytest.raises(Exception) as e:  # noqa: PT011
            read_bytes(uri, opts)
        text = "".join(traceback.format_exception(e.type, e.value, e.tb))
        assert SECRET not in str(e.value) and SECRET not in repr(e.value) and SECRET not in text

        batch = pa.Table.from_pylist([{"key": "x.png", "uri": uri, "size": 1, "etag": None}])
        rows = read_and_decode(batch, storage_options=opts, run_id="run-x", max_pixels=1 << 20).to_pylist()
        assert rows[0]["kind"] == "error" and rows[0]["stage"] == "read"
        assert not _contains_secret(rows), rows[0]["message"]


def test_cli_does_not_echo_invalid_storage_options():
    proc = subprocess.run(
        [sys.executable, "-m", "latentarc.jobs.cli", "compress", "/nonexistent", "/tmp/t",
         "--storage-options", '{"secret": "%s",}' % SECRET],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    assert SECRET not in proc.stdout + proc.stderr


# ============================================================================================= restore
#: keys that must never become a path outside DST: each is refused with UnsafeKey
UNSAFE_KEYS = [
    "../escape.png",
    "../../escape-twice.png",
    "/abs-escape.png",
    "a/../../up-escape.png",
    "..\\win-escape.png",
    "a\\..\\..\\bs-escape.png",
    "a/./dot-segment.png",  # cannot escape, but not a canonical key: refused rather than aliased
    "a//empty-segment.png",
    "nul\x00byte.png",
    "C:/drive-escape.png",
    "C:drive-relative.png",
    "s3://other-bucket/cross.png",
    "file:///tmp/cross.png",
]


@pytest.mark.parametrize("key", UNSAFE_KEYS + ["..", ".", "", "a/..", "\\\\server\\share\\x.png"])
@pytest.mark.parametrize("root", ["local", "s3"])
def test_safe_join_refuses_escaping_keys(tmp_path, key, root):
    base = str(tmp_path / "dst") if root == "local" else "s3://bucket/dst"
    with pytest.raises(UnsafeKey):
        safe_join(base, key)


def test_safe_join_keeps_ordinary_keys_inside_and_sees_through_symlinks(tmp_path):
    dst = tmp_path / "dst"
    dst.mkdir()
    for key in ("a.png", "a/b/c.png", "...png", "a..b.png", "~/x.png", "ünï cödé/ß.png", "a/.hidden.png"):
        out = Path(safe_join(str(dst), key))
        assert out.resolve().is_relative_to(dst.resolve()) and out.resolve() != dst.resolve(), key
    assert safe_join("s3://bucket/dst", "a/b.png") == "s3://bucket/dst/a/b.png"
    outside = tmp_path / "outside"
    outside.mkdir()
    (dst / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafeKey):
        safe_join(str(dst), "link/x.png")


@pytest.fixture(scope="module")
def hostile_table(tmp_path_factory, codec):
    """A local table holding one real row under a safe key and the same payload under every unsafe key."""
    root = tmp_path_factory.mktemp("hostile") / "table"
    data = codec.encode(photo_crop(5, 24), quality=40, measure=False).data
    s = bitstream.parse(data)
    now = dt.datetime.now(dt.timezone.utc)

    def row(key):
        return dict(
            key=key, source_uri=f"/src/{key!r}", source_size=len(data), source_sha256="00" * 32, width=s.width,
            height=s.height, mode=s.mode, codec=s.codec, format_version=bitstream.FORMAT_VERSION,
            model_sha256=codec.model.fingerprint, params="{}", payload=data, payload_size=len(data),
            payload_crc32c=bitstream.crc32c(data), bpp=len(data) * 8 / (s.width * s.height), psnr=30.0,
            metadata=None, encoded_at=now, source_etag=None, ms_ssim=None, run_id="20990101T000000000000Z-abcdef",
        )

    table = BitstreamTable(str(root))
    run = "20990101T000000000000Z-abcdef"
    part = table.write_part(run, "data", pa.Table.from_pylist([row("good/ok.png")] + [row(k) for k in UNSAFE_KEYS],
                                                               TABLE_SCHEMA))
    table.commit(run, [part], [], rows=1 + len(UNSAFE_KEYS), errors=0)
    assert table.read(columns=["key"]).num_rows == 1 + len(UNSAFE_KEYS)
    return str(root)


def _files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def _check_restore(res, written: set[str]):
    assert res.restored == 1, res.failures
    failures = {f["key"]: f for f in res.failures}
    assert set(failures) == set(UNSAFE_KEYS)
    for key, f in failures.items():
        assert f["error_type"] == "UnsafeKey", (key, f)
    assert written == {"good/ok.png"}, written


@pytest.mark.usefixtures("ray_cluster")
def test_restore_to_a_local_dst_never_writes_outside(tmp_path, hostile_table):
    from latentarc.pipeline.restore import run_restore

    work = tmp_path / "work"
    dst = work / "deep" / "dst"
    dst.mkdir(parents=True)
    before = _files_under(tmp_path)
    res = run_restore(hostile_table, str(dst), weights=str(MODELS), workers=1, batch_size=4)
    _check_restore(res, _files_under(dst))
    assert _files_under(tmp_path) - before == {f"work/deep/dst/{p}" for p in _files_under(dst)}
    for name in ("escape.png", "escape-twice.png", "abs-escape.png", "up-escape.png"):
        assert not list(Path("/").glob(name)) and not list(tmp_path.rglob(name)), name


@pytest.mark.usefixtures("ray_cluster")
def test_restore_to_s3_dst_never_writes_outside(s3, bucket, hostile_table):
    """Same table, S3 destination, selected by key list (the other selection path)."""
    from latentarc.pipeline.restore import run_restore

    fs = s3fs.S3FileSystem(**s3, use_listings_cache=False, skip_instance_cache=True)
    buckets_before = set(fs.ls(""))
    res = run_restore(hostile_table, f"{bucket}/dst", keys=["good/ok.png", *UNSAFE_KEYS], dst_options=s3,
                      weights=str(MODELS), workers=1, batch_size=4)
    name = bucket.removeprefix("s3://")
    written = {p.removeprefix(f"{name}/") for p in fs.find(name)}
    assert all(p.startswith("dst/") for p in written), written
    _check_restore(res, {p.removeprefix("dst/") for p in written})
    assert set(fs.ls("")) == buckets_before  # no other bucket was touched ("s3://other-bucket/...")
