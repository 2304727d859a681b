"""Ray Data stages of the compress and restore jobs: one job per class or function, data flowing one way.

compress: listing ─► :func:`read_and_decode` (CPU tasks: bytes → planes) ─► :class:`EncodeActor` (actor pool,
one model per actor) ─► ``sink.ArchiveSink`` (Parquet parts, committed by the driver).
restore: keys per file ─► :func:`read_rows` (filter pushdown) ─► :class:`RestoreActor` (decode + write).

Between stages, images travel as Arrow rows (planes as raw bytes plus their shapes), so blocks of images of
different sizes batch without padding. Every per-item failure becomes an error record with the stage that
failed; nothing is dropped and one bad file never fails a batch.
"""

from __future__ import annotations

import hashlib
import json
import time
import traceback
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa

from .compute_clock import ComputeClock
from .table.schema import ErrorRow, PartStats, TableRow

KIND_ROW, KIND_ERROR = "row", "error"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _error(item: dict, stage: str, exc: BaseException, run_id: str) -> dict:
    from latentarc.codec.errors import LatentarcError

    message = str(exc) if isinstance(exc, LatentarcError) else f"{exc} ({traceback.format_exc(limit=2).splitlines()[-1]})"
    return {"kind": KIND_ERROR, **ErrorRow(
        key=item["key"], source_uri=item["uri"], source_size=item.get("size"), source_etag=item.get("etag"),
        stage=stage, error_type=type(exc).__name__, message=message[:2000], at=_now(), run_id=run_id).as_dict()}


def _rows_to_arrow(rows: list[dict]) -> pa.Table:
    """Rows of either kind → one Arrow block. ``from_pylist`` takes its columns from the *first* row only, so
    a batch starting with an error would silently drop the image columns of the rows after it: use the union."""
    if not rows:
        return pa.table({"kind": pa.array([], pa.string())})
    columns = list(dict.fromkeys(k for r in rows for k in r))
    return pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows])


# ----------------------------------------------------------------------------------------- compress stages
def read_and_decode(batch: pa.Table, *, storage_options: dict | None, run_id: str, max_pixels: int,
                    keep_source: bool = False) -> pa.Table:
    """CPU task: fetch each object's bytes and decode them into the planes the codec stores (plus the bytes
    themselves with ``keep_source``, for the passthrough codec)."""
    from latentarc.codec.images import image_format, read_image

    from .storage import read_bytes

    out = []
    for item in batch.to_pylist():
        try:
            data = read_bytes(item["uri"], storage_options)
        except Exception as e:  # noqa: BLE001 — any storage failure is recorded, never fatal
            out.append(_error(item, "read", e, run_id))
            continue
        try:
            pic = read_image(data, max_pixels=max_pixels)
        except Exception as e:  # noqa: BLE001
            err = _error(item, "decode", e, run_id)
            err["source_size"] = len(data)
            out.append(err)
            continue
        out.append(
            {
                "kind": KIND_ROW,
                "key": item["key"],
                "source_uri": item["uri"],
                "source_size": len(data),
                "source_etag": item.get("etag"),
                "source_sha256": hashlib.sha256(data).hexdigest(),
                "width": pic.width,
                "height": pic.height,
                "mode": pic.mode,
                "rgb": pic.rgb.tobytes(),
                "alpha": None if pic.alpha is None else pic.alpha.tobytes(),
                "depth16": None if pic.depth16 is None else pic.depth16.astype("<u2").tobytes(),
                "icc": pic.icc,
                "exif": pic.exif,
                "format": image_format(data),
                **({"source": data} if keep_source else {}),
            }
        )
    return _rows_to_arrow(out)


def picture_from_row(row: dict):
    from latentarc.codec.images import Picture

    h, w = row["height"], row["width"]
    rgb = np.frombuffer(row["rgb"], np.uint8).reshape(h, w, 3)
    alpha = None if row["alpha"] is None else np.frombuffer(row["alpha"], np.uint8).reshape(h, w)
    depth16 = None if row["depth16"] is None else np.frombuffer(row["depth16"], "<u2").reshape(h, w).astype(np.uint16)
    return Picture(rgb, alpha, row["mode"], row["icc"], row["exif"], depth16, source_bytes=row.get("source"))


