"""``latentarc``: one command line for the codec and the archival jobs.

Exit codes (DESIGN.md §2): 0 success, 1 partial or integrity failure, 2 usage or configuration error. Errors
that latentarc raises on purpose print as one line (``latentarc: error: <Kind>: <what>``), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from ..codec.spec import DEFAULT_AUTO_CODECS, DEFAULT_CODEC, ENCODER_PRECISIONS
from .exit_codes import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE
from .research.training_data import DEFAULT_HELD_OUT, DEFAULT_TRAIN


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", help="explicit weight file or folder (else $LATENTARC_MODEL_DIR, cache, download)")
    p.add_argument("--device", help="torch device (default: cuda when available, else cpu)")


def _entropy_data_args(p: argparse.ArgumentParser, *, training: bool) -> None:
    """The photos and cached latents of ``train-entropy`` (the training pool; the held-out photos refused) and
    ``bench-entropy`` (the held-out photos it measures on)."""
    if training:
        p.add_argument("images", nargs="?", default=str(DEFAULT_TRAIN),
                       help="training images, subfolders included (default ../shared/data/train)")
        p.add_argument("--held-out", default=str(DEFAULT_HELD_OUT),
                       help="evaluation photos that must not be trained on (refused by path and by content)")
        p.add_argument("--holdout-every", type=int, default=5,
                       help="keep every Nth training image aside for the closing evaluation")
    else:
        p.add_argument("images", nargs="?", default=str(DEFAULT_HELD_OUT),
                       help="folder of photos (default ../shared/data/photos)")
        p.add_argument("--holdout-every", type=int, default=5,
                       help="measure every Nth photo in name order (the context model's held-out set)")
    p.add_argument("--codec", default="tae-f2",
                   help="the model whose latents are coded (default tae-f2; a train-codec folder as tae-f2-le:DIR or "
                        "tae-f2-ft:DIR retrains or measures the context model for its latents: stage 3)")
    p.add_argument("--limit", type=int, help="use only the first N images")
    p.add_argument("--max-side", type=int, help="downscale photos to at most N pixels per side (default: full size)")
    p.add_argument("--cache", default=str(Path.home() / ".cache/latentarc/entropy-latents"),
                   help="folder for the cached latents")


def _storage_price_arg(p: argparse.ArgumentParser) -> None:
    from latentarc.pipeline.savings import DEFAULT_PRICE_PER_GB_MONTH

    p.add_argument("--price-per-gb-month", type=float, default=DEFAULT_PRICE_PER_GB_MONTH,
                   help="$ per GB-month of storage, for the savings (default %(default)s: S3 Standard list price)")


def _compute_price_args(p: argparse.ArgumentParser) -> None:
    from latentarc.pipeline.savings import DEFAULT_PRICE_PER_CPU_HOUR, DEFAULT_PRICE_PER_GPU_HOUR

    p.add_argument("--price-per-cpu-hour", type=float, default=DEFAULT_PRICE_PER_CPU_HOUR,
                   help="$ per CPU-hour for the compute cost and payback (default %(default)s: on-demand vCPU-hour)")
    p.add_argument("--price-per-gpu-hour", type=float, default=DEFAULT_PRICE_PER_GPU_HOUR,
                   help="$ per GPU-hour, for rows encoded on CUDA (default %(default)s: on-demand A10G-hour)")


def _knobs(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quality", type=float, help="0–100 (default 75)")
    g.add_argument("--target-bpp", type=float, help="rate control: land within ±5%% of this many bits per pixel")
    g.add_argument("--min-psnr", type=float, help="smallest stream whose decoded PSNR (dB) meets this floor")


_CODEC_HELP = ("auto, a model registry name (tae-f2-ft, tae-f2, diffusers:<ref>), avif, jxl, webp, jpeg, jpeg-exact "
               f"or passthrough (default {DEFAULT_CODEC}); auto keeps, per image, the smallest stream among --codecs "
               "that meets the floors (--min-psnr, --min-ms-ssim, --max-lpips, --max-dists: every one given), else the "
               "original file or, for JPEG, its jpeg-exact transcode")


def _codec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--codec", default=DEFAULT_CODEC, help=_CODEC_HELP)
    p.add_argument("--lossless", action="store_true",
                   help="change no pixel: JPEG files as jpeg-exact (JPEG XL transcodes rebuilt bit for bit), other "
                        "images as lossless JPEG XL or WebP checked pixel for pixel, whichever is smaller, else "
                        "the original file; replaces --codec and the quality knobs")
    p.add_argument("--codecs", default=",".join(DEFAULT_AUTO_CODECS), metavar="LIST",
                   help=f"comma-separated codecs --codec auto chooses from (default {','.join(DEFAULT_AUTO_CODECS)})")
    p.add_argument("--min-ms-ssim", type=float, metavar="M",
                   help="quality floor on decoded MS-SSIM (0–1); alone or with --min-psnr")
    p.add_argument("--max-lpips", type=float, metavar="D",
                   help="perceptual floor: decoded LPIPS-Alex distance at most D (0 = identical; about 0.01 at JPEG "
                        "q90, 0.3 at q10); combines with the other floors. Costs about 0.4 s per megapixel per "
                        "candidate decoded, on one CPU thread (docs/perceptual.md)")
    p.add_argument("--max-dists", type=float, metavar="D",
                   help="perceptual floor: decoded DISTS distance at most D (0 = identical; about 0.07 at JPEG q90, "
                        "0.3 at q10); combines with the other floors. Costs about 9 s per megapixel per candidate "
                        "decoded, on one CPU thread (docs/perceptual.md)")
    p.add_argument("--entropy-model",
                   help="how neural latents are entropy-coded: per-channel or a learned context model (tae-f2-ctx, "
                        "tae-f2-ft-ctx); default: the model's own (per-channel for tae-f2, tae-f2-ft-ctx for "
                        "tae-f2-ft); decoding follows the stream")
    p.add_argument("--rdoq", type=float, metavar="K",
                   help="strength of RD-optimised rounding of neural latents (0: plain rounding; default: the "
                        "entropy model's own: 1 for tae-f2-ctx, 0 for tae-f2-ft-ctx); needs a context entropy model")
    p.add_argument("--full-resolution", action="store_true",
                   help="neural codecs: never code at a reduced resolution. By default a --target-bpp below what "
                        "the full-size latent reaches at its coarsest step is coded at half (then a quarter of) "
                        "the width and height and upscaled on restore, which meets the target at better quality; "
                        "with this flag such a target overshoots instead")
    p.add_argument("--verify-refine", action="store_true",
                   help="decode each neural stream with and without faithful refinement, measure PSNR, MS-SSIM and "
                        "LPIPS of each against the original, and record in the stream which K helps without raising "
                        "LPIPS (or that none does): decode --refine faithful then follows it. Costs three extra "
                        "decodes and LPIPS measurements per image at encode, 9 bytes per stream")
    p.add_argument("--verify-realistic", action="store_true",
                   help="decode each neural stream unrefined and with realistic refinement at several (steps, eta), "
                        "measure LPIPS and sharpness of each against the original, and record in the stream the "
                        "setting with the lowest LPIPS among those that lower it, preferring those that bring "
                        "sharpness closer to the original's (or that none lowers it): decode --refine realistic "
                        "then follows it, with the seed checked. Costs four extra decodes and five LPIPS "
                        "measurements per image at encode, 14 bytes per stream")
    p.add_argument("--probes", type=int, default=2, metavar="N",
                   help="neural codecs: decoder backward passes per channel-sensitivity estimate (default 2; 1 "
                        "halves that part of the encode, at a noisier step allocation)")
    p.add_argument("--encoder-precision", choices=ENCODER_PRECISIONS, default="float32",
                   help="neural codecs: arithmetic of the encoder and the sensitivity probes. bfloat16 (CPUs with "
                        "AVX512-BF16/AMX, recent GPUs) encodes 1.6-2x faster but its streams decode lower, more so "
                        "the higher the quality: ~0.01 dB near 23 dB, up to 0.3 dB near 38 dB "
                        "(docs/economics.md); decoding is always float32")
    p.add_argument("--global-step", action="store_true",
                   help="neural codecs: one quantization step for all channels (the baseline), not per channel")
    p.add_argument("--latent-search", type=int, default=0, metavar="N",
                   help="encoder effort for neural codecs: N gradient steps searching for the latent the decoder "
                        "renders closest to the image (20 is a good value; typically +1 to +4 dB PSNR for a few "
                        "percent more bits). Streams decode as usual. Each step costs about two decodes (forward "
                        "and backward through the decoder): fast on a GPU; with 20 steps on 2 CPU cores, measured "
                        "125 s per megapixel on 512-px crops and 196 s at full size. Default 0 (off)")


def _refine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--refine", choices=["none", "faithful", "realistic"], default="none",
                   help="diffusion refinement of the dequantized latent: faithful (deterministic DDIM, the "
                        "conservative denoiser) or realistic (the perceptually trained denoiser; DDIM eta=1, "
                        "seeded noise from the second step on); default none")
    p.add_argument("--steps", type=int, help="refinement steps K (default: 4 faithful, 1 realistic)")
    p.add_argument("--seed", type=int, default=0, help="seed of realistic refinement's noise (default 0)")
    p.add_argument("--eta", type=float,
                   help="realistic: fresh noise per step, 0 (deterministic) to 1 (ancestral; the default)")
    p.add_argument("--refiner", metavar="NAME",
                   help="tae-f2-denoiser, diffusers-unet:<hub id or folder>, or a train-refiner folder "
                        "(default: the codec's own)")
    p.add_argument("--unverified", action="store_true",
                   help="refine with --steps (realistic: --eta and --seed too) even where the stream's encoder check "
                        "(--verify-refine, --verify-realistic) chose otherwise")


def _codec_name(a) -> str:
    """The codec ``encode`` / ``compress`` run: ``lossless`` with --lossless (alone), else --codec."""
    if not a.lossless:
        return a.codec
    knobs = [f"--{k.replace('_', '-')}" for k in ("quality", "target_bpp", "min_psnr", "min_ms_ssim", "max_lpips",
                                                  "max_dists")
             if getattr(a, k) is not None]
    if a.codec != DEFAULT_CODEC or knobs:
        raise ValueError(f"--lossless chooses the codec and keeps every pixel; drop {' '.join(knobs or ['--codec'])}")
    return "lossless"


def _refine_config(a):
    from latentarc.codec.refine import RefineConfig

    return RefineConfig(a.refine, a.steps, a.seed, verified=not a.unverified, eta=a.eta)


def _json_options(text: str) -> dict:
    """Parse ``--storage-options``; on error never echo the value back: it usually holds credentials."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON (at character {e.pos})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _ray_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ray-address", help="auto, ray://host:port, … (default: $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--storage-options", type=_json_options, default=None, metavar="JSON",
                   help='fsspec options for every s3:// location, e.g. {"endpoint_url": "http://…"}')
    p.add_argument("--workers", type=int, help="model actors (default: one per GPU, else one per CPU)")
    p.add_argument("--batch-size", type=int, default=1, help="images per actor call (default 1: best balance)")
    p.add_argument("--no-progress", action="store_true", help="hide Ray Data progress bars")


