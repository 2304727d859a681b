"""The self-describing latentarc container (DESIGN.md §4).

Layout, little-endian::

    "LARC" | version u8 | codec name (u8 len + ASCII) | model fingerprint 8 B (SHA-256 prefix, zeros if none)
    | entropy-model id u8 | width u32 | height u32 | pad right u16 | pad bottom u16 | mode (u8 len + ASCII)
    | params (u32 len + bytes) | sections: count u8, each tag 4 B + u32 len + bytes | payload (u32 len + bytes)
    | CRC-32C (u32) of everything before it

Width and height are those of the coded picture. A stream coded at a reduced resolution (rate control's low end,
``codec.neural``) carries the size to restore in a ``SIZE`` section (width u32, height u32) and is written as
version 2, so a reader of version 1 only refuses it instead of returning a smaller image; every other stream is
version 1, byte for byte as before.

:func:`parse` checks length, magic, version and CRC before it reads any field, then bounds every length
against the bytes actually present, so a damaged or hostile stream yields a typed error and never a large
allocation or a garbage image. Sections carry optional extras (alpha plane, ICC, EXIF) by tag.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import google_crc32c

from .errors import BadMagic, ChecksumMismatch, CorruptStream, TruncatedStream, UnsupportedVersion

MAGIC = b"LARC"
FORMAT_VERSION = 1  # what a stream restored at its coded size is written as
RESIZED_VERSION = 2  # a stream with a SIZE section: restored at another size than it was coded at
READ_VERSIONS = frozenset({FORMAT_VERSION, RESIZED_VERSION})
SECTION_SIZE = "SIZE"
FINGERPRINT_BYTES = 8
_MIN_SIZE = len(MAGIC) + 1 + 4


def crc32c(data: bytes) -> int:
    return google_crc32c.value(data)


@dataclass
class Stream:
    codec: str
    width: int
    height: int
    mode: str
    params: bytes = b""
    payload: bytes = b""
    model_fingerprint: bytes = bytes(FINGERPRINT_BYTES)
    entropy_model: int = 0
    pad_right: int = 0
    pad_bottom: int = 0
    sections: dict[str, bytes] = field(default_factory=dict)
    #: the size to restore (width, height) when it is not the coded one: packed as the SIZE section
    restored_size: tuple[int, int] | None = None
    #: what :func:`parse` read; :func:`pack` writes the version the content needs (2 with a restored size)
    format_version: int = FORMAT_VERSION

    @property
    def output_size(self) -> tuple[int, int]:
        """(width, height) of the restored image."""
        return self.restored_size or (self.width, self.height)


def version_of(data: bytes) -> int:
    """The container version a stream declares (byte 4), or :data:`FORMAT_VERSION` for bytes that are no
    latentarc container (another codec's own payload)."""
    return data[4] if len(data) > 4 and bytes(data[:4]) == MAGIC else FORMAT_VERSION


def _short_str(s: str) -> bytes:
    b = s.encode("ascii")
    if len(b) > 255:
        raise ValueError(f"{s!r} is too long for the container")
    return bytes([len(b)]) + b


def pack(s: Stream) -> bytes:
    if len(s.model_fingerprint) != FINGERPRINT_BYTES:
        raise ValueError("model fingerprint must be 8 bytes")
    sections = dict(s.sections)
    sections.pop(SECTION_SIZE, None)
    version = FORMAT_VERSION
    if s.restored_size is not None and s.restored_size != (s.width, s.height):
        sections[SECTION_SIZE] = struct.pack("<II", *s.restored_size)
        version = RESIZED_VERSION
    parts = [
        MAGIC,
        bytes([version]),
        _short_str(s.codec),
        s.model_fingerprint,
        struct.pack("<BIIHH", s.entropy_model, s.width, s.height, s.pad_right, s.pad_bottom),
        _short_str(s.mode),
        struct.pack("<I", len(s.params)),
        s.params,
        bytes([len(sections)]),
    ]
    for tag, body in sorted(sections.items()):
        t = tag.encode("ascii")
        if len(t) != 4:
            raise ValueError(f"section tag {tag!r} must be 4 ASCII characters")
        parts += [t, struct.pack("<I", len(body)), body]
    parts += [struct.pack("<I", len(s.payload)), s.payload]
    body = b"".join(parts)
    return body + struct.pack("<I", crc32c(body))


class _Reader:
    def __init__(self, data: memoryview, pos: int):
        self.data, self.pos = data, pos

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise CorruptStream(f"{what} runs past the end of the stream")
        b = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return b

    def unpack(self, fmt: str, what: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))

    def short_str(self, what: str) -> str:
        (n,) = self.unpack("<B", what)
        try:
            return self.take(n, what).decode("ascii")
        except UnicodeDecodeError:
            raise CorruptStream(f"{what} is not ASCII") from None


def check_envelope(data: bytes) -> None:
    """Length, magic, version and CRC — cheap checks that need no parsing and no model."""
    if len(data) < _MIN_SIZE:
        if MAGIC.startswith(bytes(data[:4])):
            raise TruncatedStream(f"stream is {len(data)} bytes, shorter than any latentarc stream")
        raise BadMagic("not a latentarc stream (too short, wrong magic)")
    if bytes(data[:4]) != MAGIC:
        raise BadMagic(f"not a latentarc stream: magic {bytes(data[:4])!r}, expected {MAGIC!r}")
    if data[4] not in READ_VERSIONS:
        raise UnsupportedVersion(f"format version {data[4]}; this build reads versions "
                                 f"{', '.join(map(str, sorted(READ_VERSIONS)))}")
    (stored,) = struct.unpack_from("<I", data, len(data) - 4)
    if crc32c(bytes(data[:-4])) != stored:
        raise ChecksumMismatch("CRC-32C mismatch: the stream is truncated or was altered")


def parse(data: bytes) -> Stream:
    check_envelope(data)
    r = _Reader(memoryview(data)[:-4], 5)
    codec = r.short_str("codec name")
    fp = r.take(FINGERPRINT_BYTES, "model fingerprint")
    entropy_model, width, height, pad_r, pad_b = r.unpack("<BIIHH", "image geometry")
    mode = r.short_str("image mode")
    (n,) = r.unpack("<I", "params length")
    params = r.take(n, "params")
    (count,) = r.unpack("<B", "section count")
    sections = {}
    for _ in range(count):
        tag = r.take(4, "section tag").decode("ascii", "replace")
        (n,) = r.unpack("<I", "section length")
        sections[tag] = r.take(n, f"section {tag}")
    (n,) = r.unpack("<I", "payload length")
    payload = r.take(n, "payload")
    if r.pos != len(r.data):
        raise CorruptStream(f"{len(r.data) - r.pos} unexpected bytes after the payload")
    if width == 0 or height == 0:
        raise CorruptStream("image has zero width or height")
    version = data[4]
    size = sections.pop(SECTION_SIZE, None)
    if (size is not None) != (version == RESIZED_VERSION):
        raise CorruptStream(f"format version {version} with{'out' if size is None else ''} a {SECTION_SIZE} section")
    restored = None
    if size is not None:
        if len(size) != 8:
            raise CorruptStream(f"{SECTION_SIZE} section of {len(size)} bytes, expected 8")
        restored = struct.unpack("<II", size)
        if 0 in restored or restored == (width, height):
            raise CorruptStream(f"{SECTION_SIZE} section gives {restored[0]}x{restored[1]}, "
                                "not another size to restore")
    return Stream(codec, width, height, mode, params, payload, fp, entropy_model, pad_r, pad_b, sections, restored,
                  version)
