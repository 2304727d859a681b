"""BD-rate on synthetic curves with known answers, and `latentarc bench` end to end on two small crops."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from latentarc.codec.rd import bd_method, bd_rate, bd_report

from .conftest import MODELS, PHOTOS

needs_shared = pytest.mark.shared("models", "photos")


@pytest.fixture
def two_photos(tmp_path, monkeypatch) -> Path:
    """A folder with the first two held-out photos; the shared weights resolved through LATENTARC_MODEL_DIR."""
    monkeypatch.setenv("LATENTARC_MODEL_DIR", str(MODELS))
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in sorted(PHOTOS.glob("*.png"))[:2]:
        shutil.copy(p, folder / p.name)
    return folder


def curve(n: int):
    rate = np.geomspace(0.1, 2.0, n)
    psnr = 30.0 + 4.0 * np.log2(rate / 0.1) + 0.3 * np.sin(np.arange(n))  # smooth, monotonic, not a pure line
    return rate, psnr


@pytest.mark.parametrize("method,n", [("cubic", 5), ("linear", 3), ("auto", 4), ("auto", 2)])
def test_bd_rate_known_answers(method, n):
    rate, psnr = curve(n)
    assert bd_rate(rate, psnr, rate, psnr, method=method) == pytest.approx(0.0, abs=1e-9)
    # b is a with every rate scaled by 0.8: b needs 20% fewer bits at equal PSNR, a needs 25% more than b
    assert bd_rate(0.8 * rate, psnr, rate, psnr, method=method) == pytest.approx(-20.0, abs=0.5)
    assert bd_rate(rate, psnr, 0.8 * rate, psnr, method=method) == pytest.approx(25.0, abs=0.5)


def test_bd_rate_shifted_psnr_and_edge_cases():
    rate, psnr = curve(6)
    # a shifted up by 1 dB on a 4 dB-per-doubling curve: about 2^(-1/4) - 1 = -15.9% (sine term aside)
    v = bd_rate(rate, psnr + 1.0, rate, psnr)
    assert -19 < v < -13
    assert bd_method(4, 4) == "cubic" and bd_method(3, 6) == "linear"
    assert bd_rate(rate[::-1], psnr[::-1], rate, psnr) == pytest.approx(0.0, abs=1e-9)  # order does not matter
    with pytest.raises(ValueError):
        bd_rate(rate, psnr, rate, psnr + 100.0)  # no overlap
    with pytest.raises(ValueError):
        bd_rate(rate[:3], psnr[:3], rate, psnr, method="cubic")  # too few points for the cubic fit


def test_bd_report_flags_saturating_cubic_fit():
    rate, psnr = curve(5)
    ok = bd_report(0.8 * rate, psnr, rate, psnr)
    assert ok["method"] == "cubic" and ok["cubic_monotone"]
    assert ok["bd_rate_pct"] == pytest.approx(-20.0, abs=0.5) and ok["linear_pct"] == pytest.approx(-20.0, abs=0.5)
    # the shape seen on real runs: PSNR saturates at the autoencoder's ceiling while the rate keeps climbing
    a = ([0.2373, 0.8534, 1.6019, 2.4019], [22.34, 26.49, 28.07, 28.31])
    b = ([0.1540, 0.8407, 1.6003, 2.4023], [15.65, 24.47, 27.70, 28.25])
    bad = bd_report(*a, *b)
    assert bad["method"] == "cubic" and not bad["cubic_monotone"]
    assert bad["linear_pct"] < 0  # a lies above b at every rate


@needs_shared
def test_bench_end_to_end(tmp_path, two_photos, capsys):
    """One codec with --compare-global and --compare-entropy: the variants run beside it, their BD-rate against the
    base is reported, the learned entropy model codes the same symbols in fewer bytes."""
    from latentarc.jobs.cli import main

    folder = two_photos
    (folder / "notes.txt").write_text("not an image")  # ignored by extension
    out = tmp_path / "bench.json"

    rc = main(["bench", str(folder), "--codec", "tae-f2", "--qualities", "30,70", "--crop", "64", "--limit", "2",
               "--compare-global", "--compare-entropy", "tae-f2-ctx:0", "--metrics", "psnr,ms-ssim",
               "--out", str(tmp_path / "rd"), "--json-out", str(out)])
    assert rc == 0
    captured = capsys.readouterr()
    assert "BD-rate of each variant against its base codec" in captured.out
    assert "tae-f2+global" in captured.out and "tae-f2@tae-f2-ctx:0" in captured.out
    assert captured.err.count("[") >= 2  # one progress line per image

    doc = json.loads(out.read_text())["rd"]
    rows = doc["rows"]
    assert {r["codec"] for r in rows} == {"tae-f2", "tae-f2+global", "tae-f2@tae-f2-ctx:0"}
    assert len(rows) == 3 * 2 * 2
    # the learned entropy model with plain rounding codes the same symbols: identical pixels, fewer bytes
    for r in rows:
        if r["codec"] == "tae-f2@tae-f2-ctx:0":
            twin = next(x for x in rows if x["codec"] == "tae-f2" and x["image"] == r["image"]
                        and x["point"] == r["point"])
            assert r["psnr"] == twin["psnr"] and r["bytes"] < twin["bytes"]
    for r in rows:
        assert (r["width"], r["height"]) == (64, 64)
        assert r["psnr"] is not None and math.isfinite(r["psnr"]) and r["psnr"] > 15
        assert r["encode_s"] > 0 and r["decode_s"] > 0 and r["lpips"] is None
    for c in ("tae-f2", "tae-f2+global"):
        for img in {r["image"] for r in rows}:
            by_q = {r["point"]: r for r in rows if r["codec"] == c and r["image"] == img}
            assert by_q["30"]["bpp"] < by_q["70"]["bpp"]
        summ = {p["point"]: p for p in doc["curves"][c]}
        assert summ["30"]["bpp"] < summ["70"]["bpp"] and summ["30"]["psnr"] > 15
    # the global-step baseline codes differently from the adaptive steps it is the baseline of
    assert [r["bytes"] for r in rows if r["codec"] == "tae-f2+global"] != [r["bytes"] for r in rows if r["codec"] == "tae-f2"]
    assert set(doc["bd_variants"]) == {"tae-f2+global", "tae-f2@tae-f2-ctx:0"}
    bd = doc["bd_variants"]["tae-f2+global"]
    assert bd["against"] == "tae-f2" and bd["psnr"]["method"] == "linear"  # two points per curve
    assert bd["psnr"]["bd_rate_pct"] is None or math.isfinite(bd["psnr"]["bd_rate_pct"])
    assert doc["bd_variants"]["tae-f2@tae-f2-ctx:0"]["psnr"]["bd_rate_pct"] < 0  # same pixels, fewer bits


@needs_shared
def test_bench_rate_control_checks(tmp_path, two_photos, capsys):
    """--targets and --floors without the RD run: the target lands within ±5%, no stream is below its floor."""
    from latentarc.jobs.cli import main

    folder = two_photos
    out = tmp_path / "rc.json"

    # 64×64 crops: the container and channel models alone are ~0.75 bpp here, so the target sits above that
    rc = main(["bench", str(folder), "--codec", "tae-f2", "--qualities", "", "--crop", "64", "--targets", "1.5",
               "--floors", "15", "--json-out", str(out)])
    assert rc == 0
    captured = capsys.readouterr()
    assert "target bpp (rate control of tae-f2)" in captured.out and "min-PSNR floors" in captured.out
    assert "mean curves" not in captured.out  # no RD run with --qualities ""
    assert main(["bench", str(folder), "--qualities", ""]) != 0  # nothing to do

    doc = json.loads(out.read_text())
    assert "rd" not in doc
    doc = doc["rate_checks"]
    trows = doc["target_rows"]
    assert len(trows) == 2 and {r["target_bpp"] for r in trows} == {1.5}
    for r in trows:
        assert abs(r["rel_error_pct"]) <= 5.0 and r["within_5pct"]
        assert r["bpp"] == pytest.approx(r["bytes"] * 8 / (64 * 64))
    (ts,) = doc["summary"]["targets"]
    assert ts["images"] == 2 and ts["outside_5pct"] == 0 and ts["max_abs_error_pct"] <= 5.0

    frows = doc["floor_rows"]
    assert len(frows) == 2
    for r in frows:
        assert r["status"] == "met" and not r["below_floor"]
        assert r["psnr"] >= 15.0 and r["margin_db"] == pytest.approx(r["psnr"] - 15.0)
    (fs,) = doc["summary"]["floors"]
    assert fs["violations"] == 0 and fs["met"] == 2 and fs["unreachable"] == 0 and fs["min_margin_db"] >= 0


def test_bench_rate_control_parsing():
    from latentarc.jobs.bench_inputs import parse_floors, parse_qualities, parse_targets

    assert parse_qualities("", allow_empty=True) == []
    with pytest.raises(ValueError):
        parse_qualities("")
    assert parse_targets("0.25, 0.5,0.25") == [0.25, 0.5]
    assert parse_targets(None) == [] and parse_floors("24,27") == [24.0, 27.0]
    for bad in ("0", "-1", "x", "nan"):
        with pytest.raises(ValueError):
            parse_targets(bad)


# ------------------------------------------------------------------------------------------ perceptual axes (rd bench)
def test_bpp_at_level_interpolates_in_log_bpp_at_the_first_crossing():
    from latentarc.jobs.rd_perceptual import bpp_at_level, distance_db, parse_metrics

    # LPIPS 0.4 → 0.1 over 0.1 → 0.4 bpp; the level 0.2 (6.99 dB) lies between 0.4 (3.98 dB) and 0.1 (10 dB)
    pts = [(0.4, 0.1), (0.1, 0.4)]
    b, why = bpp_at_level(pts, 0.2)
    t = (distance_db(0.2) - distance_db(0.4)) / (distance_db(0.1) - distance_db(0.4))
    assert why is None and b == pytest.approx(math.exp(math.log(0.1) + t * math.log(4.0)))
    assert 0.1 < b < 0.4
    assert bpp_at_level(pts, 0.05) == (None, "above") and bpp_at_level(pts, 0.5) == (None, "below")
    assert bpp_at_level([(0.1, None)], 0.2) == (None, "not measured")
    # a curve that bends back (distance rises again at the top): the smallest rate reaching the level counts
    b2, _ = bpp_at_level([(0.1, 0.4), (0.2, 0.15), (0.4, 0.3)], 0.2)
    assert 0.1 < b2 < 0.2
    assert parse_metrics("lpips, MS-SSIM") == ("psnr", "ms_ssim", "lpips") and len(parse_metrics(None)) == 4
    with pytest.raises(ValueError):
        parse_metrics("psnr,vmaf")


@needs_shared
def test_same_images_table_compares_codecs_only_where_all_reach_the_level():
    """An image one codec cannot bring to a level (or beats it at its lowest rate) drops out of every codec's
    mean at that level, so the columns compare the same images; the change is against the reference's mean."""
    from latentarc.jobs.rd_perceptual import LEVELS, common_subset, common_subset_cells, equal_quality

    rows = []
    for img, hard in (("a", 1.0), ("b", 2.0), ("c", 4.0)):
        for codec, cost in (("avif", 1.0), ("tae", 0.5)):
            for q in (0.05, 0.1, 0.2, 0.4, 0.8, 1.6):
                rows.append({"image": img, "codec": codec, "bpp": q, "lpips": min(0.9, 0.02 * hard * cost / q)})
    rows = [r for r in rows if not (r["codec"] == "tae" and r["image"] == "c" and r["bpp"] > 0.1)]  # c: tae stops
    eq = equal_quality(rows, ["tae", "avif"], ("psnr", "lpips"))
    same = common_subset(eq, "avif")
    assert list(same) == ["lpips"] and [e["level"] for e in same["lpips"]] == list(LEVELS["lpips"])
    for e, own in zip(same["lpips"], eq["tae"]["lpips"]):
        assert e["of"] == 3
        for img in ("a", "b", "c"):
            reached = all(eq[c]["lpips"][LEVELS["lpips"].index(e["level"])]["per_image"][img] is not None
                          for c in ("tae", "avif"))
            assert (img in e["images"]) == reached
        assert "c" not in e["images"] and own["bpp"] is None  # tae never reaches the levels on c
        assert e["bpp"]["tae"] == pytest.approx(sum(own["per_image"][i] for i in e["images"]) / len(e["images"]))
        assert e["vs_reference"]["avif"] == 0 and e["vs_reference"]["tae"] == pytest.approx(-0.5, abs=0.02)
        assert e["wins"] == {"tae": len(e["images"]), "avif": 0}
    head, cells = common_subset_cells(same)
    assert head[1] == "LPIPS 0.10 (n=2/3)" and cells[0][1].endswith("(-50%, 2/2)")
    assert common_subset(eq)["lpips"][0]["vs_reference"]["tae"] is None  # no reference: no change column
    assert common_subset(eq)["lpips"][0]["wins"]["tae"] is None


