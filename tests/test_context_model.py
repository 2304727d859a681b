"""The learned context entropy model: integer tables, exact integer network, coding, and codec integration."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import torch

from latentarc.codec import context_model as cm
from latentarc.codec import laplace_tables as lt
from latentarc.codec.errors import CorruptStream, UnsupportedVersion
from latentarc.codec.latent_coding import coder
from latentarc.codec.quantize import centred, choose_params, quantize
from latentarc.codec.weights import WEIGHTS_DIR

from .conftest import MODELS, PHOTOS, TRAIN, photo_crop

pytestmark = pytest.mark.shared("models", "photos")

HELD_OUT = 4  # 005.png: held out from the model's training (jobs/research/train_entropy.py)

#: pins the table construction (integer arithmetic only): any change here breaks every stream
GOLDEN_TABLE_HASH = "b1009e57cb0fe310"


def test_tables_are_pinned_and_valid():
    assert lt.table_hash() == GOLDEN_TABLE_HASH
    for j in (0, 23, 24, 60, lt.SCALES - 1):
        for f in range(lt.FRAC_STEPS):
            fr = lt.frequencies(j, f)
            assert fr.sum() == lt.TOTAL and fr.min() >= 1 and fr.size == 2 * lt.support(j) + 3


@pytest.mark.parametrize("j,f", [(8, 0), (24, 1), (40, 2), (70, 3)])
def test_tables_match_the_discrete_laplacian(j, f):
    """Integer tables vs the float law they stand for: KL divergence below 1e-4 bits per symbol."""
    fr = lt.frequencies(j, f)
    big, b, d = lt.support(j), lt.scale_of(j), f / lt.FRAC_STEPS
    th = math.exp(-1 / b)
    r = np.arange(-big, big + 1)
    p = th ** np.abs(r - d) * (1 - th) / (th**d + th ** (1 - d))
    q = fr[1:-1] / lt.TOTAL
    assert float((p * np.log2(p / q)).sum()) < 1e-4


def test_integer_log_of_steps():
    for n in list(range(1, 5000, 7)) + [65535]:
        assert lt.log2_eighths(n) == math.floor(8 * math.log2(n) + 1e-12)


@pytest.fixture(scope="module")
def shipped():
    return coder("tae-f2-ctx").model


@pytest.fixture(scope="module")
def photo_symbols(codec):
    """A real (held-out) photo's latent quantized as the encoder does, at two operating points."""
    a = codec.analyse(photo_crop(HELD_OUT, 256))
    out = []
    for step in (0.3, 2.0):
        qp = choose_params(a.latent, step, a.sensitivity)
        out.append((quantize(a.latent, qp).astype(np.int64), qp.steps.astype(np.int64)))
    return out


def test_integer_network_is_exact(shipped, photo_symbols, monkeypatch):
    """Thread count and band height change nothing; and the float64 path equals an int64 reference."""
    sym, steps = photo_symbols[1]
    avail, _ = cm.pass_masks(shipped.cfg, *sym.shape[1:])[3]
    feats = cm.features(sym, steps, avail)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = shipped.net(feats)
        torch.set_num_threads(2)
        two = shipped.net(feats)
    finally:
        torch.set_num_threads(threads)
    monkeypatch.setattr(cm, "BAND_ROWS", 5)
    banded = shipped.net(feats)
    for a, b, c in zip(one, two, banded):
        assert np.array_equal(a, b) and np.array_equal(a, c)

    # int64 reference of the first layer on a corner (every partial sum exact)
    w = shipped.net.w[0].numpy().astype(np.int64)
    b = shipped.net.b[0].numpy().astype(np.int64)
    x = np.pad(feats[:, :6, :6].astype(np.int64), ((0, 0), (1, 1), (1, 1)))
    ref = np.zeros((w.shape[0], 6, 6), np.int64)
    for dy in range(3):
        for dx in range(3):
            ref += np.einsum("oc,chw->ohw", w[:, :, dy, dx], x[:, dy : dy + 6, dx : dx + 6])
    ref = np.clip((ref + b[:, None, None]) >> cm.WEIGHT_BITS, 0, cm.ACT_CLIP)
    got = shipped.net._layer(torch.from_numpy(feats[:, :8, :8].astype(np.float64))[None], 0, 1)[0, :, :6, :6]
    assert np.array_equal(got.numpy().astype(np.int64)[:, :5, :5], ref[:, :5, :5])