def _retry_passes_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--retry-passes", type=int, default=1, metavar="N",
                   help="more passes, one image per batch, over images a lost node or a failed batch left without "
                        "an outcome (default 1; 0: record them as BatchFailed at once)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="latentarc", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="verb", required=True)

    p = sub.add_parser("encode", help="one image to one bitstream file")
    p.add_argument("image")
    p.add_argument("out")
    _codec_args(p)
    _knobs(p)
    _add_model_args(p)

    p = sub.add_parser("decode", help="one bitstream file to one image")
    p.add_argument("stream")
    p.add_argument("out", help="output image; the extension picks the format (PNG recommended)")
    _refine_args(p)
    _add_model_args(p)

    p = sub.add_parser("info", help="print the bitstream header as JSON")
    p.add_argument("stream")
    _add_model_args(p)

    p = sub.add_parser("compress", help="archive a collection into a Parquet bitstream table (Ray Data)")
    p.add_argument("src", help="local folder, file://, s3://bucket/prefix, or a manifest (.txt/.lst) of URIs")
    p.add_argument("table", help="table root: local folder or s3://bucket/prefix")
    _codec_args(p)
    _knobs(p)
    _ray_args(p)
    _retry_passes_arg(p)
    p.add_argument("--watch", type=float, metavar="SECONDS", help="keep polling the source and archive arrivals")
    p.add_argument("--retry-errors", action="store_true", help="retry unchanged inputs that failed in earlier runs")
    _storage_price_arg(p)
    _compute_price_args(p)
    p.add_argument("--max-pixels", type=int, help="decompression-bomb guard (default Pillow's 89.5 MP)")
    p.add_argument("--no-ms-ssim", action="store_true", help="skip the MS-SSIM column (saves one decode per image)")
    p.add_argument("--rows-per-part", type=int, default=64,
                   help="rows per Parquet part (parts are written as they fill, all committed at the end)")
    p.add_argument("--weights", help="explicit weight file or folder, passed to every actor")

    p = sub.add_parser("restore", help="decode all or some rows of a table back to images")
    p.add_argument("table")
    p.add_argument("dst", help="destination folder or s3://bucket/prefix")
    sel = p.add_mutually_exclusive_group()
    sel.add_argument("--keys", help="file with one key per line")
    sel.add_argument("--prefix", help="restore keys starting with this prefix")
    p.add_argument("--format", choices=["png", "tiff", "webp"], default="png")
    _refine_args(p)
    _ray_args(p)
    _retry_passes_arg(p)
    p.add_argument("--weights", help="explicit weight file or folder, passed to every actor")

    p = sub.add_parser("verify", help="check a table's files, commits, checksums and models (exit 1 on a problem)")
    p.add_argument("table", help="table root: local folder or s3://bucket/prefix")
    p.add_argument("--decode", action="store_true", help="also decode rows and re-measure PSNR where originals exist")
    p.add_argument("--sample", type=float, default=1.0, metavar="FRACTION",
                   help="decode only this deterministic fraction of rows (with --decode; default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the --sample draw")
    p.add_argument("--storage-options", type=_json_options, default=None, metavar="JSON",
                   help='fsspec options for s3:// tables and sources, e.g. {"endpoint_url": "http://…"}')
    p.add_argument("--json", dest="as_json", action="store_true", help="print the report as JSON")
    p.add_argument("--weights", help="explicit weight file or folder (else $LATENTARC_MODEL_DIR, cache, download)")
    p.add_argument("--tolerance-db", type=float, default=0.05, help="allowed |decoded PSNR - stored PSNR| (dB)")
    p.add_argument("--tolerance-perceptual", type=float, default=0.002, metavar="D",
                   help="allowed |decoded - stored| LPIPS and DISTS (absolute), for rows that carry them")

    p = sub.add_parser("bench", help="rate–distortion (PSNR, MS-SSIM, LPIPS, DISTS) and speed of codecs over a "
                                     "folder of images, and rate-control checks")
    p.add_argument("images", help="folder of images")
    p.add_argument("--codecs", metavar="LIST",
                   help="codecs to compare, e.g. tae-f2,tae-f2@tae-f2-ctx,avif,jxl,webp,jpeg (default: "
                        f"{DEFAULT_CODEC}, tae-f2, avif, jxl, webp, jpeg); NAME@ENTROPY[:RDOQ], NAME+search=N, "
                        "NAME+global and NAME+fullres (low targets at full resolution) are neural variants")
    p.add_argument("--codec", metavar="NAME", help="benchmark this one codec (instead of --codecs)")
    p.add_argument("--qualities", default=None,
                   help='comma-separated operating points for every codec: qualities 0–100 and/or rates like '
                        '0.03bpp (default: codec-specific lists; "" for no RD run, with --targets or --floors)')
    p.add_argument("--targets", help="comma-separated bpp targets: check the first codec's rate control lands "
                                     "within ±5%%")
    p.add_argument("--floors", help="comma-separated PSNR floors (dB): check the first codec's --min-psnr never "
                                    "returns less")
    p.add_argument("--limit", type=int, help="use only the first N images")
    p.add_argument("--crop", type=int, help="centre-crop images to at most N×N pixels (quick runs)")
    p.add_argument("--compare-global", action="store_true",
                   help="also run the first codec with one global quantization step (NAME+global)")
    p.add_argument("--compare-entropy", metavar="NAME",
                   help="also run the first codec with this entropy model (NAME@ENTROPY; e.g. tae-f2-ctx, "
                        "tae-f2-ctx:0 without RD-optimised rounding)")
    p.add_argument("--out", metavar="DIR", help="write rd.json, plots and index.html here (default rd-bench); a run "
                                                "with the same settings there resumes from its rows.jsonl")
    p.add_argument("--workers", type=int, default=1,
                   help="processes sharing the images (default 1; speed figures are comparable between codecs of "
                        "one run either way)")
    p.add_argument("--summarise-only", action="store_true",
                   help="measure nothing: write rd.json and the page from what --out's rows.jsonl holds so far "
                        "(the images every codec has measured)")
    p.add_argument("--metrics", metavar="LIST",
                   help="metrics to measure, of psnr,ms-ssim,lpips,dists (default all; PSNR always; on one core "
                        "DISTS costs ~8 s/MP per point, LPIPS ~1)")
    p.add_argument("--json-out", metavar="FILE", help="also write the results as JSON here")
    _add_model_args(p)

    p = sub.add_parser("bench-refine", help="research: refinement modes against none on the same streams — PSNR, "
                                            "MS-SSIM, LPIPS, DISTS, sharpness, decode s/MP")
    p.add_argument("images", help="folder of images")
    p.add_argument("--codec", default=DEFAULT_CODEC)
    p.add_argument("--modes", dest="refine_modes", default="faithful,realistic",
                   help="refinement modes to compare with none (default faithful,realistic)")
    p.add_argument("--steps", dest="refine_steps", metavar="LIST", help="step counts K (default 1,2,4)")
    p.add_argument("--etas", metavar="LIST",
                   help="realistic's noise per step to compare, e.g. 0.3,0.6,1 (default: the mode's, 1)")
    p.add_argument("--qualities", default="25,50,75", help="comma-separated qualities (default 25,50,75)")
    p.add_argument("--targets", help="comma-separated bpp targets: the operating points instead of --qualities")
    p.add_argument("--limit", type=int, help="use only the first N images")
    p.add_argument("--crop", type=int, help="centre-crop images to at most N×N pixels (quick runs)")
    p.add_argument("--refiner", metavar="NAME", help="refiner (default: the codec's own)")
    p.add_argument("--realistic-refiner", metavar="NAME",
                   help="the realistic mode's refiner only (default: --refiner, else the codec's own for that mode)")
    p.add_argument("--seed", type=int, default=0, help="seed of realistic refinement")
    p.add_argument("--metrics", metavar="LIST", help="metrics to measure, of psnr,ms-ssim,lpips,dists (default all)")
    p.add_argument("--html", metavar="FILE", help="a page with the table and side-by-side crops of every mode")
    p.add_argument("--json-out", metavar="FILE", help="also write the results as JSON here")
    _add_model_args(p)

    p = sub.add_parser("report", help="savings and quality report of a committed table")
    p.add_argument("table", help="table root: local folder or s3://bucket/prefix")
    p.add_argument("--json", dest="as_json", action="store_true", help="print the numbers as JSON")
    p.add_argument("--html", metavar="FILE", help="also write a self-contained HTML page with plots and crops")
    _storage_price_arg(p)
    _compute_price_args(p)
    p.add_argument("--storage-options", type=_json_options, default=None, metavar="JSON",
                   help='fsspec options for s3:// tables and sources, e.g. {"endpoint_url": "http://…"}')
    p.add_argument("--weights", help="explicit weight file or folder, for decoding the crops")

    p = sub.add_parser("bench-scale", help="driver wall time and peak RSS for listing, pending, commit and "
                                           "restore --keys on synthesised 100k / 1M-object tables")
    from latentarc.jobs.bench_scale import add_arguments as bench_scale_args

    bench_scale_args(p)

    p = sub.add_parser("bench-soak", help="one long compress run of many small images: images/s and the RSS of "
                                          "driver and actors over time")
    from latentarc.jobs.soak_bench import add_arguments as bench_soak_args

    bench_soak_args(p)

    p = sub.add_parser("bench-pipeline", help="compress-job throughput against a plain single-process loop")
    p.add_argument("images", help="folder of images")
    p.add_argument("--limit", type=int, default=12)
    p.add_argument("--quality", type=float, default=50)
    p.add_argument("--json-out", metavar="FILE", help="also write the figures as JSON here")
    p.add_argument("--weights")
    _ray_args(p)

    p = sub.add_parser("bench-speed", help="neural codec encode/decode speed per core and where the time goes, "
                                           "variant against variant (e.g. an older source tree) in one run")
    from latentarc.jobs.speed_bench import add_arguments as bench_speed_args

    bench_speed_args(p)

    p = sub.add_parser("train-refiner", help="train the tae-f2 latent denoiser used by --refine")
    p.add_argument("images", nargs="?", default=str(DEFAULT_TRAIN),
                   help="folder of training images, subfolders included (default ../shared/data/train)")
    p.add_argument("--held-out", default=str(DEFAULT_HELD_OUT),
                   help="evaluation photos that must not be trained on (default ../shared/data/photos)")
    p.add_argument("--out", required=True, help="folder for model.safetensors, config.json and CARD.md (and "
                                                "checkpoint.pt with --save-every; a rerun resumes from it)")
    p.add_argument("--iterations", dest="steps", type=int, default=2000, help="training iterations")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--crop", type=int, default=32, help="latent crop size (pixels / 8)")
    p.add_argument("--channels", default="64,128,128", help="U-Net block_out_channels")
    p.add_argument("--layers", type=int, default=1, help="U-Net layers_per_block")
    p.add_argument("--limit", type=int, help="use only the first N photos (held-out ones included)")
    p.add_argument("--max-side", type=int, default=1024, help="downscale photos to this longer side first")
    p.add_argument("--holdout-every", type=int, default=5,
                   help="validate on every Nth image in name order (with --init: the parent's held-out images)")
    p.add_argument("--probes", type=int, default=2, help="Hutchinson probes of the decoder sensitivity (as encode)")
    p.add_argument("--cache", help="folder for the cached latents (default ~/.cache/latentarc/refiner-latents)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--loss", choices=["pixel", "latent", "decoded", "decoded-ssim", "decoded-lpips"], default="pixel",
                   help="pixel: latent MSE weighted by decoder sensitivity (default); latent: flat latent MSE; "
                        "decoded: pixel MSE through the frozen decoder (slower, what PSNR measures); "
                        "decoded-ssim: that plus --ssim-weight × (1 − SSIM), against blur; "
                        "decoded-lpips: that plus --lpips-weight × LPIPS, for texture")
    p.add_argument("--ssim-weight", type=float, default=1.0, help="with --loss decoded-ssim (default 1)")
    p.add_argument("--lpips-weight", type=float, default=1.0, help="with --loss decoded-lpips (default 1)")
    p.add_argument("--dists-weight", type=float, default=0.0,
                   help="with a decoded loss: add W × DISTS on the decoded pixels — its structure term charges for "
                        "detail averaged away, without a discriminator (default 0)")
    p.add_argument("--detail-weight", type=float, default=0.0,
                   help="with a decoded loss: add W × the local detail-energy loss — each 16-px block's gradient "
                        "energy against the reference's, over 3 octaves, so blur and excess texture both cost "
                        "(default 0)")
    p.add_argument("--adversarial-weight", type=float, default=0.0,
                   help="with a decoded loss: train a patch discriminator beside the denoiser and add W × its "
                        "hinge loss, for texture that MSE and LPIPS average away (the realistic mode; default 0)")
    p.add_argument("--disc-steps", type=int, default=1,
                   help="with --adversarial-weight: discriminator updates per denoiser step (default 1)")
    p.add_argument("--disc-width", type=int, default=32, help="the discriminator's first-layer channels (default 32)")
    p.add_argument("--disc-layers", type=int, default=3,
                   help="the discriminator's stride-2 layers: 3 sees 38-px patches, 4 sees 78 (default 3)")
    p.add_argument("--disc-lr", type=float, help="the discriminator's learning rate (default: --lr)")
    p.add_argument("--disc-warmup", type=int, default=0,
                   help="first N steps: the discriminator learns, the denoiser gets no adversarial term yet")
    p.add_argument("--base-steps", metavar="LO,HI",
                   help="range of the codec's base quantization step to train at (default 0.12,6.8: quality "
                        "100 … 0); e.g. 0.9,6.8 for the low rates only")
    p.add_argument("--save-every", type=int, default=0, help="checkpoint every N iterations (and every 10 minutes)")
    p.add_argument("--unrolled-fraction", type=float, default=0.0,
                   help="with a decoded loss: share of batches trained through the realistic sampler's two steps "
                        "(quantized state at t*, the network, fresh noise, the network again), so that its "
                        "stochastic steps are what it learns to finish (default 0)")
    p.add_argument("--name", default="tae-f2-denoiser",
                   help="model name written into config.json and the card (e.g. tae-f2-realistic)")
    p.add_argument("--codec", default="tae-f2", metavar="MODEL",
                   help="the model whose latents it learns to denoise (default tae-f2; e.g. tae-f2-ft): the "
                        "refiner is bound to that model's decoder and refuses other streams")
    p.add_argument("--max-minutes", type=float,
                   help="stop after M minutes of training and validate and export as at the end; the cosine "
                        "learning rate follows whichever of --iterations and this ends first")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--prediction", choices=["v_prediction", "sample"], default="v_prediction",
                   help="what the U-Net predicts: v (x_0 with a skip connection, default) or x_0 directly")
    p.add_argument("--condition", choices=["steps", "none"], default="steps",
                   help="give the U-Net the stream's per-channel steps as an input map (default) or not")
    p.add_argument("--init", metavar="DIR",
                   help="start from a denoiser folder written by train-refiner (same U-Net; its latent statistics, "
                        "prediction and conditioning are kept) — e.g. to fine-tune with --loss decoded")
    p.add_argument("--quantized-fraction", type=float, default=0.5,
                   help="share of samples that are the codec's quantized latent at t* (the rest: Gaussian noise at "
                        "t ≤ t*); 1 trains only the state a one-step faithful decode sees")
    p.add_argument("--dtype", choices=["float16", "float32"], default="float16",
                   help="precision of the stored weights (default float16: half the size; the held-out figures "
                        "are computed with the stored weights; inference runs in float32 either way)")
    _add_model_args(p)

    p = sub.add_parser("train-entropy", help="train the context entropy model for tae-f2 latents")
    p.add_argument("--out", required=True, help="folder for model.safetensors, config.json and CARD.md")
    p.add_argument("--name", default="tae-f2-ctx", help="model name written into config.json")
    p.add_argument("--model-id", type=int, default=3, help="entropy-model id streams will carry (2, 3 and 5: the shipped context models; 4: "
                        "the research models in docs/results)")
    p.add_argument("--iterations", dest="steps", type=int, default=1500,
                   help="training iterations: the total to reach (a resumed run continues)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--crop", type=int, default=24, help="latent crop size (pixels / 8)")
    p.add_argument("--groups", type=int, default=4, help="channel groups (passes = 2 × groups)")
    p.add_argument("--hidden", type=int, default=48, help="hidden channels of the context network")
    p.add_argument("--depth", type=int, default=2, help="3×3 layers of the context network (receptive field 2·depth+1)")
    p.add_argument("--clip", type=float, default=10.0, help="gradient-norm clip per step")
    _entropy_data_args(p, training=True)
    p.add_argument("--seed", type=int, default=0)
    _add_model_args(p)

    p = sub.add_parser("bench-entropy", help="where a context entropy model's bits go, per pass, against the "
                                             "per-channel model and an ideal-law bound (held-out latents)")
    p.add_argument("--model", default="tae-f2-ctx", help="shipped entropy model name or a train-entropy folder")
    p.add_argument("--qualities", default="10,40,70", help="comma-separated qualities (default 10,40,70)")
    p.add_argument("--json-out", metavar="FILE", help="also write the figures as JSON here")
    _entropy_data_args(p, training=False)
    _add_model_args(p)

    p = sub.add_parser("train-codec", help="fine-tune the tae-f2 encoder for the frozen tae-f2 decoder (streams "
                                           "still decode with tae-f2); resumable; --eval-only: held-out figures")
    p.add_argument("images", nargs="?", default=str(DEFAULT_TRAIN),
                   help="folder of training photos, searched recursively (default ../shared/data/train)")
    p.add_argument("--out", help="run folder: checkpoint.pt, then encoder.safetensors, config.json, CARD.md; "
                                 "rerunning with the same --out resumes from its checkpoint")
    p.add_argument("--held-out", default=str(DEFAULT_HELD_OUT),
                   help="held-out photos: refused as training data, used by the evaluation")
    p.add_argument("--iterations", dest="steps", type=int, default=2000,
                   help="training iterations: the total to reach (a resumed run continues)")
    p.add_argument("--batch", type=int, default=4, help="crops per forward pass")
    p.add_argument("--accumulate", type=int, default=1, metavar="N",
                   help="forward passes per optimiser step: an effective batch of N × --batch in the memory of one "
                        "(lets a CPU or a small GPU train at a large GPU's batch)")
    p.add_argument("--crop", type=int, default=256, help="training crop in pixels (multiple of 8)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=50, help="linear learning-rate warm-up steps")
    p.add_argument("--quality-range", default="0,100", metavar="LO,HI",
                   help="qualities drawn per example; down to -17, the coarser steps rate control reaches below "
                        "quality 0 (step 12 at -16.3); a negative LO needs the = form: --quality-range=-17,100")
    p.add_argument("--scale-range", default="0.5,1", metavar="LO,HI",
                   help="training photos rescaled by a random factor in [LO, HI] before cropping (0.25–2; above 1 "
                        "an upscale: the smooth content of large photos)")
    p.add_argument("--rate-model", default="tae-f2-ctx", metavar="NAME",
                   help="differentiable code length: a context entropy model by name (tae-f2-ctx, the default; "
                        "tae-f2-ft-ctx; ctx:<folder>), or laplace for a per-channel Laplacian")
    p.add_argument("--rate-weight", type=float, default=1.0,
                   help="λ in units of the codec's RD slope at each example's steps (0: distortion only)")
    p.add_argument("--rate-proxy", choices=["ste", "noise"], default="ste",
                   help="what the rate term codes: the rounded symbols, straight-through (default: the bits the "
                        "stream spends), or the noisy latent (2.6x the bits at quality 0)")
    p.add_argument("--rate-slope", choices=["formula", "measured", "objective"], default="formula",
                   help="that slope: the high-rate formula (default), or measured per example by coding it again at "
                        "steps × 1.25 (costs a decoder and rate-model pass; prices bits right at coarse steps): of "
                        "the MSE (measured) or of the whole distortion objective, its perceptual term too (objective)")
    p.add_argument("--proxy", choices=["ste", "noise"], default="ste",
                   help="quantization seen by the decoder: real rounding, straight-through (default), or noise")
    p.add_argument("--lpips-weight", type=float, default=0.0,
                   help="add W × LPIPS(x, x̂) to the loss (codec.metrics.lpips_loss)")
    p.add_argument("--lpips-form", choices=["linear", "log"], default="linear",
                   help="log: W × LPIPS / sg(LPIPS), the gradient of W × ln LPIPS — priced like the normalised MSE "
                        "term, as BD-rate on the LPIPS axis counts it (default linear)")
    p.add_argument("--range-weight", type=float, default=1.0,
                   help="add W × mean(relu(|z| − 3)²): keeps latents inside the decoder's input clamp (default 1)")
    p.add_argument("--sens-probes", type=int, default=1, help="Hutchinson probes of the decoder sensitivity")
    p.add_argument("--sens-window", type=int, default=16, help="… on a centred window of N latents (codec: 32)")
    p.add_argument("--save-every", type=int, default=50, help="checkpoint every N iterations")
    p.add_argument("--save-minutes", type=float, default=10.0, help="… and at least every M minutes")
    p.add_argument("--max-minutes", type=float,
                   help="end this chunk after M minutes of training, then evaluate and export as a finished one "
                        "(sizes a run to a session or a lease; the next run resumes)")
    p.add_argument("--train-decoder", action="store_true",
                   help="stage 2: train the decoder jointly with the encoder; the result is a model of its own, "
                        "tae-f2-ft:<folder>, whose streams name it (continue a stage-1 --out to chain the stages)")
    p.add_argument("--decoder-lr", type=float, help="the decoder's learning rate with --train-decoder (default --lr)")
    p.add_argument("--init", metavar="DIR",
                   help="start from a train-codec folder's weights when --out has no checkpoint yet: its encoder, and "
                        "a fine-tuned decoder if it has one (trained with --train-decoder, else frozen and written "
                        "back bit for bit: the model keeps its fingerprint)")
    p.add_argument("--cache-mb", type=float, default=2048.0,
                   help="decoded training photos kept in memory, in MB (default 2048; 0: decode every draw)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--precision", choices=ENCODER_PRECISIONS, default="float32",
                   help="arithmetic of the networks' passes: bfloat16 autocast where the CPU (AVX512-BF16, AMX) or "
                        "GPU computes it natively (weights, gradients and the loss stay float32)")
    p.add_argument("--name", help="model name written into config.json and CARD.md (default tae-f2-le, with "
                                  "--train-decoder tae-f2-ft)")
    p.add_argument("--eval-only", action="store_true",
                   help="only evaluate on held-out photos: the stock encoder, and --out's checkpoint if any, "
                        "else the model it exported")
    p.add_argument("--eval-photos", type=int, default=3, help="held-out photos evaluated (0: none)")
    p.add_argument("--eval-crop", type=int, default=512, help="centre crop of each evaluated photo (pixels)")
    p.add_argument("--eval-qualities", default="10,40,70",
                   help="qualities coded per entropy model ('': the unquantized ceiling only)")
    p.add_argument("--eval-json", metavar="FILE", help="with --eval-only: also write the figures as JSON")
    _add_model_args(p)

    p = sub.add_parser("demo", help="compress a generated sample collection into a table, restore it and "
                                    "print the savings report (local folder, local Ray)")
    p.add_argument("--out", default="latentarc-demo", help="folder for the collection, table, restored "
                                                           "images and HTML report")
    _add_model_args(p)
    return ap


def _codec_spec(a, **overrides):
    """The codec spec of ``encode`` / ``compress``: every flag named like a ``CodecSpec`` field."""
    from latentarc.codec.spec import CodecSpec

    return CodecSpec.from_args(a, name=_codec_name(a), **overrides)


def _cmd_encode(a) -> int:
    from latentarc.codec.base import TARGET_TOLERANCE
    from latentarc.codec.codecs import build, encode_with
    from latentarc.codec.images import read_image

    pic = read_image(Path(a.image).read_bytes())
    codec = build(_codec_spec(a))
    t = time.perf_counter()
    res = encode_with(codec, pic, quality=a.quality, target_bpp=a.target_bpp, min_psnr=a.min_psnr,
                      min_ms_ssim=a.min_ms_ssim, max_lpips=a.max_lpips, max_dists=a.max_dists)
    dt = time.perf_counter() - t
    Path(a.out).write_bytes(res.data)
    chosen = ""
    if "auto" in res.params:
        auto = res.params["auto"]
        chosen = f" [auto: {auto['chosen']}; candidates {json.dumps(auto['candidates'])}]"
    if "lossless" in res.params:
        chosen = (f" [lossless: {res.params['lossless']['chosen']}, {res.params['guarantee']}; "
                  f"candidates {json.dumps(res.params['lossless']['candidates'])}]")
    search = res.params.get("latent_search")
    if search:  # what the encoder's search gained before quantization, next to the stream's measured PSNR
        chosen += (f" [latent_search: {search['iterations']} steps, unquantized {search['psnr_before']:.2f} → "
                   f"{search['psnr_after']:.2f} dB]")
    measured = res.params.get("auto", res.params)  # perceptual distances, when a floor had them measured
    perceptual = "".join(f", {label} {measured[k]:.4f}" for k, label in (("lpips", "LPIPS"), ("dists", "DISTS"))
                         if measured.get(k) is not None)
    print(
        f"{a.image}: {pic.width}x{pic.height} {pic.mode} → {a.out}: {len(res.data)} bytes, "
        f"{res.bpp:.4f} bpp, PSNR {res.psnr:.2f} dB{perceptual}, {dt:.1f} s{chosen}"
    )
    if a.target_bpp and abs(res.bpp / a.target_bpp - 1) > TARGET_TOLERANCE:
        print(f"warning: {a.target_bpp} bpp is not reachable for this image; nearest is {res.bpp:.4f}", file=sys.stderr)
    return EXIT_OK


def _cmd_decode(a) -> int:
    from PIL import Image

    from latentarc.codec.api import codec_for_stream
    from latentarc.codec.restored import decode_to

    data = Path(a.stream).read_bytes()
    codec = codec_for_stream(data, weights=a.weights, device=a.device)
    refine = _refine_config(a)
    fmt = Image.registered_extensions().get(Path(a.out).suffix.lower())
    if fmt is None:
        raise ValueError(f"{a.out}: the extension names no image format Pillow writes")
    # the exact tier: the original file, written verbatim when the output asks for its format
    out = decode_to(codec, data, fmt, refine=refine if refine.active else None, refiner=a.refiner)
    Path(a.out).write_bytes(out.body)
    refined = f", refinement {out.refinement}" if refine.mode != "none" else ""
    print(f"{a.stream} → {a.out}: {out.width}x{out.height} {out.mode}{refined}")
    return EXIT_OK


def _cmd_info(a) -> int:
    from latentarc.codec.api import codec_for_stream

    data = Path(a.stream).read_bytes()
    print(json.dumps(codec_for_stream(data, weights=a.weights, device=a.device).info(data), indent=2))
    return EXIT_OK


def _cmd_compress(a) -> int:
    from latentarc.codec.codecs import check_weights
    from latentarc.codec.floors import Floors
    from latentarc.pipeline.compress import CompressOptions, run_compress, watch
    from latentarc.pipeline.runtime import init_ray
    from latentarc.pipeline.savings import summary_lines

    spec = _codec_spec(a, weights=a.weights or os.environ.get("LATENTARC_MODEL_DIR"))
    check_weights(spec)
    Floors(max_lpips=a.max_lpips, max_dists=a.max_dists).check_weights()
    init_ray(a.ray_address, progress=not a.no_progress and sys.stderr.isatty())
    opts = CompressOptions(codec=spec, quality=a.quality, target_bpp=a.target_bpp, min_psnr=a.min_psnr,
                           min_ms_ssim=a.min_ms_ssim, max_lpips=a.max_lpips, max_dists=a.max_dists,
                           workers=a.workers,
                           batch_size=a.batch_size, max_pixels=a.max_pixels, retry_errors=a.retry_errors,
                           price_per_gb_month=a.price_per_gb_month, ms_ssim=not a.no_ms_ssim,
                           price_per_cpu_hour=a.price_per_cpu_hour, price_per_gpu_hour=a.price_per_gpu_hour,
                           rows_per_part=a.rows_per_part, retry_passes=a.retry_passes)
    kw = {"source_options": a.storage_options, "table_options": a.storage_options}
    def show(r: dict) -> None:
        print("\n".join(summary_lines(r)), flush=True)
        if r["errors"]:
            _print_run_errors(a.table, a.storage_options, r["run_id"])

    if a.watch:
        try:
            reports = watch(a.src, a.table, opts, a.watch, on_report=show, **kw)
        except KeyboardInterrupt:
            return EXIT_OK
    else:
        reports = [run_compress(a.src, a.table, opts, **kw)]
        show(reports[0])
    return EXIT_PARTIAL if any(r["errors"] for r in reports) else EXIT_OK


def _print_run_errors(table_uri: str, options: dict | None, run_id: str, limit: int = 10) -> None:
    """The error rows a run committed, one line each (the first ``limit``), so a user sees what failed."""
    import pyarrow.compute as pc

    from latentarc.pipeline.table import BitstreamTable

    errs = BitstreamTable(table_uri, options).errors()
    errs = errs.filter(pc.equal(errs["run_id"], run_id))
    for row in errs.slice(0, limit).to_pylist():
        print(f"  error  {row['key']} ({row['stage']}): {row['error_type']}: {row['message']}")
    if errs.num_rows > limit:
        print(f"  … {errs.num_rows - limit} more in {table_uri}/_errors (latentarc report {table_uri})")


def _cmd_restore(a) -> int:
    from latentarc.pipeline.restore import run_restore
    from latentarc.pipeline.runtime import init_ray

    keys = None
    if a.keys:
        keys = [k.strip() for k in Path(a.keys).read_text().splitlines() if k.strip() and not k.startswith("#")]
    init_ray(a.ray_address, progress=not a.no_progress and sys.stderr.isatty())
    r = run_restore(a.table, a.dst, keys=keys, prefix=a.prefix, table_options=a.storage_options,
                    dst_options=a.storage_options, weights=a.weights or os.environ.get("LATENTARC_MODEL_DIR"),
                    workers=a.workers, batch_size=a.batch_size, suffix="." + a.format,
                    refine=_refine_config(a), refiner=a.refiner, retry_passes=a.retry_passes)
    print(f"restored {r.restored} of {r.requested} images to {a.dst} in {r.seconds:.1f} s")
    for f in r.failures:
        print(f"  failed {f['key']}: {f['error_type']}: {f['message']}", file=sys.stderr)
    for k in r.missing:
        print(f"  not in table: {k}", file=sys.stderr)
    return EXIT_PARTIAL if r.failures or r.missing else EXIT_OK


def _cmd_verify(a) -> int:
    from latentarc.pipeline.verify import print_report, verify_table

    r = verify_table(a.table, a.storage_options, decode=a.decode, sample=a.sample, seed=a.seed,
                     weights=a.weights or os.environ.get("LATENTARC_MODEL_DIR"), tolerance_db=a.tolerance_db,
                     tolerance_perceptual=a.tolerance_perceptual)
    print_report(r, as_json=a.as_json)
    return EXIT_OK if r.ok else EXIT_PARTIAL


def _cmd_bench(a) -> int:
    from latentarc.jobs.bench import run_bench

    return run_bench(a)


def _cmd_bench_refine(a) -> int:
    from latentarc.jobs.research.refine_bench import run_refine_bench

    return run_refine_bench(a)


def _cmd_report(a) -> int:
    from latentarc.pipeline.report import run_report

    run_report(a.table, as_json=a.as_json, html_path=a.html, price_per_gb_month=a.price_per_gb_month,
               price_per_cpu_hour=a.price_per_cpu_hour, price_per_gpu_hour=a.price_per_gpu_hour,
               storage_options=a.storage_options, weights=a.weights or os.environ.get("LATENTARC_MODEL_DIR"))
    return EXIT_OK


def _cmd_bench_pipeline(a) -> int:
    from latentarc.jobs.pipeline_bench import run_pipeline_bench

    return run_pipeline_bench(a)


def _cmd_bench_speed(a) -> int:
    from latentarc.jobs.speed_bench import run_speed_bench

    return run_speed_bench(a)


def _cmd_train_refiner(a) -> int:
    from latentarc.jobs.research.train_refiner import run_train_refiner

    return run_train_refiner(a)


def _cmd_train_entropy(a) -> int:
    from latentarc.jobs.research.train_entropy import run_train_entropy

    return run_train_entropy(a)


def _cmd_bench_entropy(a) -> int:
    from latentarc.jobs.research.entropy_bench import run_entropy_bench

    return run_entropy_bench(a)


def _cmd_train_codec(a) -> int:
    from latentarc.jobs.research.train_codec import run_train_codec

    return run_train_codec(a)


def _cmd_bench_soak(a) -> int:
    from latentarc.jobs.soak_bench import run

    return run(a)


def _cmd_bench_scale(a) -> int:
    from latentarc.jobs.bench_scale import run

    return run(a)


def _cmd_demo(a) -> int:
    from latentarc.jobs.demo import run_demo

    return run_demo(Path(a.out), main, weights=a.weights)


_COMMANDS = {
    "encode": _cmd_encode,
    "decode": _cmd_decode,
    "info": _cmd_info,
    "compress": _cmd_compress,
    "restore": _cmd_restore,
    "verify": _cmd_verify,
    "bench": _cmd_bench,
    "bench-refine": _cmd_bench_refine,
    "report": _cmd_report,
    "bench-pipeline": _cmd_bench_pipeline,
    "bench-scale": _cmd_bench_scale,
    "bench-soak": _cmd_bench_soak,
    "bench-speed": _cmd_bench_speed,
    "demo": _cmd_demo,
    "train-refiner": _cmd_train_refiner,
    "train-entropy": _cmd_train_entropy,
    "bench-entropy": _cmd_bench_entropy,
    "train-codec": _cmd_train_codec,
}


def main(argv: list[str] | None = None) -> int:
    from latentarc.codec.errors import BitstreamError, ImageError, LatentarcError, ModelError

    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        return _COMMANDS[a.verb](a)
    except (ModelError, ValueError) as e:
        print(f"latentarc: error: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (BitstreamError, ImageError, LatentarcError, OSError) as e:
        print(f"latentarc: error: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_PARTIAL


if __name__ == "__main__":
    sys.exit(main())
