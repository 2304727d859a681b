"""Storage access for the pipeline: one code path for local folders, ``file://`` and ``s3://`` (via fsspec/s3fs).

* :func:`open_fs` turns a URI into ``(filesystem, path without protocol)``; ``storage_options`` go to s3fs
  (``{"endpoint_url": ..., "key": ..., "secret": ...}``; without them the usual ``AWS_*`` variables apply).
  s3fs's listing cache is switched off by default: the bitstream table's commit log must never be read from a
  stale listing. s3:// gets botocore retries with backoff and jitter by default (:data:`S3_RETRIES`).
* :func:`list_source` lists what a job should archive: a folder/prefix (recursive, hidden entries skipped), a
  single object, or a manifest of URIs. Every listed object becomes a :class:`SourceObject` with a stable ``key``
  (the name it keeps in the table and on restore) and an ``etag`` used to notice changed objects.
* :func:`safe_join` is the only way a key becomes a destination path: it refuses keys that would escape.
* :func:`write_bytes_atomic` never leaves a half-written file under the final name;
  :func:`write_bytes_exclusive` additionally refuses to replace one (the commit log's conditional create).
"""

from __future__ import annotations

import os
import posixpath
import re
import tempfile
from dataclasses import dataclass
from typing import Iterable

import fsspec
from fsspec.core import split_protocol

from latentarc.pipeline.errors import SourceNotFound, UnsafeKey

LOCAL_PROTOCOLS = frozenset({None, "file", "local"})
MANIFEST_SUFFIXES = (".txt", ".manifest", ".lst")
#: ``SourceObject.size`` of a manifest entry that does not exist: reading it raises :class:`SourceNotFound`, so
#: the job records it in the errors table instead of the listing aborting the whole run.
MISSING_SIZE = -1
#: botocore's retry policy for s3:// unless ``storage_options["config_kwargs"]["retries"]`` says otherwise
#: (``max_attempts`` counts retries after the first try): "standard" mode retries throttling (503 SlowDown),
#: 5xx, connection resets and timeouts with exponential backoff and full jitter; an archive of millions of
#: objects meets each of them. ("adaptive" adds client-side rate limiting; pass it to opt in.) s3fs retries on
#: top of this (``S3FileSystem.retries``, 5).
S3_RETRIES = {"mode": "standard", "max_attempts": 10}

__all__ = [
    "MANIFEST_SUFFIXES",
    "MISSING_SIZE",
    "SourceObject",
    "arrow_filesystem",
    "is_local",
    "list_source",
    "open_fs",
    "read_bytes",
    "safe_join",
    "to_uri",
    "write_bytes_atomic",
    "write_bytes_exclusive",
]


# --- filesystems ------------------------------------------------------------------------------------------------
def open_fs(uri: str, storage_options: dict | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """``(filesystem, path)`` for a local path, ``file://`` URL, ``s3://bucket/key`` or any fsspec URL.

    Local paths come back absolute (``~`` expanded); remote paths come back without protocol and without a
    trailing slash (``"bucket/prefix"``). For s3, ``storage_options`` are passed to :class:`s3fs.S3FileSystem`
    as they are (``endpoint_url``, ``key``, ``secret``, ``client_kwargs``, ``anon``, ...); ``use_listings_cache``
    defaults to False and botocore's ``retries`` to :data:`S3_RETRIES` (other ``config_kwargs`` are kept).
    """
    if not isinstance(uri, str) or not uri:
        raise SourceNotFound(f"empty or invalid URI: {uri!r}")
    protocol, path = split_protocol(uri)
    opts = dict(storage_options or {})
    if protocol in LOCAL_PROTOCOLS:
        path = os.path.abspath(os.path.expanduser(path))
        return fsspec.filesystem("file"), path
    if protocol in ("s3", "s3a"):
        protocol = "s3"
        config = dict(opts.get("config_kwargs") or {})
        config["retries"] = dict(config.get("retries") or S3_RETRIES)  # a copy: botocore rewrites it in place
        opts["config_kwargs"] = config
    opts.setdefault("use_listings_cache", False)
    try:
        fs = fsspec.filesystem(protocol, **opts)
    except (ImportError, ValueError) as e:
        raise SourceNotFound(f"cannot open {uri!r}: {e}") from e
    path = fs._strip_protocol(uri)
    return fs, path.rstrip("/")


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    """True for fsspec's local filesystem."""
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return "file" in protocols or "local" in protocols


def to_uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """The URI of ``path`` on ``fs`` (local paths stay plain absolute paths)."""
    if is_local(fs):
        return path
    return fs.unstrip_protocol(path)


def arrow_filesystem(fs: fsspec.AbstractFileSystem):
    """A :mod:`pyarrow.fs` filesystem for ``fs`` (native for local files, fsspec-wrapped otherwise).

    Hand it to ``pyarrow.dataset`` / ``ray.data.read_parquet(paths, filesystem=...)`` together with paths from
    :func:`open_fs` (no protocol).
    """
    import pyarrow.fs as pafs

    if is_local(fs):
        return pafs.LocalFileSystem()
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs))