class EncodeActor:
    """One codec per actor process (models loaded once, on the GPU when the actor was given one).

    With ``codec="auto"`` the row's ``codec`` is the codec chosen for that image, ``params`` holds the decision
    (``params["auto"]``) and ``psnr`` / ``ms_ssim`` are the chosen stream's, measured by decoding it.
    """

    def __init__(self, *, spec, knobs: dict, run_id: str, ms_ssim: bool = True, faults=None):
        import torch

        from latentarc.codec.codecs import build

        # one torch thread per actor: the pool already runs one actor per CPU, more threads only oversubscribe
        torch.set_num_threads(1 if not torch.cuda.is_available() else torch.get_num_threads())

        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.clock = ComputeClock(cuda=device == "cuda")
        self.codec = build(spec.replace(device=spec.device or device))
        self.knobs = {k: v for k, v in knobs.items() if v is not None}
        self.run_id = run_id
        self.with_ms_ssim = ms_ssim
        self.faults = faults

    def __call__(self, batch: pa.Table) -> pa.Table:
        from latentarc.codec import bitstream
        from latentarc.codec.classical import decoded_planes
        from latentarc.codec import guarantee
        from latentarc.codec.codecs import encode_with
        from latentarc.codec.metrics import ms_ssim

        if self.faults is not None:
            self.faults.before_batch(batch.column("key").to_pylist())
        out = []
        for row in batch.to_pylist():
            if row["kind"] == KIND_ERROR:
                out.append(row)
                continue
            item = {"key": row["key"], "uri": row["source_uri"], "size": row["source_size"], "etag": row["source_etag"]}
            try:
                self.clock.start()  # the image's encode and its measurement: what the run pays for it
                pic = picture_from_row(row)
                res = encode_with(self.codec, pic, **self.knobs)
                name = bitstream.parse(res.data).codec  # the chosen codec's, for auto
                searched = res.params.get("auto", res.params)  # what a floor search measured on the stream
                measured = searched.get("ms_ssim")
                quality = None if measured is None else float(measured)
                tier = guarantee.of(res.params)
                if quality is None and tier != guarantee.LOSSY:
                    quality = 1.0  # the exact tiers were checked equal at encode: nothing to measure
                if quality is None and self.with_ms_ssim:  # on the decode that measured PSNR, when the codec kept it
                    planes = res.decoded if res.decoded is not None else decoded_planes(self.codec.decode(res.data),
                                                                                        pic.mode)
                    quality = ms_ssim(pic.reference(), planes)
                member = self.codec.member(name)
                spent = self.clock.stop()
            except Exception as e:  # noqa: BLE001
                out.append(_error(item, "encode", e, self.run_id))
                continue
            meta = {"format": row["format"], "icc_bytes": len(row["icc"] or b""), "exif_bytes": len(row["exif"] or b"")}
            row_out = TableRow(
                key=row["key"], source_uri=row["source_uri"], source_size=row["source_size"],
                source_etag=row["source_etag"], source_sha256=row["source_sha256"], width=pic.width,
                height=pic.height, mode=pic.mode, codec=name, format_version=bitstream.version_of(res.data),
                model_sha256=member.weights_sha256(), params=json.dumps(res.params, sort_keys=True), payload=res.data,
                payload_size=len(res.data), payload_crc32c=bitstream.crc32c(res.data), bpp=res.bpp, psnr=res.psnr,
                ms_ssim=quality, metadata=json.dumps(meta, sort_keys=True).encode(), encoded_at=_now(),
                run_id=self.run_id, guarantee=tier,
                lpips=searched.get("lpips"),  # measured for an LPIPS / DISTS floor, else null
                dists=searched.get("dists"),
                compute_s=spent.compute_s,  # actor CPU seconds; gpu_s: GPU wall seconds on CUDA
                gpu_s=spent.gpu_s)
            out.append({"kind": KIND_ROW, **row_out.as_dict()})
        return _rows_to_arrow(out)


def part_stats(rows: list[dict]) -> PartStats:
    """Per-part figures the driver aggregates into the savings report without re-reading the table."""
    return PartStats(
        original_bytes=sum(int(r["source_size"]) for r in rows),
        payload_bytes=sum(int(r["payload_size"]) for r in rows),
        pixels=sum(int(r["width"]) * int(r["height"]) for r in rows),
        bpp=tuple(float(r["bpp"]) for r in rows),
        psnr=tuple(float(r["psnr"]) for r in rows if r["psnr"] is not None),
        codecs=tuple(sorted({r["codec"] for r in rows})),
        per_guarantee=tier_bytes(rows),
        compute_s=_sum_recorded(rows, "compute_s"),
        gpu_s=_sum_recorded(rows, "gpu_s"),
        compute_rows=sum(1 for r in rows if r.get("compute_s") is not None),
        per_codec=codec_compute(rows),
    )


def _sum_recorded(rows: list[dict], key: str) -> float | None:
    xs = [float(r[key]) for r in rows if r.get(key) is not None]
    return sum(xs) if xs else None