def test_deeper_networks_band_exactly_and_round_trip(photo_symbols, monkeypatch):
    """A depth-3 network (7×7 receptive field) needs a three-row halo per band: banded == whole image, and a
    stream it codes decodes to the same symbols."""
    torch.manual_seed(0)
    cfg = cm.ContextConfig(channels=32, groups=4, hidden=16, depth=3)
    net, tensors = cm.IntegerContextNet.from_float(cm.ContextNet(cfg))
    assert sorted(tensors) == sorted(f"c{i}.{k}" for i in (1, 2, 3, 4) for k in ("weight", "bias"))
    sym, steps = photo_symbols[1]
    avail, _ = cm.pass_masks(cfg, *sym.shape[1:])[5]
    feats = cm.features(sym, steps, avail)
    whole = net(feats)
    monkeypatch.setattr(cm, "BAND_ROWS", 4)
    for a, b in zip(whole, net(feats)):
        assert np.array_equal(a, b)
    model = cm.ContextEntropyModel("random-depth3", 99, cfg, net, "tae-f2")
    assert np.array_equal(model.decode(model.encode(sym, steps), steps, sym.shape), sym)


def _pass_by_pass(net, sym, steps):
    """Every pass's laws from ``net.passes`` (symbols filled in as a decoder fills them) against the whole
    network on that pass's features, at the positions the pass codes."""
    log8 = cm.step_log8(steps)
    seen = np.zeros_like(sym)
    fast = net.passes(seen, steps, log8)
    for avail, coded in cm.pass_masks(net.cfg, *sym.shape[1:]):
        got, want = next(fast), net(cm.features(sym, steps, avail, log8))
        for a, b in zip(got, want):
            assert np.array_equal(a[coded], b[coded])
        seen[coded] = sym[coded]


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_incremental_passes_equal_the_whole_network(shipped, photo_symbols, monkeypatch, depth):
    """The decoder's fast path (first layer updated, last layers at the pass's half only) gives the very
    integers of the definition, for the shipped model and for 1–3 layer networks, on odd shapes and bands."""
    sym, steps = photo_symbols[0]
    if depth == 2:
        _pass_by_pass(shipped.net, sym, steps)
    torch.manual_seed(depth)
    net, _ = cm.IntegerContextNet.from_float(cm.ContextNet(cm.ContextConfig(hidden=16, depth=depth)))
    for band in (cm.BAND_ROWS, 5, 1):
        monkeypatch.setattr(cm, "BAND_ROWS", band)
        for h, w in ((sym.shape[1], sym.shape[2]), (13, 7), (1, 6), (6, 1)):
            _pass_by_pass(net, sym[:, :h, :w], steps)


def test_round_trip_and_payload_near_ideal(shipped, photo_symbols):
    for sym, steps in photo_symbols:
        data = shipped.encode(sym, steps)
        assert np.array_equal(shipped.decode(data, steps, sym.shape), sym)
        ideal = shipped.ideal_bits(sym, steps)
        assert len(data) * 8 <= ideal * 1.01 + 64


def test_escapes_round_trip(shipped):
    """Symbols far outside the predicted range (beyond a table's support) survive through the escape words."""
    rng = np.random.default_rng(0)
    sym = rng.integers(-3, 4, size=(32, 10, 12)).astype(np.int64)
    sym[5, 3, 4], sym[20, 9, 11], sym[31, 0, 0] = 60000, -45000, 1500
    steps = np.full(32, 4096, np.int64)
    data = shipped.encode(sym, steps)
    assert np.array_equal(shipped.decode(data, steps, sym.shape), sym)