def _invalidate(fs: fsspec.AbstractFileSystem, path: str | None = None) -> None:
    try:
        fs.invalidate_cache(path)
    except Exception:  # pragma: no cover - a filesystem without a cache
        pass


# --- reading and writing ----------------------------------------------------------------------------------------
def read_bytes(uri: str, storage_options: dict | None = None) -> bytes:
    """All bytes of one object; :class:`SourceNotFound` when it does not exist (or is a folder)."""
    fs, path = open_fs(uri, storage_options)
    try:
        return fs.cat_file(path)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as e:
        raise SourceNotFound(f"no such object: {uri}") from e


def _durable_temp(path: str, data: bytes) -> str:
    """A complete, fsynced hidden file beside ``path`` (listings skip the ``.tmp-`` prefix); its name."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def write_bytes_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old object or the whole new one.

    Local: a temporary file in the same folder (hidden name, so listings skip it), fsync, ``os.replace``.
    Object stores: one PUT is atomic already.
    """
    if is_local(fs):
        tmp = _durable_temp(path, data)
        try:
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
        return
    fs.pipe_file(path, bytes(data))
    _invalidate(fs, posixpath.dirname(path))


def write_bytes_exclusive(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Create ``path`` with ``data`` only if nothing exists there; :class:`FileExistsError` otherwise.

    Readers see no object or the whole one. Local: a complete hidden temporary file hard-linked to ``path``
    (``link`` fails on an existing name, atomically; :class:`OSError` on a filesystem without hard links).
    S3: one conditional PUT (``If-None-Match: *``), answered 412 when the key exists. A store that ignores the
    condition silently overwrites; see docs/jobs-and-table.md for what that means for concurrent writers.

    After a lost response the retried PUT may find the object it created itself: the caller tells its own
    object from another writer's by reading it back.
    """
    if is_local(fs):
        tmp = _durable_temp(path, data)
        try:
            os.link(tmp, path)
        finally:
            os.unlink(tmp)
        return
    try:
        fs.pipe_file(path, bytes(data), mode="create")
    finally:
        _invalidate(fs, posixpath.dirname(path))


# --- keys -------------------------------------------------------------------------------------------------------
_DRIVE = re.compile(r"^[A-Za-z]:")


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not key:
        raise UnsafeKey(f"empty or non-string key: {key!r}")
    if "\x00" in key:
        raise UnsafeKey(f"key contains a NUL byte: {key!r}")
    # Backslashes are separators on Windows: judge the key as if they were.
    norm = key.replace("\\", "/")
    if norm.startswith("/") or _DRIVE.match(norm) or "://" in norm:
        raise UnsafeKey(f"absolute key refused: {key!r}")
    for part in norm.split("/"):
        if part in ("", ".", ".."):
            raise UnsafeKey(f"key with an empty, '.' or '..' component refused: {key!r}")


def safe_join(root: str, key: str, *, fs: fsspec.AbstractFileSystem | None = None) -> str:
    """``root/key``, refusing (:class:`UnsafeKey`) any key that could land outside ``root``.

    Refused: empty keys, NUL bytes, absolute keys (``/x``, ``C:x``, ``s3://...``), empty / ``.`` / ``..``
    components (backslashes count as separators), and - for local roots - keys whose resolved path (symlinks
    followed) is not strictly inside the resolved root. Local roots give an absolute local path; remote roots
    give ``root.rstrip('/') + '/' + key``.

    ``root`` is a URI or local path. A protocol-less path from :func:`open_fs` on a remote filesystem
    (``"bucket/prefix"``) would be taken for a relative local path: pass that filesystem as ``fs`` then.
    """
    _check_key(key)
    protocol, rootpath = split_protocol(root)
    if protocol in LOCAL_PROTOCOLS and (fs is None or is_local(fs)):
        base = os.path.abspath(os.path.expanduser(rootpath))
        out = os.path.join(base, *key.split("/"))
        real_base = os.path.realpath(base)
        real_out = os.path.realpath(out)
        if real_out == real_base or os.path.commonpath([real_base, real_out]) != real_base:
            raise UnsafeKey(f"key {key!r} resolves outside {root!r}")
        return out
    return root.rstrip("/") + "/" + key


# --- listing ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SourceObject:
    """One object to archive.

    ``key``: its name in the table (relative to the source root, forward slashes). ``uri``: where to read it
    (plain absolute path for local files, ``s3://...`` otherwise). ``size``: bytes (``MISSING_SIZE`` for a
    manifest entry that does not exist). ``etag``: S3 ETag without quotes, or ``f"{mtime_ns}-{size}"`` for local
    files - compared with the table's ``source_etag`` to notice changed objects.
    """

    key: str
    uri: str
    size: int
    etag: str | None


def _hidden(parts: Iterable[str]) -> bool:
    return any(p.startswith((".", "_")) for p in parts)


def _norm_exts(extensions) -> frozenset[str] | None:
    if extensions is None:
        return None
    if isinstance(extensions, str):
        extensions = [extensions]
    return frozenset(("." + e.lstrip(".")).lower() for e in extensions)


def _ext_ok(name: str, exts: frozenset[str] | None) -> bool:
    return exts is None or posixpath.splitext(name)[1].lower() in exts


def _etag_of(info: dict) -> str | None:
    for k in ("ETag", "etag", "md5Hash", "md5"):
        v = info.get(k)
        if v:
            return str(v).strip('"')
    mtime = info.get("mtime") or info.get("LastModified") or info.get("last_modified")
    if mtime is not None:
        return f"{mtime}-{info.get('size')}"
    return None


def _local_etag(st: os.stat_result) -> str:
    return f"{st.st_mtime_ns}-{st.st_size}"


def _list_local_dir(root: str, exts) -> list[SourceObject]:
    out = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        for name in files:
            if name.startswith((".", "_")) or not _ext_ok(name, exts):
                continue
            full = os.path.join(folder, name)
            try:
                st = os.stat(full)
            except FileNotFoundError:  # vanished or a dangling symlink: nothing to archive
                continue
            key = os.path.relpath(full, root).replace(os.sep, "/")
            out.append(SourceObject(key, full, st.st_size, _local_etag(st)))
    return out


def _list_remote_prefix(fs, root: str, exts) -> list[SourceObject]:
    out = []
    for name, info in fs.find(root, detail=True, withdirs=False).items():
        if info.get("type", "file") != "file" or name.endswith("/"):
            continue
        rel = name[len(root) :].lstrip("/") if name.startswith(root) else name
        if not rel or _hidden(rel.split("/")) or not _ext_ok(rel, exts):
            continue
        out.append(SourceObject(rel, to_uri(fs, name), int(info.get("size") or 0), _etag_of(info)))
    return out


def stat_many(fs, paths: list[str]) -> dict[str, tuple[int, str | None] | None]:
    """``path -> (size, etag)`` or None when missing; concurrent HEADs on async filesystems (s3fs)."""
    result: dict[str, tuple[int, str | None] | None] = {}
    if is_local(fs):
        for p in paths:
            try:
                st = os.stat(p)
                result[p] = None if not os.path.isfile(p) else (st.st_size, _local_etag(st))
            except OSError:
                result[p] = None
        return result
    infos = None
    from fsspec.asyn import AsyncFileSystem

    if isinstance(fs, AsyncFileSystem):  # s3fs: all the stats concurrently on its event loop
        try:
            from fsspec.asyn import _run_coros_in_chunks, sync

            infos = sync(fs.loop, _run_coros_in_chunks, [fs._info(p) for p in paths], batch_size=64,
                         return_exceptions=True)
        except (ImportError, AttributeError, TypeError):
            infos = None
    if infos is None:
        infos = []
        for p in paths:
            try:
                infos.append(fs.info(p))
            except Exception as e:  # noqa: BLE001 - recorded as missing below
                infos.append(e)
    for p, info in zip(paths, infos):
        if isinstance(info, BaseException) or info.get("type", "file") != "file":
            result[p] = None
        else:
            result[p] = (int(info.get("size") or 0), _etag_of(info))
    return result


def _read_manifest(fs, path: str, storage_options) -> list[tuple[str, str]]:
    """``[(protocol or "file", normalized path)]`` of a manifest's entries, duplicates removed, order kept."""
    try:
        text = fs.cat_file(path).decode("utf-8-sig")
    except FileNotFoundError as e:
        raise SourceNotFound(f"no such manifest: {path}") from e
    local_manifest = is_local(fs)
    base = posixpath.dirname(path) if not local_manifest else os.path.dirname(path)
    seen: dict[tuple[str, str], None] = {}
    for line in text.splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        protocol, p = split_protocol(entry)
        if protocol in LOCAL_PROTOCOLS and (local_manifest or protocol is not None):
            p = os.path.normpath(os.path.join(base if local_manifest else os.getcwd(), os.path.expanduser(p)))
            item = ("file", p)
        elif protocol is None:
            # a scheme-less entry of a remote manifest lives on the manifest's filesystem
            p = posixpath.normpath(posixpath.join(base, p.lstrip("/")) if not p.startswith("/") else p.lstrip("/"))
            item = (fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol, p)
        else:
            efs, p = open_fs(entry, storage_options)
            item = ("file", p) if is_local(efs) else ("s3" if protocol == "s3a" else protocol, p)
        seen.setdefault(item, None)
    return list(seen)


def _manifest_keys(items: list[tuple[str, str]]) -> list[str]:
    if len(items) == 1:
        return [items[0][1].lstrip("/")]
    comps = [[proto, *[c for c in p.split("/") if c]] for proto, p in items]
    parents = [c[:-1] for c in comps]
    common = 0
    for column in zip(*parents):
        if any(x != column[0] for x in column):
            break
        common += 1
    return ["/".join(c[common:]) for c in comps]


def _list_manifest(fs, path: str, storage_options, exts) -> list[SourceObject]:
    items = _read_manifest(fs, path, storage_options)
    items = [it for it in items if _ext_ok(it[1], exts)]
    if not items:
        return []
    keys = _manifest_keys(items)
    by_proto: dict[str, list[str]] = {}
    for proto, p in items:
        by_proto.setdefault(proto, []).append(p)
    stats: dict[tuple[str, str], tuple[int, str | None] | None] = {}
    for proto, paths in by_proto.items():
        pfs = fsspec.filesystem("file") if proto == "file" else open_fs(f"{proto}://x", storage_options)[0]
        for p, st in stat_many(pfs, paths).items():
            stats[(proto, p)] = st
    out = []
    for key, (proto, p) in zip(keys, items):
        uri = p if proto == "file" else f"{proto}://{p}"
        st = stats.get((proto, p))
        size, etag = st if st is not None else (MISSING_SIZE, None)
        out.append(SourceObject(key, uri, size, etag))
    return out


def list_source(src: str, storage_options: dict | None = None, *, extensions=None) -> list[SourceObject]:
    """Every object a job should archive from ``src``, sorted by key.

    ``src`` is a local folder, ``file://`` URL, ``s3://bucket/prefix``, a single object (key = its file name),
    or a manifest (a local or remote file ending in ``.txt`` / ``.manifest`` / ``.lst``: one URI or path per
    line, blank lines and ``#`` comments ignored, relative paths resolved against the manifest's folder,
    duplicates listed once).

    Folders/prefixes are listed recursively; names starting with ``.`` or ``_`` (files or folders) are skipped.
    Keys are relative to the root with forward slashes. For manifests the key is each entry's path relative to
    the longest common folder of all entries (the protocol counts as the first folder, so a manifest mixing
    ``s3://`` and local files gets keys ``s3/...`` and ``file/...``); a one-entry manifest keys the entry by its
    whole path. Missing manifest entries are listed with ``size=MISSING_SIZE`` (reading them fails, so they land
    in the errors table).

    ``extensions`` (e.g. ``{".png", ".jpg"}``) keeps only matching names, case-insensitively; the default
    ``None`` keeps every file, so non-images reach the errors table instead of vanishing.

    Raises :class:`SourceNotFound` when ``src`` does not exist.
    """
    exts = _norm_exts(extensions)
    fs, path = open_fs(src, storage_options)
    try:
        if is_local(fs):
            if os.path.isdir(path):
                objs = _list_local_dir(path, exts)
            elif os.path.isfile(path):
                if path.lower().endswith(MANIFEST_SUFFIXES):
                    objs = _list_manifest(fs, path, storage_options, exts)
                else:
                    st = os.stat(path)
                    name = os.path.basename(path)
                    objs = [SourceObject(name, path, st.st_size, _local_etag(st))] if _ext_ok(name, exts) else []
            else:
                raise SourceNotFound(f"source not found: {src}")
        else:
            _invalidate(fs)
            if fs.isfile(path):
                if path.lower().endswith(MANIFEST_SUFFIXES):
                    objs = _list_manifest(fs, path, storage_options, exts)
                else:
                    info = fs.info(path)
                    name = posixpath.basename(path)
                    objs = (
                        [SourceObject(name, to_uri(fs, path), int(info.get("size") or 0), _etag_of(info))]
                        if _ext_ok(name, exts)
                        else []
                    )
            elif fs.isdir(path):
                objs = _list_remote_prefix(fs, path, exts)
            else:
                raise SourceNotFound(f"source not found: {src}")
    except SourceNotFound:
        raise
    except (FileNotFoundError, PermissionError) as e:
        raise SourceNotFound(f"cannot list {src}: {e}") from e
    return sorted(objs, key=lambda o: o.key)
