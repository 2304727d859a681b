"""Parser fuzzing: random, mutated and forged streams fail with latentarc's typed errors only.

Whatever bytes reach :func:`bitstream.parse`, :meth:`NeuralCodec.parse`, :meth:`NeuralCodec.info` or
:meth:`NeuralCodec.decode`, the outcome is either a decoded image of the declared size or a
:class:`BitstreamError` subclass (:class:`ImageError` only for a damaged alpha section) - never a ValueError,
IndexError, struct.error, OverflowError or MemoryError, never a hang, never a huge allocation.

Most mutations are done twice: with the CRC left as it is (the envelope check must catch them) and with a
freshly computed CRC-32C over the mutated body, so that the structural checks *behind* the CRC (lengths,
geometry, quantization and entropy parameters, payload) are exercised too - a forged or buggy writer produces
exactly such streams. Every example runs under a hard wall-clock limit (SIGALRM) besides Hypothesis' deadline,
and each decoding test checks the process' peak-RSS growth.
"""

from __future__ import annotations

import contextlib
import io
import os
import resource
import signal
import struct
import subprocess
import sys
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from latentarc.codec import bitstream, entropy
from latentarc.codec.errors import BitstreamError, CorruptStream, ImageError
from latentarc.codec.images import Picture
from latentarc.codec.neural import NeuralCodec
from latentarc.codec.quantize import QuantParams

from .conftest import MODELS, photo_crop

pytestmark = pytest.mark.shared("models", "photos")

#: Hypothesis deadline of examples that run the decoder network (ms): generous, because the CI machine's 2 cores
#: are shared with other jobs and a 64x64 decode that takes 0.1 s idle was seen taking 8 s under load - a
#: Hypothesis deadline failure there would be noise. Parse-only tests keep a tight deadline. A stuck example is
#: interrupted by HARD_LIMIT_S (SIGALRM) whatever the deadline.
DEADLINE_MS = 15_000
PARSE_DEADLINE_MS = 2_000
HARD_LIMIT_S = 30
#: peak-RSS growth allowed over one fuzz test
MAX_RSS_GROWTH_MB = 500
#: pixel guard of the decoder used for forged geometry: keeps every decode that reaches the network small
FUZZ_MAX_PIXELS = 1 << 16
#: LATENTARC_FUZZ_SCALE=10 runs ten times as many examples (a longer local fuzzing session)
SCALE = float(os.environ.get("LATENTARC_FUZZ_SCALE", "1"))

