"""Draws the figures of docs/results.md from results.json (the recorded measurements):
``python docs/figures/plot_results.py`` rewrites the PNGs beside it."""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
R = json.loads((HERE / "results.json").read_text())


def rd() -> None:
    d = R["rd_full_size"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for name, c in d["codecs"].items():
        ax.plot(c["bpp"], c["psnr"], "o-", label=name)
    ax.set(xlabel="bits per pixel", ylabel="PSNR (dB)",
           title="tae-f2 on 9 held-out photos, full size (qualities 10–70)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(HERE / "rd-tae-f2.png")


def bd() -> None:
    d = R["bd_rate_psnr"]
    fig, ax = plt.subplots(figsize=(9, 3.6), dpi=110)
    names = list(d)
    vals = [d[n] for n in names]
    ax.barh(names, vals, color=["tab:green" if v < 0 else "tab:red" for v in vals])
    for y, v in enumerate(vals):
        ax.text(max(v, 0) + 4, y, f"{v:+.1f}%", va="center", ha="left")
    ax.axvline(0, color="k", lw=0.8)
    ax.set(xlabel="BD-rate on PSNR (%; negative = fewer bits at equal PSNR)")
    ax.set_xlim(min(vals) - 10, max(vals) * 1.25)
    fig.tight_layout()
    fig.savefig(HERE / "bd-rate.png")


def refine() -> None:
    d = R["refinement_crops_384"]
    q = d["qualities"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(8.4, 3.4), dpi=110)
    w = 0.27
    for i, (name, v) in enumerate(d["delta_psnr_db"].items()):
        a.bar([x + (i - 1) * w for x in range(len(q))], v, w, label=name)
    a.axhline(0, color="k", lw=0.8)
    a.set(xticks=range(len(q)), xticklabels=[f"q{x}" for x in q], ylabel="ΔPSNR against none (dB)")
    a.legend(fontsize=7)
    for name, v in d["sharpness"].items():
        b.plot([f"q{x}" for x in q], v, "o-", label=name)
    b.axhline(1, color="k", lw=0.8, ls="--")
    b.set(ylabel="sharpness (1 = as the original)")
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(HERE / "refinement.png")


if __name__ == "__main__":
    rd()
    bd()
    refine()