def codec_compute(rows: list[dict]) -> dict:
    """Rows, source and payload bytes, and compute seconds per codec (savings.compute_cost prices them)."""
    out: dict[str, dict] = {}
    for name in sorted({r["codec"] for r in rows}):
        rs = [r for r in rows if r["codec"] == name]
        out[name] = {"rows": len(rs), "original_bytes": sum(int(r["source_size"]) for r in rs),
                     "payload_bytes": sum(int(r["payload_size"]) for r in rs),
                     "compute_s": _sum_recorded(rs, "compute_s"), "gpu_s": _sum_recorded(rs, "gpu_s"),
                     "compute_rows": sum(1 for r in rs if r.get("compute_s") is not None)}
    return out


def tier_bytes(rows: list[dict]) -> dict:
    """Rows, source bytes and payload bytes per guarantee tier (``unrecorded`` for rows without one)."""
    out: dict[str, dict] = {}
    for r in rows:
        t = out.setdefault(r.get("guarantee") or "unrecorded", {"rows": 0, "original_bytes": 0, "payload_bytes": 0})
        t["rows"] += 1
        t["original_bytes"] += int(r["source_size"])
        t["payload_bytes"] += int(r["payload_size"])
    return out


# ------------------------------------------------------------------------------------------ restore stages
def read_rows(batch: pa.Table, *, table) -> pa.Table:
    """Task: read the planned rows (each item names a file and the keys to take from it), the key filter pushed
    down to Parquet."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    columns = ["key", "payload", "payload_crc32c"]
    parts = []
    for item in batch.to_pylist():
        ds = pads.dataset(item["path"], filesystem=table.arrow_fs, format="parquet")
        parts.append(ds.to_table(columns=columns, filter=pc.field("key").isin(json.loads(item["keys"]))))
    return pa.concat_tables(parts) if parts else pa.table({c: [] for c in columns})


class RestoreActor:
    """Decode rows and write the images under their keys in the destination."""

    def __init__(self, *, dst: str, storage_options: dict | None, weights: str | None, suffix: str,
                 refine=None, refiner: str | None = None, faults=None):
        self.dst, self.storage_options, self.weights, self.suffix = dst, storage_options, weights, suffix
        self.refine, self.refiner = (refine if refine is not None and refine.active else None), refiner
        self.faults = faults  # a pipeline.faults.FaultPlan in the crash-safety tests, else None
        self._codecs: dict[str, object] = {}

    def _codec(self, data: bytes):
        from latentarc.codec import bitstream
        from latentarc.codec.codecs import codec_for_stream

        name = bitstream.parse(data).codec
        if name not in self._codecs:
            self._codecs[name] = codec_for_stream(data, weights=self.weights)
        return self._codecs[name]

    def __call__(self, batch: pa.Table) -> pa.Table:
        import posixpath

        from latentarc.codec import bitstream
        from latentarc.codec.restored import decode_to

        from .storage import open_fs, safe_join, write_bytes_atomic

        fs, root = open_fs(self.dst, self.storage_options)
        rows = batch.to_pylist()
        if self.faults is not None:
            self.faults.before_batch([r["key"] for r in rows])
        out = []
        for row in rows:
            key = row["key"]
            t0 = time.perf_counter()
            try:
                data = row["payload"]
                if bitstream.crc32c(data) != row["payload_crc32c"]:
                    from latentarc.codec.errors import ChecksumMismatch

                    raise ChecksumMismatch("payload does not match the table's payload_crc32c")
                codec = self._codec(data)
                refine = self.refine if codec.caps.refines else None  # classical rows have nothing to refine
                # the exact tier: the original file, bit for bit, under the key's own name
                restored = decode_to(codec, data, _FORMATS[self.suffix], refine=refine, refiner=self.refiner,
                                     original_any_format=True)
                body = restored.body
                name = key if restored.original else posixpath.splitext(key)[0] + self.suffix
                target = safe_join(root, name, fs=fs)
                fs.makedirs(posixpath.dirname(target), exist_ok=True)
                write_bytes_atomic(fs, target, body)
                out.append({"key": key, "ok": True, "path": target, "bytes": len(body), "error_type": None,
                            "message": None, "seconds": time.perf_counter() - t0})
            except Exception as e:  # noqa: BLE001
                out.append({"key": key, "ok": False, "path": None, "bytes": 0, "error_type": type(e).__name__,
                            "message": str(e)[:2000], "seconds": time.perf_counter() - t0})
        return pa.Table.from_pylist(out)


_FORMATS = {".png": "PNG", ".tiff": "TIFF", ".tif": "TIFF", ".webp": "WEBP"}