def test_damaged_payload_is_an_error_or_garbage(shipped, photo_symbols):
    """An ANS decoder reads whatever the words say, so a cut payload is not always detectable here: it either
    raises CorruptStream (never another exception) or decodes to other symbols. What catches the damage for sure is
    the container's CRC (tests/test_bitstream.py), checked before any entropy decoding."""
    sym, steps = photo_symbols[0]
    data = shipped.encode(sym, steps)
    for cut in (4, 8, 12, 64, len(data) // 2):
        try:
            out = shipped.decode(data[:-cut], steps, sym.shape)
        except CorruptStream:
            continue
        assert not np.array_equal(out, sym), cut
    with pytest.raises(CorruptStream):
        shipped.decode(data[:-3], steps, sym.shape)  # not whole 32-bit words


def test_codec_streams_select_their_entropy_model():
    """Same quantization → identical pixels through either coder; the context stream is smaller; a decoder
    set up for the other coder follows the stream's id; an unknown id is refused."""
    from latentarc.codec.api import load_codec
    from latentarc.codec import bitstream

    ctx = load_codec("tae-f2", weights=str(MODELS), device="cpu", entropy_model="tae-f2-ctx", rdoq=0)
    pc = load_codec("tae-f2", weights=str(MODELS), device="cpu")
    pic = photo_crop(HELD_OUT, 192)
    a = ctx.encode(pic, quality=40, measure=False)
    b = pc.encode(pic, quality=40, measure=False)
    assert bitstream.parse(a.data).entropy_model == 3 and bitstream.parse(b.data).entropy_model == 1
    assert len(a.data) < len(b.data)
    assert np.array_equal(pc.decode(a.data).rgb, ctx.decode(b.data).rgb)
    info = pc.info(a.data)
    assert info["entropy_model_name"] == "tae-f2-ctx" and info["overhead_vs_ideal_pct"] < 1.0

    s = bitstream.parse(a.data)
    s.entropy_model = 99
    with pytest.raises(UnsupportedVersion):
        pc.decode(bitstream.pack(s))


def test_rd_optimised_rounding_trades_bits_for_distortion(shipped, photo_symbols):
    """RDOQ picks ⌊u⌋ or ⌊u⌋+1 per symbol: fewer bits than plain rounding, a bit more distortion, and the
    Lagrangian cost it minimises lower than plain rounding's; strength 0 is plain rounding."""
    from latentarc.codec.api import load_codec

    codec = load_codec("tae-f2", weights=str(MODELS), device="cpu")
    a = codec.analyse(photo_crop(HELD_OUT, 192))
    qp = choose_params(a.latent, 0.8, a.sensitivity)
    u = centred(a.latent, qp)
    steps = qp.steps.astype(np.int64)
    plain = quantize(a.latent, qp).astype(np.int64)
    assert np.array_equal(shipped.rd_quantize(u, steps, 0.0), plain)
    lam = math.log(2) / 6
    rdo = shipped.rd_quantize(u, steps, lam)
    assert np.abs(u - rdo).max() < 1 and (rdo != plain).mean() > 0.01
    bits_p, bits_r = shipped.ideal_bits(plain, steps), shipped.ideal_bits(rdo, steps)
    d_p, d_r = ((u - plain) ** 2).sum(), ((u - rdo) ** 2).sum()
    assert bits_r < 0.97 * bits_p and d_r > d_p
    assert d_r + lam * bits_r < d_p + lam * bits_p
    data = shipped.encode(rdo, steps)
    assert np.array_equal(shipped.decode(data, steps, rdo.shape), rdo)


def test_rdoq_laws_are_reused_not_recomputed(shipped, photo_symbols, monkeypatch):
    """The laws RD-optimised rounding records pass by pass are the ones ``encode`` would compute from the
    finished symbols (same context): coding with them gives the same bytes and bits, and the network runs
    only during rounding."""
    calls = []

    class CountingNet:
        """The shipped network, counting the passes it evaluates."""

        def __init__(self, net):
            self.net, self.cfg = net, net.cfg

        def passes(self, *args):
            for out in self.net.passes(*args):
                calls.append(1)
                yield out

    monkeypatch.setattr(shipped, "net", CountingNet(shipped.net))
    rng = np.random.default_rng(0)
    for symbols, steps in photo_symbols:
        u = symbols + rng.uniform(-0.5, 0.5, symbols.shape)
        laws: list = []
        rdo = shipped.rd_quantize(u, steps, math.log(2) / 6, laws)
        assert len(laws) == len(calls) == shipped.cfg.passes
        reused_bytes, reused_bits = shipped.encode(rdo, steps, laws), shipped.ideal_bits(rdo, steps, laws)
        assert len(calls) == shipped.cfg.passes
        assert reused_bytes == shipped.encode(rdo, steps) and reused_bits == shipped.ideal_bits(rdo, steps)
        calls.clear()


def test_codec_rdoq_is_an_encoder_choice():
    """The context codec rounds RD-optimally by default: a smaller stream at the same quality that any decoder
    reads; the per-channel coder refuses it (it has no law before quantization)."""
    from latentarc.codec.api import load_codec

    pic = photo_crop(HELD_OUT, 192)
    rdo = load_codec("tae-f2", weights=str(MODELS), device="cpu", entropy_model="tae-f2-ctx")
    plain = load_codec("tae-f2", weights=str(MODELS), device="cpu", entropy_model="tae-f2-ctx", rdoq=0)
    a, b = rdo.encode(pic, quality=40), plain.encode(pic, quality=40)
    assert a.params["rdoq"] == 1.0 and "rdoq" not in b.params
    assert len(a.data) < 0.97 * len(b.data) and a.psnr < b.psnr
    assert abs(plain.decode(a.data).rgb.astype(float) - rdo.decode(a.data).rgb).max() == 0
    with pytest.raises(ValueError, match="context model"):
        load_codec("tae-f2", weights=str(MODELS), device="cpu", rdoq=1.0)


@pytest.mark.parametrize("name,golden", [("tae-f2-ctx-v1", "2c9e88227ee90c64"), ("tae-f2-ctx", "b63df96dd4ad8a6b")])
def test_golden_payload(name, golden):
    """Pins the coded format of every shipped model (id 2 kept for old streams, id 3 for new ones): the payload
    for fixed integer symbols and steps (integers in, integers through the network: the same bytes on every
    machine). Symbols are a smooth random field rounded, so the context has something to predict."""
    model = coder(name).model
    rng = np.random.default_rng(1234)  # PCG64: the same stream on every platform
    field = rng.integers(-40, 41, size=(32, 20, 20)).cumsum(axis=1).cumsum(axis=2) // 60
    steps = (np.arange(32, dtype=np.int64) * 97) % 3000 + 400
    data = model.encode(field, steps)
    assert hashlib.sha256(data).hexdigest()[:16] == golden
    assert np.array_equal(model.decode(data, steps, field.shape), field)


@pytest.mark.shared("train")
def test_train_entropy_job(tmp_path, capsys):
    """The trainer end to end on real photos (small and short): it learns (loss falls), writes weights, config
    and card, and what it writes loads as a working model of the configured depth."""
    from latentarc.jobs.cli import main

    from latentarc.jobs.research.training_data import training_files

    out = tmp_path / "ctx"
    args = ["--out", str(out), "--name", "test-ctx", "--model-id", "99",
            "--iterations", "60", "--batch-size", "4", "--crop", "12", "--hidden", "16", "--depth", "3",
            "--limit", "5", "--max-side", "256", "--cache", str(tmp_path / "cache"), "--weights", str(MODELS),
            "--device", "cpu"]
    assert main(["train-entropy", str(PHOTOS), *args]) != 0  # the evaluation photos are never training data
    assert "HeldOutData" in capsys.readouterr().err and not out.exists()
    assert main(["train-entropy", str(TRAIN), *args]) == 0
    meta = json.loads((out / "config.json").read_text())
    t = meta["training"]["training"]
    fifth = training_files(TRAIN, PHOTOS)[4].relative_to(TRAIN).as_posix()
    assert meta["config"]["depth"] == 3 and meta["training"]["data"]["held_out"] == [fifth]
    assert t["final_loss_bpp"] < t["first_loss_bpp"]
    ev = meta["training"]["held_out_evaluation"]
    assert [r["quality"] for r in ev] == [10, 25, 40, 55, 70, 85]
    assert all(0 < r["context_bpp"] < 2 * r["per_channel_bpp"] for r in ev)
    card = (out / "CARD.md").read_text()
    assert "--depth 3" in card and "`bsds500/`" in card and "non-commercial research" in card  # the sets' terms
    model = cm.ContextEntropyModel.load(out)
    assert model.cfg.depth == 3 and model.id == 99
    sym = np.random.default_rng(0).integers(-3, 4, size=(32, 9, 11))
    steps = np.full(32, 2000, np.int64)
    assert np.array_equal(model.decode(model.encode(sym, steps), steps, sym.shape), sym)


def test_a_trained_folder_codes_streams_only_with_itself(tmp_path):
    """``ctx:<folder>`` (stage 3): a folder as train-entropy saves it codes real streams that its own codec
    decodes to the per-channel model's pixels; a codec without it refuses them by id; a folder claiming a shipped
    model's id is refused, and so is an archive job, whose streams must decode without the folder."""
    from latentarc.codec.api import load_codec
    from latentarc.codec import bitstream
    from latentarc.codec.errors import ModelError
    from latentarc.codec.spec import CodecSpec
    from latentarc.jobs.bench_inputs import entropy_spec
    from latentarc.pipeline.compress import CompressOptions

    out = tmp_path / "ctx"
    torch.manual_seed(0)
    cfg = cm.ContextConfig(channels=32, groups=4, hidden=8, depth=1)
    net, tensors = cm.IntegerContextNet.from_float(cm.ContextNet(cfg))
    cm.ContextEntropyModel("test-ctx", 98, cfg, net, "tae-f2").save(out, tensors)
    assert (out / "model.safetensors").stat().st_mode & 0o777 == 0o644  # shippable as written
    name = f"ctx:{out}"
    assert entropy_spec(f"{name}:0") == {"entropy_model": name, "rdoq": 0.0}
    assert entropy_spec(name) == {"entropy_model": name}
    mine = load_codec("tae-f2", weights=str(MODELS), device="cpu", entropy_model=name, rdoq=0)
    pc = load_codec("tae-f2", weights=str(MODELS), device="cpu")
    pic = photo_crop(HELD_OUT, 128)
    a = mine.encode(pic, quality=40, measure=False)
    assert bitstream.parse(a.data).entropy_model == 98
    assert np.array_equal(mine.decode(a.data).rgb, pc.decode(pc.encode(pic, quality=40, measure=False).data).rgb)
    assert mine.info(a.data)["entropy_model_name"] == name
    with pytest.raises(UnsupportedVersion):
        pc.decode(a.data)
    with pytest.raises(ValueError, match="shipped entropy model"):
        CompressOptions(codec=CodecSpec(entropy_model=name))

    meta = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**meta, "id": 3}))
    with pytest.raises(ModelError, match="tae-f2-ctx"):
        load_codec("tae-f2", weights=str(MODELS), device="cpu", entropy_model=name)


