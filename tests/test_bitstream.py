"""The LARC container: every damage is detected and named, before any model work."""

from __future__ import annotations

import numpy as np
import pytest

from latentarc.codec import bitstream
from latentarc.codec.errors import (
    BadMagic,
    BitstreamError,
    ChecksumMismatch,
    ModelMismatch,
    TruncatedStream,
    UnsupportedVersion,
)
from latentarc.jobs.cli import main

pytestmark = pytest.mark.shared("models", "photos")


@pytest.fixture(scope="module")
def stream(codec):
    from .conftest import photo_crop

    pic = photo_crop(2, 24)
    return codec.encode(pic, quality=50, measure=False).data


def test_pack_parse_roundtrip():
    s = bitstream.Stream("x", 3, 5, "RGBA", b"params", b"payload", b"12345678", 7, 5, 3, {"ALPH": b"a", "EXIF": b""})
    assert bitstream.parse(bitstream.pack(s)) == s


def test_every_single_byte_flip_is_detected(codec, stream):
    """Flip each byte of a real stream in turn: every decode raises a typed error, none returns an image."""
    assert len(stream) > 100
    kinds = set()
    for i in range(len(stream)):
        for mask in (0x01, 0xFF):
            bad = bytearray(stream)
            bad[i] ^= mask
            with pytest.raises(BitstreamError) as e:
                codec.decode(bytes(bad))
            kinds.add(type(e.value))
    assert kinds == {BadMagic, UnsupportedVersion, ChecksumMismatch}


def test_truncation_is_detected(codec, stream):
    for n in range(len(stream)):
        with pytest.raises((TruncatedStream, BadMagic, ChecksumMismatch)):
            codec.decode(stream[:n])


def test_stream_for_another_model(codec, stream):
    s = bitstream.parse(stream)
    s.model_fingerprint = bytes(8)
    with pytest.raises(ModelMismatch, match="decoder weights"):
        codec.decode(bitstream.pack(s))
    s = bitstream.parse(stream)
    s.codec = "diffusers:some/other-vae"
    with pytest.raises(ModelMismatch, match="other-vae"):
        codec.decode(bitstream.pack(s))


def test_cli_reports_damage_in_one_line(tmp_path, stream, capsys):
    bad = bytearray(stream)
    bad[len(bad) // 2] ^= 0x10
    path = tmp_path / "bad.larc"
    path.write_bytes(bytes(bad))
    rc = main(["decode", str(path), str(tmp_path / "out.png")])
    err = capsys.readouterr().err.strip()
    assert rc != 0
    assert err.count("\n") == 0 and "ChecksumMismatch" in err
    assert not (tmp_path / "out.png").exists()
    path.write_bytes(b"GIF89a not a stream at all")
    assert main(["info", str(path)]) != 0
    assert "BadMagic" in capsys.readouterr().err


def test_hostile_header_cannot_force_a_huge_allocation(codec, stream):
    """A forged stream with a valid CRC but an absurd size is refused before decoding."""
    s = bitstream.parse(stream)
    s.width, s.height = 1_000_000, 1_000_000
    from latentarc.codec.errors import CorruptStream

    with pytest.raises(CorruptStream):
        codec.decode(bitstream.pack(s))
    s = bitstream.parse(stream)
    s.payload = np.random.default_rng(0).bytes(len(s.payload))
    with pytest.raises(BitstreamError):
        codec.decode(bitstream.pack(s))