FUZZ = settings(
    deadline=DEADLINE_MS,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


def fuzz(max_examples: int, **kw) -> settings:
    return settings(FUZZ, max_examples=max(1, int(max_examples * SCALE)), **kw)


# ------------------------------------------------------------------------------------------------ helpers
class Stuck(BaseException):
    """Raised by :func:`hard_limit`; a BaseException so that no ``except Exception`` in the code under test can
    turn a hang into a (typed) error."""


@contextlib.contextmanager
def hard_limit(seconds: float = HARD_LIMIT_S):
    """Interrupt a stuck example (Hypothesis' deadline only judges it after it returns)."""

    def boom(signum, frame):
        raise Stuck(f"example ran longer than {seconds} s")

    old = signal.signal(signal.SIGALRM, boom)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


@pytest.fixture
def bounded_rss():
    """Fail the test when the process' peak RSS grew by more than MAX_RSS_GROWTH_MB while it ran."""
    before = _rss_mb()
    yield
    grown = _rss_mb() - before
    assert grown < MAX_RSS_GROWTH_MB, f"peak RSS grew by {grown:.0f} MB"


def fresh_crc(body: bytes) -> bytes:
    """``body`` followed by its CRC-32C, as :func:`bitstream.pack` writes it."""
    return bytes(body) + struct.pack("<I", bitstream.crc32c(bytes(body)))


def check_parse(data: bytes) -> bitstream.Stream | None:
    try:
        with hard_limit():
            return bitstream.parse(data)
    except BitstreamError:
        return None


def check_decode(codec: NeuralCodec, data: bytes, *, info: bool = True):
    """Decode (and ``info``) ``data``: a typed error or an image of the declared size; nothing else."""
    declared = check_parse(data)
    if info:
        try:
            with hard_limit():
                codec.info(data)
        except BitstreamError:
            pass
    try:
        with hard_limit():
            dec = codec.decode(data)
    except BitstreamError:
        return None
    except ImageError as e:  # only the lossless alpha plane is an image inside the stream
        assert declared is not None and "ALPH" in declared.sections, f"ImageError without an alpha section: {e}"
        assert "alpha" in str(e)
        return None
    assert declared is not None, "decode accepted bytes that parse refused"
    assert dec.image.size == (declared.width, declared.height)
    assert dec.rgb.shape == (declared.height, declared.width, 3)
    return dec


# ----------------------------------------------------------------------------------------------- streams
class _Streams(list):
    def __repr__(self) -> str:  # keep Hypothesis' failure reports readable
        return f"<{len(self)} real streams>"


@pytest.fixture(scope="module")
def streams(codec) -> list[bytes]:
    """Two real small streams: a plain 24x24 photo crop, and one with an alpha plane, ICC and EXIF sections."""
    codec = NeuralCodec(codec.model, adaptive=False)  # same streams as far as parsing goes, a faster encode
    plain = codec.encode(photo_crop(2, 24), quality=50, measure=False).data
    pic = photo_crop(3, 24)
    alpha = np.tile(np.arange(24, dtype=np.uint8) * 10, (24, 1))
    rich = Picture(pic.rgb, alpha, "RGBA", icc=b"fake icc profile " * 3, exif=b"Exif\x00\x00MM\x00*" + bytes(20))
    extra = codec.encode(rich, quality=30, measure=False).data
    for s in (plain, extra):
        codec.decode(s)  # both really decode
    assert "ALPH" in bitstream.parse(extra).sections
    return _Streams([plain, extra])


@pytest.fixture(scope="module")
def fuzz_codec(codec) -> NeuralCodec:
    """The session codec's model behind a small pixel guard, so forged geometry stays cheap to decode."""
    return NeuralCodec(codec.model, max_pixels=FUZZ_MAX_PIXELS)


# ------------------------------------------------------------------------------------------- mutations
_INTERESTING_U32 = [0, 1, 2, 3, 4, 7, 8, 63, 64, 255, 256, 0x7FFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]


@st.composite
def mutation(draw, size_hint: int):
    kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "splice", "u32", "u16", "dup"]))
    pos = draw(st.integers(0, max(0, size_hint)))
    if kind == "flip":
        return (kind, pos, draw(st.integers(1, 255)))
    if kind == "set":
        return (kind, pos, draw(st.integers(0, 255)))
    if kind == "insert":
        return (kind, pos, draw(st.binary(min_size=1, max_size=16)))
    if kind == "delete":
        return (kind, pos, draw(st.integers(1, 32)))
    if kind == "truncate":
        return (kind, pos, None)
    if kind == "splice":  # a slice of another stream (or this one) over / into this one
        return (kind, pos, (draw(st.integers(0, 1)), draw(st.integers(0, 2000)), draw(st.integers(1, 200)),
                            draw(st.booleans())))
    if kind in ("u32", "u16"):
        return (kind, pos, draw(st.sampled_from(_INTERESTING_U32) | st.integers(0, 0xFFFFFFFF)))
    return (kind, pos, draw(st.integers(1, 64)))  # dup: repeat a run of bytes in place


def apply_mutations(data: bytes, muts, others: list[bytes]) -> bytes:
    b = bytearray(data)
    for kind, pos, arg in muts:
        pos = min(pos, len(b))
        if kind == "flip" and b:
            b[min(pos, len(b) - 1)] ^= arg
        elif kind == "set" and b:
            b[min(pos, len(b) - 1)] = arg
        elif kind == "insert":
            b[pos:pos] = arg
        elif kind == "delete":
            del b[pos : pos + arg]
        elif kind == "truncate":
            del b[pos:]
        elif kind == "splice":
            which, start, n, overwrite = arg
            src = others[which % len(others)]
            piece = src[start % max(1, len(src)) :][:n]
            if overwrite:
                b[pos : pos + len(piece)] = piece
            else:
                b[pos:pos] = piece
        elif kind == "u32":
            b[pos : pos + 4] = struct.pack("<I", arg)
        elif kind == "u16":
            b[pos : pos + 2] = struct.pack("<H", arg & 0xFFFF)
        elif kind == "dup":
            b[pos:pos] = b[pos : pos + arg]
    return bytes(b)