def test_bench_entropy_accounts_for_every_bit(tmp_path, capsys):
    """``bench-entropy`` on 3 downscaled photos: its passes add up to the model's own code length, its
    per-channel figure is the per-channel coder's (side bytes included), the ideal-law bound lies below the model,
    and a model folder measures the same as the shipped name."""
    from latentarc.codec.latent_coding import coder
    from latentarc.codec.neural import quality_to_step
    from latentarc.jobs.cli import main
    from latentarc.jobs.research.train_entropy import quantized
    from latentarc.jobs.research.latent_cache import encode_latents

    common = [str(PHOTOS), "--limit", "3", "--max-side", "160", "--holdout-every", "1", "--qualities", "20,60",
              "--cache", str(tmp_path / "cache"), "--device", "cpu"]
    assert main(["bench-entropy", *common, "--json-out", str(tmp_path / "a.json")]) == 0
    assert "ideal-law bound" in capsys.readouterr().out
    got = json.loads((tmp_path / "a.json").read_text())
    folder = WEIGHTS_DIR / "tae-f2-ctx"
    assert main(["bench-entropy", *common, "--model", str(folder), "--json-out", str(tmp_path / "b.json")]) == 0
    assert json.loads((tmp_path / "b.json").read_text())["qualities"] == got["qualities"]

    from latentarc.codec.api import load_codec

    codec = load_codec("tae-f2", device="cpu")
    paths = sorted(p for p in PHOTOS.iterdir() if p.suffix == ".png")[:3]
    latents = encode_latents(paths, codec.model, 160, tmp_path / "cache", probes=codec.probes)
    model = coder("tae-f2-ctx").model
    for q in (20, 60):
        ctx = pc = px = 0.0
        for z, sens in latents.values():
            sym, steps, qp = quantized(z, sens, quality_to_step(q))
            ctx += model.ideal_bits(sym, steps)
            bits, side = coder("per-channel").ideal_bits(sym, qp)
            pc += bits + 8 * side
            px += z.shape[1] * z.shape[2] * 64
        s = got["qualities"][str(float(q))]
        assert s["context_bpp"] == pytest.approx(ctx / px, rel=1e-9)
        assert s["per_channel_bpp"] == pytest.approx(pc / px, rel=1e-9)
        assert 0 < s["ideal_law_bpp"] < s["context_bpp"]
        assert len(s["passes"]) == model.cfg.passes
        assert sum(p["symbol_share"] for p in s["passes"]) == pytest.approx(1.0)
        assert sum(p["bit_share"] for p in s["passes"]) == pytest.approx(1.0)
    assert main(["bench-entropy", *common, "--model", "per-channel"]) == 2


