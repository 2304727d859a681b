"""``latentarc bench IMAGES``: the product's one benchmark — rate–distortion on every quality axis, speed and
bpp at equal quality of the codecs asked for (:mod:`.rd_bench`), and, with ``--targets`` / ``--floors``, the
rate-control checks of the first of them (:mod:`.rate_checks`).

Which codecs: ``--codecs LIST`` (NAME, NAME@ENTROPY[:RDOQ], NAME+search=N, NAME+global), else ``--codec NAME``
alone, else ``rd_bench.DEFAULT_CODECS`` (the default codec, tae-f2, avif, jxl, webp and jpeg). ``--compare-global``
adds the first codec with one global quantization step, ``--compare-entropy X`` the first codec with entropy model
X; each variant's BD-rate against its base is reported. ``--qualities ""`` skips the RD run (the checks only).
"""

from __future__ import annotations

import json
from pathlib import Path

from .bench_inputs import json_safe, list_images, parse_floors, parse_targets
from .rd_bench import DEFAULT_CODECS, build_codec, format_rd, parse_points, run_rd_bench
from .rate_checks import format_rate_checks, run_rate_checks


def bench_codecs(codecs: str | None, codec: str | None, compare_global: bool = False,
                 compare_entropy: str | None = None) -> list[str]:
    """The codec specs one ``bench`` run measures, the first one first."""
    if codecs and codec:
        raise ValueError("give --codecs LIST or --codec NAME, not both")
    names = [c.strip() for c in codecs.split(",") if c.strip()] if codecs else [codec] if codec else list(DEFAULT_CODECS)
    if compare_global:
        names.append(f"{names[0]}+global")
    if compare_entropy:
        names.append(f"{names[0]}@{compare_entropy}")
    return list(dict.fromkeys(names))


def run_bench(a) -> int:
    targets, floors = parse_targets(a.targets), parse_floors(a.floors)
    names = bench_codecs(a.codecs, a.codec, a.compare_global, a.compare_entropy)
    skip_rd = a.qualities is not None and not a.qualities.strip()
    if skip_rd and not (targets or floors):
        raise ValueError('--qualities "" skips the RD run: give --targets or --floors')
    doc: dict = {}
    if not skip_rd:
        out = a.out or "rd-bench"
        r = run_rd_bench(a.images, names, None if a.qualities is None else parse_points(a.qualities), out,
                         crop=a.crop, limit=a.limit, weights=a.weights, device=a.device, metrics=a.metrics,
                         workers=a.workers, summarise_only=a.summarise_only)
        if r["images_pending"]:
            print(f"{len(r['images'])} images measured by every codec, {r['images_pending']} pending")
        print(format_rd(r))
        print(f"\nwrote {out}/rd.json, " + ", ".join(Path(f).name for k, f in r["files"].items() if k != "json"))
        doc["rd"] = {k: v for k, v in r.items() if k != "files"}
    if targets or floors:
        codec = build_codec(names[0], weights=a.weights, device=a.device)
        checks = run_rate_checks(codec, names[0], list_images(a.images, a.limit), a.crop, targets, floors)
        print()
        print(format_rate_checks(checks))
        doc["rate_checks"] = checks
    if a.json_out:
        path = Path(a.json_out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(json_safe(doc), indent=2, allow_nan=False) + "\n")
        print(f"\nwrote {path}")
    return 0