# ------------------------------------------------------------------------------- (a) arbitrary bytes
@fuzz(400, deadline=PARSE_DEADLINE_MS)
@given(data=st.binary(max_size=600))
def test_parse_arbitrary_bytes(data):
    check_parse(data)


@fuzz(150)
@given(data=st.binary(max_size=600))
def test_decode_arbitrary_bytes(codec, data, bounded_rss):
    check_decode(codec, data)


@fuzz(300)
@given(tail=st.binary(max_size=400), version=st.sampled_from([*sorted(bitstream.READ_VERSIONS), 0, 3, 255]))
def test_decode_arbitrary_body_behind_a_valid_envelope(codec, tail, version, bounded_rss):
    """Right magic, version and CRC, random fields: the structural checks alone must hold."""
    check_decode(codec, fresh_crc(bitstream.MAGIC + bytes([version]) + tail))


# ---------------------------------------------------------------------- (b) mutations of real streams
@fuzz(150)
@given(which=st.integers(0, 1), muts=st.lists(mutation(900), min_size=1, max_size=4))
def test_mutated_stream_crc_kept(codec, streams, which, muts, bounded_rss):
    """Byte-level damage with the stored CRC left as is (the CRC bytes may be hit too)."""
    bad = apply_mutations(streams[which], muts, streams)
    if bad == streams[which]:
        return
    with pytest.raises(BitstreamError):  # a changed stream never decodes silently while its CRC is stale
        with hard_limit():
            codec.decode(bad)
    check_decode(codec, bad)


@fuzz(150)
@given(which=st.integers(0, 1), muts=st.lists(mutation(900), min_size=1, max_size=4))
def test_mutated_stream_crc_recomputed(fuzz_codec, streams, which, muts, bounded_rss):
    """Byte-level damage behind a valid CRC-32C: only the parser's structural checks stand in the way."""
    body = apply_mutations(streams[which][:-4], muts, [s[:-4] for s in streams])
    check_decode(fuzz_codec, fresh_crc(body))


