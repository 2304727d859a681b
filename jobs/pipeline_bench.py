"""``latentarc bench-pipeline``: the compress job's throughput against a plain single-process loop.

Both sides do the same work per image — read the file, decode it, encode at the same operating point with the
PSNR and MS-SSIM decodes — on the same machine, so the difference is what the pipeline costs (Ray start-up
excluded: it is paid once per cluster, not per run). The loop uses torch's default thread count; the pipeline
uses its default actor pool (one actor per CPU with one torch thread each).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path


def _images(folder: str, limit: int | None) -> list[Path]:
    exts = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff"}
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in exts)
    return files[:limit] if limit else files


def plain_loop(files: list[Path], *, weights: str | None, quality: float) -> dict:
    from latentarc.codec.api import load_codec
    from latentarc.codec.images import colour_planes, read_image
    from latentarc.codec.metrics import ms_ssim

    codec = load_codec(weights=weights, device="cpu")
    if files:  # warm-up outside the timing (the pipeline's actors load their model inside it: fair to the loop)
        codec.encode(read_image(files[0].read_bytes()), quality=quality, measure=False)
    t0 = time.perf_counter()
    pixels = 0
    for f in files:
        pic = read_image(f.read_bytes())
        res = codec.encode(pic, quality=quality)
        ms_ssim(pic.reference(), colour_planes(codec.decode(res.data).rgb, pic.mode))
        pixels += pic.width * pic.height
    dt = time.perf_counter() - t0
    return {"images": len(files), "seconds": dt, "images_per_s": len(files) / dt, "megapixels": pixels / 1e6}


def pipeline(folder: str, files: list[Path], *, weights: str | None, quality: float, workers: int | None,
             batch_size: int) -> dict:
    from latentarc.codec.spec import CodecSpec
    from latentarc.pipeline.compress import CompressOptions, run_compress

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for f in files:  # the same files, as the source of one run
            (src / f.name).symlink_to(f.resolve())
        opts = CompressOptions(CodecSpec(weights=weights), quality=quality, workers=workers, batch_size=batch_size)
        t0 = time.perf_counter()
        report = run_compress(str(src), str(Path(tmp) / "table"), opts)
        dt = time.perf_counter() - t0
    return {"images": report["rows"] + report["errors"], "seconds": dt, "images_per_s": report["rows"] / dt,
            "errors": report["errors"]}


def run_pipeline_bench(a) -> int:
    import os

    from latentarc.pipeline.runtime import init_ray

    weights = a.weights or os.environ.get("LATENTARC_MODEL_DIR")
    files = _images(a.images, a.limit)
    init_ray(a.ray_address, progress=False)
    import ray

    ray.get(ray.remote(lambda: 0).remote())  # cluster up and a worker started before timing
    print(f"bench-pipeline: {len(files)} images from {a.images}, quality {a.quality}", file=sys.stderr)
    loop = plain_loop(files, weights=weights, quality=a.quality)
    pipe = pipeline(a.images, files, weights=weights, quality=a.quality, workers=a.workers, batch_size=a.batch_size)
    overhead = loop["images_per_s"] / pipe["images_per_s"] - 1
    cpus = ray.cluster_resources().get("CPU")
    print(f"plain loop : {loop['images_per_s']:.3f} images/s ({loop['seconds']:.1f} s, {loop['megapixels']:.2f} MP)")
    print(f"pipeline   : {pipe['images_per_s']:.3f} images/s ({pipe['seconds']:.1f} s, {cpus:g} CPUs)")
    print(f"overhead   : {100 * overhead:+.1f}% (positive = pipeline slower)")
    if a.json_out:
        Path(a.json_out).write_text(json.dumps({"loop": loop, "pipeline": pipe, "overhead": overhead, "cpus": cpus},
                                               indent=2))
    return 0