@pytest.mark.shared("train")
def test_stage_three_codes_a_learned_encoders_latents(tmp_path, capsys):
    """``--codec``: bench-entropy and train-entropy code the latents of the model named (a train-codec folder:
    stage 3 of codec training), cached apart from the stock encoder's, and the trained model records them."""
    from latentarc.codec.api import load_codec
    from latentarc.jobs.cli import main
    from latentarc.jobs.research.latent_cache import encode_latents

    from .conftest import REPO

    learned = f"tae-f2-le:{REPO / 'docs/results/gpu-h200/stage1-lpips'}"
    cache = tmp_path / "cache"
    common = [str(PHOTOS), "--limit", "2", "--max-side", "128", "--holdout-every", "1", "--qualities", "30",
              "--cache", str(cache), "--device", "cpu"]
    assert main(["bench-entropy", *common, "--json-out", str(tmp_path / "stock.json")]) == 0
    assert main(["bench-entropy", *common, "--codec", learned, "--json-out", str(tmp_path / "le.json")]) == 0
    assert len(list(cache.glob("*.npz"))) == 2  # same photos, same decoder fingerprint, other latents
    stock, le = (json.loads((tmp_path / f).read_text()) for f in ("stock.json", "le.json"))
    assert le["codec"] == learned
    assert le["qualities"]["30.0"]["per_channel_bpp"] != stock["qualities"]["30.0"]["per_channel_bpp"]
    codec = load_codec(learned, device="cpu")
    paths = sorted(p for p in PHOTOS.iterdir() if p.suffix == ".png")[:2]
    z_le = encode_latents(paths, codec.model, 128, cache, probes=codec.probes)
    z_stock = encode_latents(paths, load_codec("tae-f2", device="cpu").model, 128, cache, probes=codec.probes)
    name = paths[0].name
    assert z_le[name][0].shape == z_stock[name][0].shape and not np.allclose(z_le[name][0], z_stock[name][0])

    out = tmp_path / "ctx"
    assert main(["train-entropy", str(TRAIN), "--out", str(out), "--codec", learned, "--iterations", "3",
                 "--batch-size", "2", "--crop", "8", "--hidden", "8", "--limit", "3", "--max-side", "128",
                 "--holdout-every", "3", "--cache", str(cache), "--device", "cpu"]) == 0
    meta = json.loads((out / "config.json").read_text())
    assert meta["latent_model"] == "tae-f2" and meta["training"]["data"]["codec"] == learned
    assert f"--codec {learned}" in (out / "CARD.md").read_text()