def test_rd_bench_perceptual_axes(tmp_path, two_photos, capsys):
    """--metrics psnr,lpips: LPIPS columns, plot, BD axis and equal-quality table, consistent with the rows; DISTS
    and MS-SSIM not measured; one DISTS point through measure()."""
    from latentarc.codec.images import read_image
    from latentarc.jobs.bench_inputs import centre_crop
    from latentarc.jobs.cli import main
    from latentarc.jobs.rd_bench import _bd_entry, build_codec, measure
    from latentarc.jobs.rd_perceptual import LEVELS

    folder = two_photos
    out = tmp_path / "rd"
    rc = main(["bench", str(folder), "--codecs", "tae-f2,avif", "--qualities", "5,60", "--crop", "64",
               "--metrics", "psnr,lpips", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "LPIPS dB = -10·log10(LPIPS)" in printed and "bpp needed at equal quality" in printed
    assert "LPIPS 0.10" in printed and "DISTS 0.10" not in printed
    assert (out / "rd_lpips.png").is_file() and not (out / "rd_dists.png").exists()
    assert not (out / "rd_msssim.png").exists()  # psnr, lpips and speed plots only
    assert (out / "index.html").read_text().count("data:image/png;base64,") == 3

    r = json.loads((out / "rd.json").read_text())
    assert r["metrics"] == ["psnr", "lpips"]
    for row in r["rows"]:
        assert 0 <= row["lpips"] < 1 and row["dists"] is None and row["ms_ssim"] is None
    for c, pts in r["curves"].items():
        assert all(p["lpips"] is not None and p["dists"] is None for p in pts)
    assert set(r["bd"]["tae-f2"]) == {"psnr", "ms_ssim_db", "lpips_db", "dists_db"}
    assert r["bd"]["tae-f2"]["dists_db"]["bd_rate_pct"] is None
    self_bd = _bd_entry(r["curves"]["tae-f2"], r["curves"]["tae-f2"])
    assert self_bd["lpips_db"]["bd_rate_pct"] == pytest.approx(0, abs=1e-9)
    assert set(r["bd_pairs"]["tae-f2"]["avif"]) == {"psnr", "ms_ssim_db", "lpips_db", "dists_db"}

    # every equal-quality figure agrees with the rows it came from
    for c in ("tae-f2", "avif"):
        eq = r["equal_quality"][c]
        assert set(eq) == {"lpips"} and [e["level"] for e in eq["lpips"]] == list(LEVELS["lpips"])
        for e in eq["lpips"]:
            assert e["images"] == 2
            for img, b in e["per_image"].items():
                pts = sorted((x["bpp"], x["lpips"]) for x in r["rows"] if x["codec"] == c and x["image"] == img)
                if b is None:  # not reached: every point worse than the level, or the cheapest already better
                    assert all(d > e["level"] for _, d in pts) or pts[0][1] <= e["level"]
                    continue
                assert pts[0][0] <= b <= pts[-1][0]
                i = next(k for k, (_, d) in enumerate(pts) if d <= e["level"])  # the bracketing pair
                assert i > 0 and pts[i - 1][0] <= b <= pts[i][0]
            got = [b for b in e["per_image"].values() if b is not None]
            assert e["reached"] == len(got)
            assert e["bpp"] == (pytest.approx(sum(got) / 2) if len(got) == 2 else None)

    same = r["equal_quality_same_images"]["lpips"]  # every codec's mean on the images all of them reach
    for i, e in enumerate(same):
        per = [r["equal_quality"][c]["lpips"][i]["per_image"] for c in ("tae-f2", "avif")]
        assert e["images"] == [img for img in per[0] if all(p[img] is not None for p in per)] and e["of"] == 2
        assert e["vs_reference"]["avif"] in (0, None)

    # one DISTS point: measured alone, in (0, 1)
    pic = centre_crop(read_image(sorted(folder.glob("*.png"))[0].read_bytes()), 48)
    m = measure(build_codec("avif"), pic, 30.0, metrics=("psnr", "dists"))
    assert 0 < m["dists"] < 1 and m["lpips"] is None and m["ms_ssim"] is None


@needs_shared
def test_rd_bench_resumes_and_extends_a_run(tmp_path, two_photos):
    """rows.jsonl is the run's record: a second run with another codec measures only that codec, a line cut
    short by a kill is measured again, two worker processes give the same figures, and a codec asked for at
    other points in the same folder is refused."""
    import io

    from latentarc.jobs.rd_bench import PROGRESS_FILE, run_rd_bench

    out = tmp_path / "rd"
    first = run_rd_bench(two_photos, "jpeg", [20, "0.5bpp", 80], out, crop=64, metrics="psnr", workers=2)
    lines = (out / PROGRESS_FILE).read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["config"]["crop"] == 64
    assert [r["point"] for r in first["rows"][:3]] == ["20", "0.5bpp", "80"]
    assert first["rows"][1]["target_bpp"] == 0.5 and first["rows"][1]["quality"] is None
    # cut the last line short, as a kill would: that image is measured again
    (out / PROGRESS_FILE).write_text("\n".join(lines[:-1] + [lines[-1][:40]]) + "\n")
    # a run's figures so far, measuring nothing: only images every codec has measured count
    partial = run_rd_bench(two_photos, "jpeg", [20, "0.5bpp", 80], out, crop=64, metrics="psnr", summarise_only=True)
    assert len(partial["images"]) == 1 and partial["images_pending"] == 1 and len(partial["rows"]) == 3
    with pytest.raises(ValueError, match="no image measured by every codec"):
        run_rd_bench(two_photos, "jpeg,avif", [20, "0.5bpp", 80], out, crop=64, metrics="psnr", summarise_only=True)
    log = io.StringIO()
    second = run_rd_bench(two_photos, "jpeg,avif", [20, "0.5bpp", 80], out, crop=64, metrics="psnr", log=log)
    printed = log.getvalue()
    assert printed.count("jpeg") == 1 and printed.count("avif") == 2  # one jpeg redone, avif on both images
    jpeg = lambda r: [(x["image"], x["point"], x["bytes"], x["psnr"]) for x in r["rows"] if x["codec"] == "jpeg"]  # noqa: E731
    assert jpeg(second) == jpeg(first)  # same figures in one process as in two
    assert {x["codec"] for x in second["rows"]} == {"jpeg", "avif"} and len(second["rows"]) == 12
    with pytest.raises(ValueError, match="measured at points"):
        run_rd_bench(two_photos, "jpeg", [30], out, crop=64, metrics="psnr")
    with pytest.raises(ValueError, match="other settings"):
        run_rd_bench(two_photos, "jpeg", [20, "0.5bpp", 80], out, crop=48, metrics="psnr")
    # a model folder that is not there: the error names it before any worker starts
    from latentarc.codec.errors import ModelError

    with pytest.raises(ModelError, match="not a train-codec folder"):
        run_rd_bench(two_photos, f"tae-f2-ft:{tmp_path / 'missing'}", [20], tmp_path / "rd2", crop=64,
                     metrics="psnr", workers=2)
