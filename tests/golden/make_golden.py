"""Write the golden streams and table of ``tests/test_golden.py`` (run once per format version, never to make a
failing golden test pass: these files stand for archives already written by earlier releases).

    LATENTARC_MODEL_DIR=../shared/models python tests/golden/make_golden.py
    LATENTARC_MODEL_DIR=../shared/models python tests/golden/make_golden.py --add tae-f2-ft.larc

``--add`` writes only streams the manifest does not hold yet (a new model's), from the recorded sources, and
leaves every existing file as it is.

The source images are synthesised here (no third-party pixels): a smooth gradient with shapes and seeded
noise, 96×64 RGB, plus a small baseline JPEG for the exact tier.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
STREAMS = {  # file → (codec, encode options)
    "tae-f2-per-channel.larc": ("tae-f2", ["--quality", "60"]),
    "tae-f2-ctx.larc": ("tae-f2", ["--quality", "60", "--entropy-model", "tae-f2-ctx"]),
    "tae-f2-global-step.larc": ("tae-f2", ["--quality", "60", "--global-step"]),
    "tae-f2-rgba.larc": ("tae-f2", ["--quality", "60"]),
    "tae-f2-ft.larc": ("tae-f2-ft", ["--quality", "60"]),  # its own decoder and context model
    # format version 2: a target below the full size's reach, coded at half size (a SIZE section)
    "tae-f2-ft-reduced.larc": ("tae-f2-ft", ["--target-bpp", "0.03"]),
    "avif.larc": ("avif", ["--quality", "60"]),
    "jxl.larc": ("jxl", ["--quality", "60"]),
    "passthrough.larc": ("passthrough", []),
}


def synth_rgb(seed: int = 7, w: int = 96, h: int = 64) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([x / w * 200 + 20, y / h * 180 + 30, (x + y) / (w + h) * 150 + 60], -1)
    img = Image.fromarray(np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    d.ellipse((10, 8, 40, 38), fill=(220, 40, 40))
    d.rectangle((55, 20, 88, 56), outline=(10, 10, 10), width=3)
    d.line((0, 60, 95, 4), fill=(250, 250, 250), width=2)
    return img


def add(names: list[str]) -> None:
    """Write the streams ``names`` (new to the manifest) from the recorded sources and record them."""
    manifest = json.loads((HERE / "manifest.json").read_text())
    src = HERE / "src"
    for name, sha in manifest["sources"].items():
        assert hashlib.sha256((src / name).read_bytes()).hexdigest() == sha, name
    for fname in names:
        assert fname in STREAMS and fname not in manifest["streams"], fname
        codec, opts = STREAMS[fname]
        _write(fname, codec, opts, _source(fname), manifest)
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


def _source(fname: str) -> str:
    """The source a stream of :data:`STREAMS` is encoded from."""
    if "rgba" in fname:
        return "alpha.png"
    return "photo.jpg" if "reduced" in fname else "scene.png"  # (scene.png is too small to reduce)


def _cli() -> list[str]:
    return [str(Path(sys.executable).with_name("latentarc"))]


def _write(fname: str, codec: str, opts: list[str], source: str, manifest: dict) -> None:
    """Encode ``source`` to ``fname``, decode it, and record what this release decodes (the test allows a small
    tolerance for float differences across CPUs; the exact tier must match to the byte)."""
    src = HERE / "src"
    subprocess.run(_cli() + ["encode", str(src / source), str(HERE / fname), "--codec", codec, *opts], check=True)
    dec = HERE / (fname + ".png")
    subprocess.run(_cli() + ["decode", str(HERE / fname), str(dec)], check=True)
    manifest["streams"][fname] = {
        "source": source, "codec": codec, "options": opts,
        "decoded_sha256": hashlib.sha256(np.asarray(Image.open(dec).convert("RGB")).tobytes()).hexdigest(),
        "psnr": _psnr(src / source, dec)}
    dec.unlink()


def main() -> None:
    src = HERE / "src"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir()
    synth_rgb().save(src / "scene.png")
    synth_rgb(seed=11, w=320, h=240).save(src / "photo.jpg", quality=90)
    rgba = synth_rgb(seed=3).convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.linspace(0, 255, 96, dtype=np.uint8), (64, 1))))
    rgba.save(src / "alpha.png")
    manifest = {"sources": {}, "streams": {}}
    for name in ("scene.png", "photo.jpg", "alpha.png"):
        manifest["sources"][name] = hashlib.sha256((src / name).read_bytes()).hexdigest()
    for fname, (codec, opts) in STREAMS.items():
        _write(fname, codec, opts, _source(fname), manifest)
    _write("jpeg-exact.larc", "jpeg-exact", [], "photo.jpg", manifest)
    table = HERE / "table"
    shutil.rmtree(table, ignore_errors=True)
    coll = HERE / "collection"
    shutil.rmtree(coll, ignore_errors=True)
    (coll / "a").mkdir(parents=True)
    shutil.copy(src / "scene.png", coll / "a" / "scene.png")
    shutil.copy(src / "photo.jpg", coll / "a" / "photo.jpg")
    (coll / "a" / "broken.jpg").write_bytes((src / "photo.jpg").read_bytes()[:300])
    r = subprocess.run(_cli() + ["compress", str(coll), str(table), "--codec", "tae-f2", "--quality", "60",
                                 "--no-progress", "--workers", "1"])
    assert r.returncode == 1, r.returncode  # the broken file is an error row, by design
    shutil.rmtree(coll)
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


def _psnr(a: Path, b: Path) -> float:
    x = np.asarray(Image.open(a).convert("RGB"), np.float64)
    y = np.asarray(Image.open(b).convert("RGB"), np.float64)
    mse = float(np.mean((x - y) ** 2))
    return round(99.0 if mse == 0 else 10 * np.log10(255 ** 2 / mse), 3)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--add"]:
        add(sys.argv[2:])
    else:
        main()
