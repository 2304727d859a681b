"""``latentarc bench-speed``: the neural codec's encode and decode speed, variant against variant, in one run.

A variant is a source tree — this one, or ``--baseline TREE`` (e.g. ``git worktree add /tmp/old <rev>``) — and
codec options for this tree's ``load_codec`` (``--variant NAME:KEY=VALUE,…``). Each variant runs in its own worker
process (``jobs/speed_probe.py``, ``--threads`` torch threads, default one), and the workers take turns: every
variant codes image 1 before any codes image 2, and only one works at a time, so a busy machine's load falls on
all of them alike. The parent scores every decode (PSNR and LPIPS against the original, one reference per
image) so quality is compared with the same code whatever the tree.

Reported per variant and entropy model: encode and decode MP/s per core (megapixels ÷ process CPU seconds) and
wall MP/s, where the time went (``speed_probe.PARTS``), bpp, PSNR, LPIPS, peak RSS; and against the first
variant (the baseline when given): the speed-up each way and the mean per-image change of PSNR, LPIPS and bpp.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .bench_inputs import list_images
from .speed_probe import OWN_ENTROPY

PROBE = Path(__file__).with_name("speed_probe.py")


@dataclass(frozen=True)
class Variant:
    """``tree``: a latentarc source tree to import instead of this one (None: this one); ``options``: keyword
    arguments of ``load_codec`` (strings as given, numbers and booleans parsed)."""

    name: str
    tree: Path | None = None
    options: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> "Variant":
        """``NAME:KEY=VALUE,KEY=VALUE`` (options of this tree's codec)."""
        name, _, rest = text.partition(":")
        if not name or not rest:
            raise ValueError(f"variant {text!r}: expected NAME:KEY=VALUE[,KEY=VALUE…]")
        options = {}
        for item in rest.split(","):
            key, eq, value = item.partition("=")
            if not eq:
                raise ValueError(f"variant {text!r}: {item!r} is not KEY=VALUE")
            options[key.strip()] = _value(value.strip())
        return cls(name, None, options)


def _value(text: str):
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


class Worker:
    """One variant's probe process; :meth:`ask` sends a request and waits for its answer."""

    def __init__(self, variant: Variant, threads: int, shim_root: Path):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        if variant.tree is not None:
            if not (variant.tree / "codec" / "api.py").is_file():
                raise ValueError(f"{variant.tree} is not a latentarc source tree (no codec/api.py)")
            shim = shim_root / variant.name
            shim.mkdir(parents=True)
            (shim / "latentarc").symlink_to(variant.tree.resolve(), target_is_directory=True)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(shim), env.get("PYTHONPATH")) if p)
        self.variant = variant
        self.proc = subprocess.Popen([sys.executable, str(PROBE), "--threads", str(threads)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)

    def ask(self, request: dict) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"variant {self.variant.name}: its worker exited ({self.proc.wait()})")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def run(images: list[Path], variants: list[Variant], *, entropies: list[str], quality: float, threads: int,
        out: Path, progress=print) -> dict:
    from latentarc.codec.images import colour_planes, read_image
    from latentarc.codec.metrics import LPIPS_NET, Reference, psnr

    if len({v.name for v in variants}) != len(variants):
        raise ValueError("variant names must differ")
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp, open(out / "rows.jsonl", "w") as log:
        workers = [Worker(v, threads, Path(tmp) / "shims") for v in variants]
        try:
            for i, path in enumerate(images, 1):
                pic = read_image(path.read_bytes())
                original = pic.reference()
                ref = Reference(original)
                for entropy in entropies:
                    for w in workers:
                        npy = Path(tmp) / "decoded.npy"
                        ans = w.ask({"image": str(path), "entropy": entropy, "quality": quality,
                                     "options": w.variant.options, "out": str(npy)})
                        planes = colour_planes(np.load(npy), pic.mode)
                        row = dict(ans, image=path.name, variant=w.variant.name, entropy=entropy,
                                   bpp=ans["bytes"] * 8 / (pic.width * pic.height),
                                   psnr=psnr(original, planes), lpips=ref.distance(LPIPS_NET, planes))
                        rows.append(row)
                        log.write(json.dumps(row) + "\n")
                        log.flush()
                progress(f"[{i}/{len(images)}] {path.name}: " + ", ".join(
                    f"{r['variant']}/{r['entropy']} enc {r['encode_s']:.1f} s dec {r['decode_s']:.1f} s"
                    for r in rows if r["image"] == path.name))
        finally:
            for w in workers:
                w.close()
    result = summarise(rows, [v.name for v in variants], entropies)
    result.update(quality=quality, threads=threads, images=[p.name for p in images],
                  variants={v.name: {"tree": str(v.tree) if v.tree else None, "options": v.options}
                            for v in variants})
    (out / "speed.json").write_text(json.dumps(result, indent=1))
    return result


