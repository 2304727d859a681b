"""``latentarc bench-soak``: one long compress run over many small images, watched over time.

It synthesises N small images (crops of the photos in a folder, each at its own seeded offset, so no two are
alike), runs one compress job over them on a local Ray, and samples every few seconds:
- the images archived so far (the rows of the Parquet parts the sink has written);
- the driver's RSS, each model actor's RSS, and the other Ray processes' total.

It writes ``soak.json`` and ``soak.png`` (images/s and RSS over time) and says whether memory grew. Growth is the
median RSS over the last fifth of the run minus the median over the second fifth (the first fifth is warm-up).
Process memory comes from ``/proc`` (Linux, where Ray clusters run); every Ray process of a local cluster
descends from the driver.

    latentarc bench-soak PHOTOS --images 10000 --size 64 --out soak/
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .bench_inputs import list_images

PAGE = os.sysconf("SC_PAGE_SIZE")
ACTOR_TITLE = "EncodeActor"  # the model actors' process title: ray::MapWorker(MapBatches(EncodeActor))…


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("images", help="folder of photos to crop the small images from")
    ap.add_argument("--images", dest="count", type=int, default=10_000, help="how many small images (default 10000)")
    ap.add_argument("--size", type=int, default=64, help="their side in pixels (default 64)")
    ap.add_argument("--out", required=True, help="folder for the images, the table, soak.json and soak.png")
    ap.add_argument("--quality", type=float, default=50)
    ap.add_argument("--interval", type=float, default=2.0, help="seconds between samples (default 2)")
    ap.add_argument("--workers", type=int, help="model actors (default: one per CPU)")
    ap.add_argument("--rows-per-part", type=int, default=32, help="rows per Parquet part (the progress granularity)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--weights")


def synthesise(photos: list[Path], folder: Path, count: int, size: int, seed: int) -> list[str]:
    """``count`` crops of ``size``² px from ``photos`` (consecutive runs of images per photo, seeded offsets) as
    PNGs in ``folder``, 1,000 per subfolder. Existing files are kept, so a second run reuses them."""
    from PIL import Image

    rng = random.Random(seed)
    keys, opened = [], {}
    for i in range(count):
        key = f"{i // 1000:03d}/{i % 1000:03d}.png"
        keys.append(key)
        path = folder / key
        src = photos[i * len(photos) // count]  # each photo opened once
        x, y = rng.random(), rng.random()  # drawn for every image, so a resumed synthesis draws the same offsets
        if path.exists():
            continue
        if src not in opened:
            opened.clear()  # one photo open at a time
            opened[src] = Image.open(src).convert("RGB")
        im = opened[src]
        left, top = int(x * (im.width - size)), int(y * (im.height - size))
        path.parent.mkdir(parents=True, exist_ok=True)
        im.crop((left, top, left + size, top + size)).save(path)
    return keys


def descendants(root: int) -> list[int]:
    """The pids of every process below ``root`` (children, theirs, …), from ``/proc/*/stat``."""
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])  # the name may hold spaces: split after ")"
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    found, todo = [], list(kids.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(kids.get(pid, []))
    return found


def _rss_and_title(pid: int) -> tuple[int, str] | None:
    try:
        with open(f"/proc/{pid}/statm") as f:
            rss = int(f.read().split()[1]) * PAGE
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            title = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except (OSError, IndexError, ValueError):
        return None  # gone between the listing and the read
    return rss, title


def memory_sample(root: int) -> dict:
    """RSS in bytes of ``root`` (the driver), of each model actor (by pid) and of all other descendants."""
    actors, others = {}, 0
    for pid in descendants(root):
        got = _rss_and_title(pid)
        if got is None:
            continue
        rss, title = got
        if title.startswith("ray::") and ACTOR_TITLE in title:
            actors[pid] = rss
        else:
            others += rss
    driver = _rss_and_title(root)
    return {"driver": driver[0] if driver else 0, "actors": actors, "others": others}


@dataclass
class Progress:
    """Rows and errors in the parts written so far (uncommitted parts included: that is the job's progress)."""

    table: Path
    counted: dict[str, int] = field(default_factory=dict)

    def done(self) -> int:
        import pyarrow.parquet as pq

        for sub in ("data", "_errors"):
            folder = self.table / sub
            if not folder.is_dir():
                continue
            for p in folder.glob("*.parquet"):
                if str(p) not in self.counted:
                    try:
                        self.counted[str(p)] = pq.read_metadata(p).num_rows
                    except (OSError, ValueError):  # pyarrow's ArrowInvalid is a ValueError
                        continue  # still being written: counted at a later sample
        return sum(self.counted.values())


class Sampler(threading.Thread):
    def __init__(self, table: Path, interval: float):
        super().__init__(daemon=True)
        self.progress, self.interval = Progress(table), interval
        self.samples: list[dict] = []
        self.t0 = time.perf_counter()
        self._halt = threading.Event()

    def sample(self) -> None:
        mem = memory_sample(os.getpid())
        self.samples.append({"t": time.perf_counter() - self.t0, "done": self.progress.done(), **mem})

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.sample()


def rates(samples: list[dict], window: float) -> list[tuple[float, float]]:
    """(time, images/s over the preceding ``window`` seconds) at each sample."""
    out, j = [], 0
    for s in samples:
        while samples[j]["t"] < s["t"] - window:
            j += 1
        dt = s["t"] - samples[j]["t"]
        if dt > 0:
            out.append((s["t"], (s["done"] - samples[j]["done"]) / dt))
    return out


def growth(series: list[tuple[float, float]], t_end: float) -> dict | None:
    """Median of the last fifth minus that of the second fifth, in MB and % (None: too few samples)."""
    early = [v for t, v in series if 0.2 * t_end <= t < 0.4 * t_end]
    late = [v for t, v in series if t >= 0.8 * t_end]
    if not early or not late:
        return None
    a, b = statistics.median(early), statistics.median(late)
    return {"early_mb": a / 2**20, "late_mb": b / 2**20, "growth_mb": (b - a) / 2**20,
            "growth_pct": 100 * (b - a) / a if a else None}


def summarise(samples: list[dict], report: dict, images: int, seconds: float) -> dict:
    t_end = samples[-1]["t"] if samples else 0.0
    per_actor: dict[int, list[tuple[float, float]]] = {}
    for s in samples:
        for pid, rss in s["actors"].items():
            per_actor.setdefault(int(pid), []).append((s["t"], rss))
    window = max(30.0, t_end / 20)
    r = rates(samples, window)
    steady = [v for t, v in r if 0.2 * t_end <= t <= 0.95 * t_end]
    return {
        "images": images, "rows": report.get("rows"), "errors": report.get("errors"), "seconds": seconds,
        "images_per_s": images / seconds if seconds else None,
        "rate_window_s": window,
        "rate_steady_min": min(steady) if steady else None, "rate_steady_max": max(steady) if steady else None,
        "rate_first_fifth": statistics.median([v for t, v in r if t < 0.2 * t_end] or [0.0]),
        "rate_last_fifth": statistics.median([v for t, v in r if t >= 0.8 * t_end] or [0.0]),
        "driver": growth([(s["t"], s["driver"]) for s in samples], t_end),
        "others": growth([(s["t"], s["others"]) for s in samples], t_end),
        # actors that lived through the run (a restarted actor is a new process with its own series)
        "actors": {str(pid): growth(ser, t_end) for pid, ser in per_actor.items()
                   if ser[0][0] <= 0.2 * t_end and ser[-1][0] >= 0.8 * t_end},
        "actor_processes": len(per_actor),
    }


def plot(samples: list[dict], summary: dict, out: Path) -> Path:
    from latentarc.pipeline.report import pyplot

    plt = pyplot()
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True)
    r = rates(samples, summary["rate_window_s"])
    a1.plot([t / 60 for t, _ in r], [v for _, v in r], color="#1f77b4")
    a1.set_ylabel(f"images/s ({summary['rate_window_s']:.0f} s window)")
    a1.set_title(f"soak: {summary['images']} images of {summary.get('size', '?')} px, "
                 f"{summary['images_per_s']:.1f} images/s overall")
    a1.grid(True, alpha=0.3)
    a1.set_ylim(bottom=0)
    mb = 2**20
    a2.plot([s["t"] / 60 for s in samples], [s["driver"] / mb for s in samples], label="driver", color="#d62728")
    pids = sorted({int(p) for s in samples for p in s["actors"]})
    for i, pid in enumerate(pids):
        pts = [(s["t"] / 60, s["actors"][pid] / mb) for s in samples if pid in s["actors"]]
        a2.plot([t for t, _ in pts], [v for _, v in pts], color="#2ca02c", alpha=0.9,
                label="model actors" if i == 0 else None)
    a2.plot([s["t"] / 60 for s in samples], [s["others"] / mb for s in samples], label="other Ray processes",
            color="#7f7f7f")
    a2.set_ylabel("RSS (MB)")
    a2.set_xlabel("minutes")
    a2.grid(True, alpha=0.3)
    a2.set_ylim(bottom=0)
    a2.legend(loc="center right")
    path = out / "soak.png"
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def run(a: argparse.Namespace) -> int:
    from latentarc.codec.spec import CodecSpec
    from latentarc.pipeline.compress import CompressOptions, run_compress
    from latentarc.pipeline.runtime import init_ray

    out = Path(a.out)
    photos = list_images(Path(a.images))
    if not photos:
        raise SystemExit(f"bench-soak: no images in {a.images}")
    t = time.perf_counter()
    keys = synthesise(photos, out / "src", a.count, a.size, a.seed)
    print(f"bench-soak: {len(keys)} images of {a.size}×{a.size} px in {out / 'src'} "
          f"({time.perf_counter() - t:.0f} s)", flush=True)
    table = out / "table"
    if table.exists():
        raise SystemExit(f"bench-soak: {table} exists; remove it or choose another --out")
    init_ray(None, progress=False)
    import ray

    ray.get(ray.remote(lambda: 0).remote())  # cluster up before the clock starts
    weights = a.weights or os.environ.get("LATENTARC_MODEL_DIR")
    opts = CompressOptions(CodecSpec(weights=weights), quality=a.quality, workers=a.workers,
                           rows_per_part=a.rows_per_part)
    sampler = Sampler(table, a.interval)
    sampler.sample()
    sampler.start()
    t0 = time.perf_counter()
    report = run_compress(str(out / "src"), str(table), opts)
    seconds = time.perf_counter() - t0
    sampler.stop()
    summary = summarise(sampler.samples, report, len(keys), seconds)
    summary.update(size=a.size, quality=a.quality, cpus=ray.cluster_resources().get("CPU"))
    (out / "soak.json").write_text(json.dumps({"summary": summary, "samples": sampler.samples}, indent=1))
    path = plot(sampler.samples, summary, out)
    for line in summary_lines(summary):
        print(line)
    print(f"wrote {out / 'soak.json'} and {path}")
    return 0 if report.get("errors") == 0 and report.get("rows") == len(keys) else 1


def summary_lines(s: dict) -> list[str]:
    def mem(g):
        if g is None:
            return "too short to tell"
        return f"{g['early_mb']:.0f} → {g['late_mb']:.0f} MB ({g['growth_mb']:+.0f} MB)"

    lines = [
        f"images    : {s['images']} → {s['rows']} rows, {s['errors']} errors in {s['seconds']:.0f} s "
        f"({s['images_per_s']:.2f} images/s)",
        f"images/s  : first fifth {s['rate_first_fifth']:.2f}, last fifth {s['rate_last_fifth']:.2f}; "
        f"steady range {s['rate_steady_min'] or 0:.2f}–{s['rate_steady_max'] or 0:.2f} ({s['rate_window_s']:.0f} s windows)",
        f"driver RSS: {mem(s['driver'])}  (second fifth → last fifth, medians)",
    ]
    for pid, g in s["actors"].items():
        lines.append(f"actor {pid}: {mem(g)}")
    lines.append(f"other Ray : {mem(s['others'])}; {s['actor_processes']} actor processes in all")
    return lines
