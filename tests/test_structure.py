"""The code's structure, checked: no import cycles, no capability probes, one registry per kind with every
shipped weight file pinned, and codec specs that travel as plain values."""

from __future__ import annotations

import argparse
import ast
import pickle
from pathlib import Path

import pytest

from latentarc.codec import codecs
from latentarc.codec.base import CODECS, Codec
from latentarc.codec.spec import CodecSpec

REPO = Path(__file__).resolve().parent.parent
PACKAGES = {"codec": "latentarc.codec", "pipeline": "latentarc.pipeline", "jobs": "latentarc.jobs"}
#: attribute probes of *other libraries'* objects that have no typed alternative: (file, attribute)
FOREIGN_PROBES = {("codec/images.py", "n_frames")}  # Pillow defines n_frames only on multi-frame formats


def _modules() -> dict[str, Path]:
    out = {}
    for folder, package in PACKAGES.items():
        for f in sorted((REPO / folder).rglob("*.py")):
            parts = [package, *f.relative_to(REPO / folder).with_suffix("").parts]
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every latentarc module ``name`` imports, at the top or inside a function."""
    package = name if path.stem == "__init__" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if node.level else []
            target = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module or ""
            names = [target] + [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {n for n in names if n in known and n != name}
    return found


def test_no_import_cycles():
    mods = _modules()
    graph = {m: _imports(m, p, set(mods)) for m, p in mods.items()}
    cycles = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(m, stack):
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles: " + "; ".join(" → ".join(c) for c in cycles)


def test_no_capability_probes():
    """Capabilities are declared (``Codec.caps``, typed attributes), never probed with hasattr / getattr(…, default)."""
    probes = []
    for name, path in _modules().items():
        rel = path.relative_to(REPO).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                if node.func.id == "hasattr" or (node.func.id == "getattr" and len(node.args) == 3):
                    attr = node.args[1].value if isinstance(node.args[1], ast.Constant) else "?"
                    if (rel, attr) not in FOREIGN_PROBES:
                        probes.append(f"{rel}:{node.lineno} {node.func.id}(…, {attr!r})")
    assert not probes, probes


def test_every_registered_codec_builds_from_a_spec_and_declares_its_capabilities():
    for name in CODECS:
        cls = CODECS.get(name)
        assert issubclass(cls, Codec), name
        codec = codecs.build(CodecSpec(name))
        assert isinstance(codec, cls) and codec.name == name and codec.caps == cls.caps
        assert codecs.capabilities(name) == cls.caps
    assert codecs.capabilities("passthrough").keeps_source and not codecs.capabilities("avif").keeps_source


@pytest.mark.shared("models")
def test_model_names_fall_back_to_the_neural_codec():
    from latentarc.codec.errors import UnknownModel
    from latentarc.codec.neural import NeuralCodec

    codec = codecs.build(CodecSpec("tae-f2", device="cpu", entropy_model="tae-f2-ctx", rdoq=0.5, global_step=True))
    assert isinstance(codec, NeuralCodec) and codec.caps.refines and codec.weights_sha256() == codec.model.fingerprint
    assert (codec.coder.name, codec.rdoq, codec.adaptive) == ("tae-f2-ctx", 0.5, False)
    with pytest.raises(UnknownModel, match="no-such-codec"):
        codecs.build(CodecSpec("no-such-codec"))


def test_every_shipped_weight_file_is_pinned():
    """A folder in ``codec/weights/`` is loaded only after its file matches a SHA-256 written in the code."""
    from latentarc.codec import encoders, refine
    from latentarc.codec.latent_coding import ENTROPY_MODELS, ContextCoder
    from latentarc.codec.weights import WEIGHTS_DIR, sha256_file

    pinned = {*refine.SHIPPED_DENOISERS.values(), *encoders.SHIPPED.values()}
    pinned |= {sha for ft in encoders.SHIPPED_FT.values() for sha in (ft.encoder_sha256, ft.decoder_sha256)}
    pinned |= {c.sha256 for _, c in ENTROPY_MODELS.items() if isinstance(c, ContextCoder)}
    folders = [f for f in WEIGHTS_DIR.iterdir() if f.is_dir()]
    assert folders
    for folder in folders:
        files = [f for f in folder.glob("*.safetensors")]
        assert files and all(sha256_file(f) in pinned for f in files), folder.name


def test_a_tampered_shipped_file_is_refused(tmp_path, monkeypatch):
    from latentarc.codec import latent_coding
    from latentarc.codec.errors import WeightsChecksumMismatch

    shipped = latent_coding.coder("tae-f2-ctx")
    fake = tmp_path / shipped.name
    fake.mkdir()
    for f in (latent_coding.WEIGHTS_DIR / shipped.name).iterdir():
        data = f.read_bytes()
        (fake / f.name).write_bytes(data[:-1] + bytes([data[-1] ^ 1]) if f.suffix == ".safetensors" else data)
    coder = latent_coding.ContextCoder(shipped.id, shipped.name, shipped.sha256)
    monkeypatch.setattr(latent_coding, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(WeightsChecksumMismatch):
        coder.model


def test_codec_spec_is_a_plain_value_read_from_the_command_line():
    from latentarc.jobs.cli import _codec_spec, build_parser

    a = build_parser().parse_args(["compress", "src", "table", "--codec", "auto", "--codecs", "avif,jxl",
                                   "--entropy-model", "tae-f2-ctx", "--rdoq", "0.5", "--latent-search", "3",
                                   "--global-step", "--verify-refine"])
    spec = _codec_spec(a, weights="/w")
    assert spec == CodecSpec("auto", weights="/w", codecs="avif,jxl", entropy_model="tae-f2-ctx", rdoq=0.5,
                             latent_search=3, global_step=True, verify_refine=True)
    assert pickle.loads(pickle.dumps(spec)) == spec and hash(spec) == hash(pickle.loads(pickle.dumps(spec)))
    assert spec.member("avif") == CodecSpec("avif", weights="/w", entropy_model="tae-f2-ctx", rdoq=0.5,
                                            latent_search=3, global_step=True, verify_refine=True)
    assert CodecSpec.from_args(argparse.Namespace(unrelated=1)) == CodecSpec()


@pytest.mark.shared("models")
def test_an_option_travels_from_the_command_line_to_the_codec(tmp_path):
    """``--probes`` (a CodecSpec field read by the neural codec) reaches the codec, and its streams decode."""
    from latentarc.codec.api import codec_for_stream
    from latentarc.jobs.cli import _codec_spec, build_parser, main

    from .conftest import photo_png

    src, out = tmp_path / "a.png", tmp_path / "a.larc"
    src.write_bytes(photo_png(0, 96, 64))
    args = ["encode", str(src), str(out), "--probes", "1", "--quality", "50", "--device", "cpu"]
    assert codecs.build(_codec_spec(build_parser().parse_args(args))).probes == 1
    assert main(args) == 0
    data = out.read_bytes()
    assert codec_for_stream(data, device="cpu").decode(data).image.size == (96, 64)
    with pytest.raises(ValueError, match="probes"):
        codecs.build(CodecSpec(probes=0, device="cpu"))


def test_row_dataclasses_are_the_schemas():
    """TableRow / ErrorRow hold exactly the columns of their Arrow schemas, a nullable column defaulting to None
    and a required one having no default; a row built from them writes through rows_to_table."""
    import dataclasses
    from datetime import datetime, timezone

    from latentarc.pipeline.table.schema import ERRORS_SCHEMA, TABLE_SCHEMA, ErrorRow, TableRow, rows_to_table

    for cls, schema in ((TableRow, TABLE_SCHEMA), (ErrorRow, ERRORS_SCHEMA)):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        assert set(fields) == set(schema.names), cls.__name__
        for col in schema:
            has_default = fields[col.name].default is not dataclasses.MISSING
            assert has_default == col.nullable and (not has_default or fields[col.name].default is None), col.name
    err = ErrorRow(key="a.png", source_uri="file:///a.png", stage="read", error_type="UnreadableImage",
                   message="truncated", at=datetime.now(timezone.utc), run_id="r1")
    t = rows_to_table([err.as_dict()], ERRORS_SCHEMA, strict=True)
    assert t.num_rows == 1 and t.column("source_size").null_count == 1
