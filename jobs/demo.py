"""``latentarc demo``: the archive job end to end on a small generated collection, on the embedded default
(a local folder and a local Ray).

It builds a sample collection (generated PNGs in two folders, a JPEG, and one damaged file so the errors
table has something to show), then runs the same verbs a user would — ``compress``, ``restore``, ``report`` —
printing each command before it runs. The damaged file is expected to end in the errors table, so the
compress step's exit code 1 ("something was recorded as an error") is the demo's success, not its failure.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable

from .sample import sample_image

#: the one input the demo expects in the errors table
BROKEN_KEY = "inbox/broken.jpg"


def build_collection(root: Path) -> list[str]:
    """Write the sample collection under ``root``; return its keys."""
    if root.exists():
        shutil.rmtree(root)
    (root / "2024" / "05").mkdir(parents=True)
    (root / "inbox").mkdir()
    keys = []
    for i, (w, h) in enumerate(((384, 288), (448, 336), (288, 384))):
        key = f"2024/05/sample-{i}.png"
        sample_image(w, h, seed=7 + i).save(root / key)
        keys.append(key)
    sample_image(480, 320, seed=42).save(root / "inbox" / "camera.jpg", quality=92)
    keys.append("inbox/camera.jpg")
    # a JPEG cut off after its first kilobyte: an upload that never finished
    (root / BROKEN_KEY).write_bytes((root / "inbox" / "camera.jpg").read_bytes()[:1024])
    keys.append(BROKEN_KEY)
    return keys


def run_demo(out: Path, run: Callable[[list[str]], int], weights: str | None = None) -> int:
    """Run the demo under ``out`` with ``run`` as the CLI entry point; returns the demo's exit code."""
    from .exit_codes import EXIT_OK, EXIT_PARTIAL

    t0 = time.perf_counter()
    collection, table, restored = out / "collection", out / "table", out / "restored"
    html = out / "report.html"
    keys = build_collection(collection)
    for folder in (table, restored):
        if folder.exists():
            shutil.rmtree(folder)
    print(f"sample collection: {len(keys)} files under {collection} (one of them, {BROKEN_KEY}, is damaged)\n")
    extra = ["--weights", weights] if weights else []
    steps = [
        (["compress", str(collection), str(table), "--quality", "60", "--no-progress", *extra], EXIT_PARTIAL),
        (["restore", str(table), str(restored), "--no-progress", *extra], EXIT_OK),
        (["report", str(table), "--html", str(html)], EXIT_OK),
    ]
    for argv, expected in steps:
        print("$ latentarc " + " ".join(argv), flush=True)
        rc = run(argv)
        print(flush=True)
        if rc != expected:
            print(f"demo: `latentarc {argv[0]}` exited {rc}, expected {expected}")
            return rc or EXIT_PARTIAL
    restored_files = sorted(p.relative_to(restored).as_posix() for p in restored.rglob("*") if p.is_file())
    print(f"restored {len(restored_files)} files under {restored}: {', '.join(restored_files)}")
    print(f"the damaged file {BROKEN_KEY} is in the errors table ({table / '_errors'}), as it should be")
    print(f"HTML report: {html}")
    print(f"demo finished in {time.perf_counter() - t0:.0f} s")
    return EXIT_OK
