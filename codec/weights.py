"""Resolve model weight files without ever trusting an unverified byte.

Order (first hit wins): an explicit path, ``$LATENTARC_MODEL_DIR``, the user cache
(``$XDG_CACHE_HOME/latentarc/models`` or ``~/.cache/latentarc/models``), then a download from the file's
public URL into the cache. Every file found or fetched is checked against the SHA-256 pinned in the model
registry; a mismatch is an error, not a warning, because decoding an archive with other weights silently
produces other pixels.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .errors import WeightsChecksumMismatch, WeightsNotFound

#: models this project trained and ships in the package: ``codec/weights/<name>/`` (safetensors, config, card)
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
ENV_MODEL_DIR = "LATENTARC_MODEL_DIR"
ENV_OFFLINE = "LATENTARC_OFFLINE"


@dataclass(frozen=True)
class WeightFile:
    """One pinned weight file: its file name, where to fetch it, and its SHA-256.

    ``subdir``: a folder the file may also sit in under a model folder (``$LATENTARC_MODEL_DIR/<subdir>/`` or an
    explicit folder), for weights shipped grouped, e.g. ``perceptual/``."""

    filename: str
    url: str
    sha256: str
    subdir: str = ""


def _in_folder(folder: Path, spec: WeightFile) -> list[Path]:
    """Where ``spec`` may sit in a model folder: directly, then in its ``subdir``."""
    return [folder / spec.filename] + ([folder / spec.subdir / spec.filename] if spec.subdir else [])


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "latentarc" / "models"


_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, memoised on (path, size, mtime) so repeated model loads don't re-hash."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _HASH_CACHE[key] = h.hexdigest()
    return _HASH_CACHE[key]


def _verified(path: Path, spec: WeightFile) -> Path:
    got = sha256_file(path)
    if got != spec.sha256:
        raise WeightsChecksumMismatch(
            f"{path}: SHA-256 {got[:16]}… does not match the pinned {spec.sha256[:16]}… for {spec.filename}"
        )
    return path


def verified_file(path: str | os.PathLike, sha256: str) -> Path:
    """``path`` after its SHA-256 is checked against ``sha256`` (``WeightsChecksumMismatch`` otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFound(f"{path} does not exist")
    return _verified(path, WeightFile(path.name, "", sha256))


def download(spec: WeightFile, dest_dir: Path, timeout: float = 60.0) -> Path:
    """Fetch ``spec.url`` into ``dest_dir`` atomically, verifying the SHA-256 before the file appears."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=f".{spec.filename}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(spec.url, timeout=timeout) as resp:
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                h.update(chunk)
                out.write(chunk)
        if h.hexdigest() != spec.sha256:
            raise WeightsChecksumMismatch(
                f"download of {spec.url} has SHA-256 {h.hexdigest()[:16]}…, expected {spec.sha256[:16]}…"
            )
        final = dest_dir / spec.filename
        os.replace(tmp, final)
        return final
    except OSError as e:  # network errors (URLError is an OSError) and disk errors
        raise WeightsNotFound(f"could not download {spec.filename} from {spec.url}: {e}") from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def resolve(spec: WeightFile, explicit: str | os.PathLike | None = None, allow_download: bool | None = None) -> Path:
    """Return a verified local path for ``spec``.

    ``explicit`` may be a file or a directory holding ``spec.filename``. Downloads are allowed unless
    ``allow_download`` is False or ``$LATENTARC_OFFLINE`` is set.
    """
    candidates: list[Path] = []
    if explicit is not None:
        p = Path(explicit)
        options = _in_folder(p, spec) if p.is_dir() else [p]
        found = next((c for c in options if c.exists()), None)
        if found is None:
            raise WeightsNotFound(f"explicit weight path {options[0]} does not exist")
        return _verified(found, spec)
    if os.environ.get(ENV_MODEL_DIR):
        candidates += _in_folder(Path(os.environ[ENV_MODEL_DIR]), spec)
    candidates.append(cache_dir() / spec.filename)
    for c in candidates:
        if c.is_file():
            return _verified(c, spec)
    if allow_download is None:
        allow_download = not os.environ.get(ENV_OFFLINE)
    if not allow_download:
        raise WeightsNotFound(
            f"{spec.filename} not found in {', '.join(map(str, candidates))} and downloads are disabled; "
            f"set {ENV_MODEL_DIR} to a folder holding it"
        )
    return download(spec, cache_dir())