def summarise(rows: list[dict], variants: list[str], entropies: list[str]) -> dict:
    """Per (variant, entropy model): speeds, parts, quality; and each variant against the first."""
    table: dict[str, dict] = {}
    for entropy in entropies:
        by = {v: [r for r in rows if r["variant"] == v and r["entropy"] == entropy] for v in variants}
        base = {r["image"]: r for r in by[variants[0]]}
        for v, rs in by.items():
            if not rs:
                continue
            mp = sum(r["megapixels"] for r in rs)
            s = {"images": len(rs), "megapixels": mp}
            for side in ("encode", "decode"):
                wall, cpu = sum(r[f"{side}_s"] for r in rs), sum(r[f"{side}_cpu_s"] for r in rs)
                s[f"{side}_mp_s"], s[f"{side}_mp_s_per_core"] = mp / wall, mp / cpu
                s[f"{side}_s_per_mp"] = wall / mp
                parts = rs[0][f"{side}_parts"].keys()
                s[f"{side}_parts_s_per_mp"] = {k: sum(r[f"{side}_parts"][k] for r in rs) / mp for k in parts}
            for k in ("bpp", "psnr", "lpips"):
                s[k] = float(np.mean([r[k] for r in rs]))
            s["peak_rss_mb"] = max(r["peak_rss_mb"] for r in rs)
            s["device"] = rs[0]["device"]
            paired = [(r, base[r["image"]]) for r in rs if r["image"] in base]
            if v != variants[0] and paired:
                s["against"] = variants[0]
                for side in ("encode", "decode"):
                    s[f"{side}_speedup_per_core"] = (sum(b[f"{side}_cpu_s"] for _, b in paired)
                                                     / sum(r[f"{side}_cpu_s"] for r, _ in paired))
                s["d_psnr"] = float(np.mean([r["psnr"] - b["psnr"] for r, b in paired]))
                s["d_lpips"] = float(np.mean([r["lpips"] - b["lpips"] for r, b in paired]))
                s["max_abs_d_psnr"] = float(max(abs(r["psnr"] - b["psnr"]) for r, b in paired))
                s["max_abs_d_lpips"] = float(max(abs(r["lpips"] - b["lpips"]) for r, b in paired))
                s["d_bpp_pct"] = float(100 * (sum(r["bpp"] for r, _ in paired) / sum(b["bpp"] for _, b in paired) - 1))
            table[f"{v}/{entropy}"] = s
    return {"summary": table}


def format_summary(result: dict) -> str:
    lines = [f"bench-speed: quality {result['quality']}, {result['threads']} torch thread(s) per worker, "
             f"{len(result['images'])} image(s); MP/s per core = megapixels / process CPU s",
             f"{'variant/entropy':28} {'enc MP/s/core':>13} {'dec MP/s/core':>13} {'enc MP/s':>8} {'dec MP/s':>8} "
             f"{'bpp':>6} {'PSNR':>7} {'LPIPS':>6} {'RSS MB':>7}  vs first: enc×  dec×   ΔPSNR   ΔLPIPS  Δbpp%"]
    for key, s in result["summary"].items():
        line = (f"{key:28} {s['encode_mp_s_per_core']:13.3f} {s['decode_mp_s_per_core']:13.3f} "
                f"{s['encode_mp_s']:8.3f} {s['decode_mp_s']:8.3f} {s['bpp']:6.3f} "
                f"{s['psnr']:7.3f} {s['lpips']:6.4f} {s['peak_rss_mb']:7.0f}")
        if "against" in s:
            line += (f"  {s['encode_speedup_per_core']:9.2f} {s['decode_speedup_per_core']:5.2f} {s['d_psnr']:+7.3f} "
                     f"{s['d_lpips']:+8.4f} {s['d_bpp_pct']:+6.2f}")
        lines.append(line)
    devices = {s["device"] for s in result["summary"].values()}
    lines.append("devices: all on the CPU" if devices == {"cpu"} else
                 "devices: " + ", ".join(f"{k} {s['device']}" for k, s in result["summary"].items()))
    lines.append("where the time went (s/MP, wall):")
    for key, s in result["summary"].items():
        for side in ("encode", "decode"):
            parts = ", ".join(f"{k} {v:.2f}" for k, v in s[f"{side}_parts_s_per_mp"].items())
            lines.append(f"  {key:28} {side}: {s[f'{side}_s_per_mp']:.2f} = {parts}")
    return "\n".join(lines)


def add_arguments(p) -> None:
    p.add_argument("images", help="folder of images")
    p.add_argument("--out", required=True, help="folder for rows.jsonl and speed.json")
    p.add_argument("--limit", type=int, help="only the first N images (name order)")
    p.add_argument("--entropy", default=OWN_ENTROPY,
                   help=f"entropy models, comma-separated, e.g. per-channel,tae-f2-ctx (default {OWN_ENTROPY}: each "
                        "variant's model's own — with --baseline, one tree's default codec against the other's)")
    p.add_argument("--quality", type=float, default=50)
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1: per-core figures)")
    p.add_argument("--baseline", metavar="TREE", help="a latentarc source tree to compare against, run first "
                                                      "(e.g. git worktree add /tmp/old <rev>)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE,…",
                   help="also this tree with these load_codec options (repeatable)")


def run_speed_bench(a) -> int:
    files = list_images(a.images, a.limit)
    variants = ([Variant("baseline", Path(a.baseline))] if a.baseline else []) + [Variant("new")]
    variants += [Variant.parse(t) for t in a.variant]
    result = run(files, variants, entropies=[e.strip() for e in a.entropy.split(",") if e.strip()],
                 quality=a.quality, threads=a.threads, out=Path(a.out), progress=lambda m: print(m, flush=True))
    print(format_summary(result))
    return 0