# ----------------------------------------------------------------------------- (c) structured forging
def _png_declaring(w: int, h: int, mode: str = "L") -> bytes:
    """An 8x8 PNG whose header claims ``w`` x ``h`` (IHDR and its CRC rewritten): a plane nobody allocates."""
    buf = io.BytesIO()
    Image.new(mode, (8, 8), 128).save(buf, format="PNG")
    png = bytearray(buf.getvalue())
    ihdr = struct.pack(">II", min(max(1, w), 0x7FFFFFFF), min(max(1, h), 0x7FFFFFFF)) + png[24:29]
    png[16:29] = ihdr
    png[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(png)


def _alpha_png(w: int, h: int, mode: str = "L") -> bytes:
    """A real ``w`` x ``h`` plane, or, for sizes past any guard, a PNG that only declares them."""
    if max(1, w) * max(1, h) > 4 * FUZZ_MAX_PIXELS:
        return _png_declaring(w, h, mode)
    buf = io.BytesIO()
    Image.new(mode, (max(1, w), max(1, h)), 128).save(buf, format="PNG")
    return buf.getvalue()


_SIZES = st.one_of(
    st.integers(1, 200),
    st.sampled_from([0, 1, 7, 8, 9, 63, 64, 65, 255, 256, 257, 4096, 65535, 65536, 65560, 1 << 24, 0x7FFFFFFF,
                     0xFFFFFFFF]),
    st.integers(0, 0xFFFFFFFF),
)


@st.composite
def quant_and_models(draw, channels_default: int = 32) -> bytes:
    c = draw(st.sampled_from([channels_default, channels_default, 0, 1, 31, 33, 0xFFFF]) | st.integers(0, 64))
    n = min(c, 64)
    steps = draw(st.lists(st.sampled_from([0, 1, 2, 4096, 0xFFFF]) | st.integers(0, 0xFFFF), min_size=n, max_size=n))
    means = draw(st.lists(st.integers(-32768, 32767), min_size=n, max_size=n))
    models = draw(
        st.lists(
            st.tuples(
                st.sampled_from([0, 1, 2, 255, 65535]) | st.integers(0, 0xFFFF),
                st.sampled_from([0, 1, 0x8000, 0xFFFF]) | st.integers(0, 0xFFFF),
                st.sampled_from([0, 1, 0x8000, 0xFFFF]) | st.integers(0, 0xFFFF),
            ),
            min_size=n,
            max_size=n,
        )
    )
    out = struct.pack("<H", c) + struct.pack(f"<{n}H", *steps) + struct.pack(f"<{n}h", *means)
    out += b"".join(struct.pack("<HHH", *m) for m in models)
    if draw(st.booleans()):  # and sometimes a few bytes too many or too few
        out = out + draw(st.binary(max_size=8)) if draw(st.booleans()) else out[: -draw(st.integers(0, 8)) or None]
    return out


@st.composite
def forged_stream(draw, streams: list[bytes]) -> bytes:
    s = bitstream.parse(streams[draw(st.integers(0, len(streams) - 1))])
    fields = draw(st.sets(st.sampled_from(
        ["geometry", "pad", "params", "params_bytes", "sections", "alpha", "payload", "codec", "entropy_model",
         "mode", "fingerprint", "version"]), min_size=1, max_size=4))
    if "geometry" in fields:
        s.width, s.height = draw(_SIZES), draw(_SIZES)
        if draw(st.booleans()):  # keep the padding consistent with the stride so the size guard is reached
            s.pad_right, s.pad_bottom = (-s.width) % 8, (-s.height) % 8
    if "pad" in fields:
        s.pad_right = draw(st.sampled_from([0, 7, 8, 40, 63, 64, 0xFFFF]) | st.integers(0, 0xFFFF))
        s.pad_bottom = draw(st.sampled_from([0, 7, 8, 40, 63, 64, 0xFFFF]) | st.integers(0, 0xFFFF))
    if "params" in fields:
        s.params = draw(quant_and_models())
    if "params_bytes" in fields:
        s.params = apply_mutations(s.params, draw(st.lists(mutation(len(s.params)), min_size=1, max_size=3)), [s.params])
    if "sections" in fields:
        tags = st.sampled_from(["ALPH", "ICCP", "EXIF", "XXXX", "\x00\x00\x00\x00"])
        s.sections = draw(st.dictionaries(tags, st.binary(max_size=64), max_size=4))
    if "alpha" in fields:
        kind = draw(st.sampled_from(["match", "size", "mode", "truncated", "garbage", "empty", "bomb"]))
        if kind == "match":
            s.sections["ALPH"] = _alpha_png(s.width, s.height)
        elif kind == "size":
            s.sections["ALPH"] = _alpha_png(draw(st.integers(1, 64)), draw(st.integers(1, 64)))
        elif kind == "mode":
            s.sections["ALPH"] = _alpha_png(s.width, s.height, draw(st.sampled_from(["1", "RGB", "RGBA", "I;16", "P"])))
        elif kind == "truncated":
            full = _alpha_png(s.width, s.height)
            s.sections["ALPH"] = full[: draw(st.integers(0, len(full) - 1))]
        elif kind == "garbage":
            s.sections["ALPH"] = draw(st.binary(max_size=200))
        elif kind == "empty":
            s.sections["ALPH"] = b""
        else:  # a PNG header declaring a huge plane (the decompression-bomb guard of Pillow)
            side = draw(st.sampled_from([20_000, 100_000, 0x7FFFFFFF]))
            s.sections["ALPH"] = _png_declaring(side, side)
    if "payload" in fields:
        how = draw(st.sampled_from(["random", "empty", "zeros", "mutate", "ones", "unaligned"]))
        if how == "random":
            s.payload = draw(st.binary(max_size=2000))
        elif how == "empty":
            s.payload = b""
        elif how == "zeros":
            s.payload = bytes(4 * draw(st.integers(1, 8)))
        elif how == "ones":
            s.payload = b"\xff" * 4 * draw(st.integers(1, 300))
        elif how == "unaligned":
            s.payload = s.payload + b"\x01"
        else:
            s.payload = apply_mutations(s.payload, draw(st.lists(mutation(len(s.payload)), min_size=1, max_size=3)),
                                        [s.payload])
    if "codec" in fields:
        s.codec = draw(st.sampled_from(["", "tae-f2x", "TAE-F2", "diffusers:x/y", "tae-f2\x00"])
                       | st.text(st.characters(max_codepoint=127), max_size=255))
    if "entropy_model" in fields:
        s.entropy_model = draw(st.integers(0, 255))
    if "mode" in fields:
        s.mode = draw(st.sampled_from(["RGB", "RGBA", "L", "LA", "1", "I;16", "I", "P", "PA", "CMYK", "F", "", "??"])
                      | st.text(st.characters(max_codepoint=127), max_size=255))
    if "fingerprint" in fields:
        s.model_fingerprint = draw(st.binary(min_size=8, max_size=8))
    if "version" in fields:
        s.format_version = draw(st.integers(0, 255))
    return bitstream.pack(s)


@fuzz(200)
@given(data=st.data())
def test_forged_fields_behind_a_valid_crc(fuzz_codec, streams, data, bounded_rss):
    """Parse a real stream, change fields (sizes, pads, params, sections, alpha, payload, names, ids), repack."""
    check_decode(fuzz_codec, data.draw(forged_stream(streams)))


@st.composite
def consistent_stream(draw, codec: NeuralCodec) -> tuple[bytes, int, int]:
    """A well-formed stream that was never an image: random geometry, steps, means, models and symbols within
    the models' ranges, entropy coded for real - the decoder must produce an image of the declared size."""
    coded_w, coded_h = 8 * draw(st.integers(1, 12)), 8 * draw(st.integers(1, 12))
    if coded_w < codec.min_coded and draw(st.booleans()):
        coded_w = codec.min_coded
    w = draw(st.integers(max(1, coded_w - 63), coded_w))
    h = draw(st.integers(max(1, coded_h - 63), coded_h))
    c = codec.model.latent_channels
    n = (coded_w // 8) * (coded_h // 8)
    models, symbols = [], np.zeros((c, n), np.int32)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    extreme = draw(st.booleans())  # one channel with the widest table (131071 symbols)
    for ch in range(c):
        m = 65535 if extreme and ch == 0 else draw(st.sampled_from([0, 1, 3, 255]) | st.integers(0, 1000))
        p0 = draw(st.integers(1, 0xFFFF))
        theta = draw(st.integers(0, 0xFFFF))
        models.append(entropy.ChannelModel(m, p0, theta))
        if m:
            symbols[ch] = rng.integers(-m, m + 1, n)
    qp = QuantParams(
        np.array(draw(st.lists(st.integers(1, 0xFFFF), min_size=c, max_size=c)), np.uint16),
        np.array(draw(st.lists(st.integers(-32768, 32767), min_size=c, max_size=c)), np.int16),
    )
    mode = draw(st.sampled_from(["RGB", "RGBA", "L", "LA", "I;16", "P", "CMYK"]))
    sections = {}
    if mode != "I;16" and draw(st.booleans()):  # 16-bit greyscale never carries alpha (refused on parse)
        sections["ALPH"] = _alpha_png(w, h)
    s = bitstream.Stream(
        codec=codec.name, width=w, height=h, mode=mode, params=qp.pack() + entropy.pack_models(models),
        payload=entropy.encode(symbols, models),
        model_fingerprint=bytes.fromhex(codec.model.fingerprint)[: bitstream.FINGERPRINT_BYTES],
        entropy_model=entropy.ENTROPY_MODEL_ID, pad_right=coded_w - w, pad_bottom=coded_h - h, sections=sections,
    )
    return bitstream.pack(s), w, h


@fuzz(10)
@given(data=st.data())
def test_well_formed_synthetic_streams_decode(fuzz_codec, data, bounded_rss):
    """Extreme but consistent parameters (steps, means, max_abs up to 65535) decode to the declared size."""
    stream, w, h = data.draw(consistent_stream(fuzz_codec))
    dec = check_decode(fuzz_codec, stream, info=True)
    assert dec is not None, "a well-formed stream did not decode"
    assert dec.image.size == (w, h)


# ------------------------------------------------------------------- explicit worst cases (no Hypothesis)
def test_forged_geometry_at_the_default_guard_fails_fast_and_small(codec, streams):
    """The largest size the default guard admits, with the real (tiny) payload: refused in the entropy stage,
    before the network runs, in bounded time and memory. (A stream whose payload *does* cover such a size is a
    legitimate 89 MP decode; its cost is bounded by ``max_pixels`` only.)"""
    s = bitstream.parse(streams[0])
    side = int(codec.max_pixels**0.5) // 8 * 8
    s.width, s.height, s.pad_right, s.pad_bottom = side, side, 0, 0
    forged = bitstream.pack(s)
    tracemalloc.start()
    t = time.perf_counter()
    try:
        with pytest.raises(CorruptStream):
            with hard_limit(60):
                codec.decode(forged)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t < 30
    assert peak < MAX_RSS_GROWTH_MB * 2**20, f"{peak / 2**20:.0f} MB traced"
    for w, h in ((side + 8, side), (0xFFFFFFF8, 8), (8, 0xFFFFFFF8), (0xFFFFFFF8, 0xFFFFFFF8)):
        s.width, s.height = w, h
        with pytest.raises(CorruptStream, match="pixel guard"):
            codec.parse(bitstream.pack(s))


def test_forged_entropy_parameters_at_their_limits(codec, streams):
    """max_abs = 65535 on every channel (131071-symbol tables) behind a valid CRC: a typed error or an image of
    the declared size (the real payload happens to decode under some of these models), within seconds."""
    s = bitstream.parse(streams[0])
    qp, _ = QuantParams.unpack(s.params)
    for p0, theta in ((1, 0xFFFF), (0xFFFF, 0), (0x8000, 0x8000)):
        s.params = qp.pack() + entropy.pack_models([entropy.ChannelModel(65535, p0, theta)] * qp.channels)
        t = time.perf_counter()
        check_decode(codec, bitstream.pack(s))
        assert time.perf_counter() - t < 30


def test_payload_ending_in_a_zero_word_is_a_typed_error(codec, streams):
    """constriction rejects ANS data that ends in a zero word with a ValueError; info() must not leak it."""
    s = bitstream.parse(streams[0])
    s.payload = s.payload + bytes(4)
    forged = bitstream.pack(s)
    with pytest.raises(CorruptStream):
        codec.decode(forged)
    with pytest.raises(CorruptStream):
        codec.info(forged)


def test_oversized_alpha_png_is_an_image_error(codec, streams):
    """An alpha section whose PNG header declares a decompression bomb: a typed error, nothing decoded."""
    s = bitstream.parse(streams[1])
    for side in (20_000, 0x7FFFFFFF):
        s.sections["ALPH"] = _png_declaring(side, side)
        with pytest.raises(ImageError, match="alpha"):
            codec.decode(bitstream.pack(s))


# --------------------------------------------------------------------------------------------- atheris
ATHERIS_HARNESS = Path(__file__).with_name("fuzz_atheris.py")


def test_atheris_harness_runs_clean(tmp_path, streams):
    """Coverage-guided fuzzing of bitstream.parse + NeuralCodec.parse/info for a bounded number of runs."""
    pytest.importorskip("atheris")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, s in enumerate(streams):
        (corpus / f"seed{i}").write_bytes(s)
    env = dict(os.environ, LATENTARC_MODEL_DIR=str(MODELS), LATENTARC_OFFLINE="1")
    proc = subprocess.run(
        # -rss_limit_mb=0: a child inherits its parent's ru_maxrss across fork+exec on Linux, so libFuzzer's own
        # check would blame pytest's memory; the harness checks its own high-water mark (VmHWM) instead
        [sys.executable, str(ATHERIS_HARNESS), "-runs=1000", "-max_total_time=10", "-max_len=2048",
         "-rss_limit_mb=0", "-timeout=20", f"-artifact_prefix={tmp_path}/", "-print_final_stats=1", str(corpus)],
        capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path,
    )
    tail = (proc.stdout + proc.stderr)[-4000:]
    assert proc.returncode == 0, tail
    assert "Done" in tail or "stat::number_of_executed_units" in tail, tail
