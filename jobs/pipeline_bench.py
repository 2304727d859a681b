"""``latentarc bench-pipeline``: the compress job's throughput against a plain single-process loop.

Both sides do the same work per image — read the file, decode it, encode at the same operating point with the
PSNR and MS-SSIM decodes — on the same machine, so the difference is what the pipeline costs (Ray start-up
excluded: it is paid once per cluster, not per run). The loop uses torch's default thread count; the pipeline
uses its default actor pool (one actor per GPU, else one per CPU with one torch thread each).

Where the pipeline's time goes: the rows record each image's actor CPU seconds and, on CUDA, GPU seconds
(``compute_s``, ``gpu_s``); against the wall time × the actors they give how busy the model actors were — the rest
of the wall is reading, decoding, writing, scheduling and waiting. On GPUs the figures are also given per GPU.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from latentarc.pipeline.runtime import plan_pool


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
        plan = plan_pool(workers, inputs=len(files))
        t0 = time.perf_counter()
        report = run_compress(str(src), str(Path(tmp) / "table"), opts)
        dt = time.perf_counter() - t0
    return where_time_went({"images": report["rows"] + report["errors"], "seconds": dt,
                            "images_per_s": report["rows"] / dt, "errors": report["errors"],
                            "megapixels": report["megapixels"], "compute_s": report["compute_s"],
                            "gpu_s": report["gpu_s"]}, actors=plan.size, gpus=plan.size if plan.num_gpus else 0)


def where_time_went(pipe: dict, *, actors: int, gpus: int) -> dict:
    """``pipe`` with the derived figures: MP/s, per-image actor CPU and GPU seconds, the actors' busy share of
    the wall (GPU seconds on GPUs, CPU seconds otherwise) and, on GPUs, images/s and MP/s per GPU."""
    rows, wall = max(1, pipe["images"] - pipe["errors"]), pipe["seconds"]
    busy = pipe["gpu_s"] if gpus and pipe["gpu_s"] is not None else pipe["compute_s"]
    out = dict(pipe, actors=actors, gpus=gpus, mp_per_s=pipe["megapixels"] / wall,
               cpu_s_per_image=None if pipe["compute_s"] is None else pipe["compute_s"] / rows,
               gpu_s_per_image=None if pipe["gpu_s"] is None else pipe["gpu_s"] / rows,
               actors_busy=None if busy is None else busy / (wall * actors))
    if gpus:
        out.update(images_per_s_per_gpu=pipe["images_per_s"] / gpus, mp_per_s_per_gpu=out["mp_per_s"] / gpus)
    return out


def _time_line(pipe: dict) -> str:
    def fmt(v, spec):
        return "n/a" if v is None else format(v, spec)

    gpu = f", GPU {fmt(pipe['gpu_s_per_image'], '.2f')} s" if pipe["gpus"] else ""
    return (f"time       : per image actor CPU {fmt(pipe['cpu_s_per_image'], '.2f')} s{gpu}; model actors busy "
            f"{fmt(None if pipe['actors_busy'] is None else 100 * pipe['actors_busy'], '.0f')}% of the wall "
            "(the rest: reading, decoding, writing, scheduling, waiting)")


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
    print(f"pipeline   : {pipe['images_per_s']:.3f} images/s, {pipe['mp_per_s']:.3f} MP/s ({pipe['seconds']:.1f} s, "
          f"{cpus:g} CPUs, {pipe['actors']} model actor(s) on {'GPUs' if pipe['gpus'] else 'CPUs'})")
    if pipe["gpus"]:
        print(f"per GPU    : {pipe['images_per_s_per_gpu']:.3f} images/s, {pipe['mp_per_s_per_gpu']:.3f} MP/s")
    print(f"overhead   : {100 * overhead:+.1f}% (positive = pipeline slower)")
    print(_time_line(pipe))
    if a.json_out:
        Path(a.json_out).write_text(json.dumps({"loop": loop, "pipeline": pipe, "overhead": overhead, "cpus": cpus},
                                               indent=2))
    return 0
