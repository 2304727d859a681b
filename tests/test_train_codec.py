"""train-codec: a few steps on tiny crops, a resume, and the saved encoder through the registry and the codec."""

from __future__ import annotations

import json
import math

import pytest
import torch

from latentarc.jobs.research import train_codec as tc

from .conftest import PHOTOS, TRAIN, photo_crop

pytestmark = pytest.mark.shared("models", "photos", "train")


def _cfg(out, steps: int) -> tc.TrainConfig:
    return tc.TrainConfig(out=str(out), images=str(TRAIN), held_out=str(PHOTOS), steps=steps, batch=2, crop=64,
                          save_every=2, log_every=1, threads=1, device="cpu", eval_photos=0, sens_window=8)


def test_train_resume_and_decode_with_the_stock_decoder(tmp_path):
    import dataclasses

    from latentarc.codec.api import codec_for_stream, load_codec
    from latentarc.codec.models import load_model

    out = tmp_path / "run"
    first = tc.train(_cfg(out, 3))
    assert first.step == 3 and all(math.isfinite(r["loss"]) for r in first.history)
    ck = tc.load_checkpoint(out)
    assert ck["step"] == 3 and (out / "encoder.safetensors").is_file()

    assert "quality drawn uniformly in [0.0, 100.0]" in (out / "CARD.md").read_text()
    # the same --out: continues from step 3, here with another quality range, which the card states per chunk
    resumed = tc.train(dataclasses.replace(_cfg(out, 4), quality_range=(30.0, 100.0)))
    assert resumed.step == 4 and [r["step"] for r in resumed.history] == [1, 2, 3, 4]
    assert [(c["from_step"], c["to_step"]) for c in tc.load_checkpoint(out)["chunks"]] == [(0, 3), (3, 4)]
    card = (out / "CARD.md").read_text()
    assert "each chunk's range" in card and "0→3 (batch 2, crop 64, qualities 0–100," in card
    assert "3→4 (batch 2, crop 64, qualities 30–100," in card

    learned = load_model(f"tae-f2-le:{out}", device="cpu")
    stock = load_model("tae-f2", device="cpu")
    assert learned.name == "tae-f2" and learned.fingerprint == stock.fingerprint
    trained = torch.load(out / "checkpoint.pt", weights_only=True)["encoder"]
    assert all(torch.equal(learned.encoder.state_dict()[k], v) for k, v in trained.items())
    assert not torch.equal(learned.encoder[0].weight, stock.encoder[0].weight)  # it did train

    pic = photo_crop(0, 64)
    res = load_codec(f"tae-f2-le:{out}", device="cpu").encode(pic, quality=50)
    decoder = codec_for_stream(res.data, device="cpu")  # the stream names tae-f2: the stock decoder
    assert decoder.model is stock
    assert decoder.decode(res.data).rgb.shape == pic.rgb.shape
    assert res.psnr > 20


def test_held_out_photos_are_refused(tmp_path):
    from latentarc.jobs.research.training_data import HeldOutData, training_files

    with pytest.raises(HeldOutData):
        training_files(PHOTOS, PHOTOS)
    (tmp_path / "copy.png").write_bytes(sorted(PHOTOS.glob("*.png"))[3].read_bytes())
    with pytest.raises(HeldOutData, match="bytes of a held-out photo"):
        training_files(tmp_path, PHOTOS)


def test_max_minutes_ends_the_chunk_as_a_finished_one(tmp_path):
    """A time-boxed chunk stops early, still exports its encoder and card, and the next run resumes from it."""
    import dataclasses
    import json

    out = tmp_path / "run"
    boxed = tc.train(dataclasses.replace(_cfg(out, 50), max_minutes=1e-6))
    assert 0 <= boxed.step < 50
    meta = json.loads((out / "config.json").read_text())
    assert meta["training"]["steps"] == boxed.step and (out / "encoder.safetensors").is_file()
    assert tc.train(_cfg(out, boxed.step + 1)).step == boxed.step + 1


def test_crops_do_not_depend_on_the_photo_cache():
    import numpy as np

    from latentarc.jobs.research.training_data import training_files

    files = training_files(TRAIN, PHOTOS)[:5]
    cached = tc.CropSampler(files, 64, np.random.default_rng(3), cache_mb=512)
    uncached = tc.CropSampler(files, 64, np.random.default_rng(3), cache_mb=0)
    for _ in range(12):
        assert np.array_equal(cached.sample(), uncached.sample())
    assert cached._cache and not uncached._cache


def test_scale_range_above_one_gives_smooth_crops(tmp_path):
    """--scale-range: crops of the same training photos upscaled ×2 carry far less pixel-to-pixel detail than
    crops downscaled ×0.5 (the smooth content of large photos against the dense detail of small ones); the range
    is checked and written into the card."""
    import numpy as np

    from latentarc.jobs.research.training_data import training_files

    files = training_files(TRAIN, PHOTOS)[:6]

    def detail(scale):
        sampler = tc.CropSampler(files, 64, np.random.default_rng(4), scale=scale)
        return np.mean([np.abs(np.diff(sampler.sample().astype(np.float32), axis=1)).mean() for _ in range(24)])

    small, large = detail((0.5, 0.5)), detail((2.0, 2.0))
    assert large < 0.6 * small, (small, large)
    with pytest.raises(ValueError, match="scale-range"):
        tc.TrainConfig(out=str(tmp_path), scale_range=(1.0, 3.0))
    out = tmp_path / "run"
    tc.train(tc.TrainConfig(out=str(out), images=str(TRAIN), held_out=str(PHOTOS), steps=1, batch=1, crop=64,
                            scale_range=(1.0, 1.5), log_every=1, threads=1, device="cpu", eval_photos=0,
                            sens_window=8))
    assert "rescaled by a factor in\n  [1.0, 1.5]" in (out / "CARD.md").read_text()


def test_stage_two_is_a_model_of_its_own(tmp_path):
    """--train-decoder continues a stage-1 run with the decoder trained too: the folder loads as tae-f2-ft:<folder>,
    with its own fingerprint; its streams name it and decode with it, and the stock decoder refuses them."""
    import dataclasses
    import json

    import numpy as np

    from latentarc.codec.api import codec_for_stream, load_codec
    from latentarc.codec.errors import LatentarcError
    from latentarc.codec.models import load_model

    out = tmp_path / "run"
    tc.train(_cfg(out, 1))  # stage 1
    stage2 = dataclasses.replace(_cfg(out, 3), train_decoder=True, decoder_lr=5e-5)
    assert tc.train(stage2).step == 3
    ck = tc.load_checkpoint(out)
    assert ck["decoder"] is not None and len(ck["optimizer"]["param_groups"]) == 2
    meta = json.loads((out / "config.json").read_text())
    card = (out / "CARD.md").read_text()
    assert meta["stage"] == 2 and meta["decoder_sha256"] and "own" in card
    assert meta["name"] == "tae-f2-ft" and card.startswith("# tae-f2-ft:") and "(decoder " in card
    with pytest.raises(ValueError, match="--train-decoder"):
        tc.train(_cfg(out, 4))  # a stage-2 run cannot silently drop its decoder

    name = f"tae-f2-ft:{out}"
    ft, stock = load_model(name, device="cpu"), load_model("tae-f2", device="cpu")
    assert ft.fingerprint == meta["decoder_sha256"] != stock.fingerprint
    assert all(torch.equal(ft.decoder.state_dict()[k], v.float()) for k, v in ck["decoder"].items())
    pic = photo_crop(3, 96)
    data = load_codec(name, device="cpu").encode(pic, quality=50, measure=False).data
    decoded = codec_for_stream(data, device="cpu").decode(data).rgb
    assert decoded.shape == pic.rgb.shape and np.abs(decoded.astype(int) - pic.rgb).mean() < 40
    with pytest.raises(LatentarcError, match="made with codec 'tae-f2-ft:"):
        load_codec("tae-f2", device="cpu").decode(data)
    stock_stream = load_codec("tae-f2", device="cpu").encode(pic, quality=50, measure=False).data
    with pytest.raises(LatentarcError):
        load_codec(name, device="cpu").decode(stock_stream)


def test_init_starts_from_a_train_codec_folder(tmp_path):
    """--init loads a finished folder's encoder (hash checked) into a new run; with --train-decoder a stage-2
    folder's decoder comes along and trains."""
    import dataclasses

    from safetensors.torch import load_file

    first, third = tmp_path / "a", tmp_path / "c"
    tc.train(dataclasses.replace(_cfg(first, 1), train_decoder=True))
    tc.train(dataclasses.replace(_cfg(third, 0), init=str(first), train_decoder=True))  # 0 steps: exports the start
    for f in ("encoder.safetensors", "decoder.safetensors"):
        a, c = load_file(str(first / f)), load_file(str(third / f))
        assert a.keys() == c.keys() and all(torch.equal(a[k], c[k]) for k in a)


def test_an_encoder_for_a_fine_tuned_models_frozen_decoder_keeps_its_fingerprint(tmp_path):
    """A stage-2 folder continued without --train-decoder trains only the encoder, for that folder's decoder: the
    decoder file is written back bit for bit (same SHA-256, so the same fingerprint: shipped under the parent's name,
    its streams decode as before), also after a resume, and the new encoder's streams decode."""
    import dataclasses
    import json

    from safetensors.torch import load_file

    from latentarc.codec.api import load_codec
    from latentarc.codec.models import load_model

    parent, child = tmp_path / "ft", tmp_path / "enc"
    tc.train(dataclasses.replace(_cfg(parent, 1), train_decoder=True, lr=1e-3))
    tc.train(dataclasses.replace(_cfg(child, 2), init=str(parent), lr=1e-3))
    assert tc.load_checkpoint(child)["frozen_decoder"] is not None
    assert tc.train(dataclasses.replace(_cfg(child, 3), init=str(parent), lr=1e-3)).step == 3  # resumed
    pm, cm = (json.loads((d / "config.json").read_text()) for d in (parent, child))
    assert cm["decoder_sha256"] == pm["decoder_sha256"] and cm["decoder_frozen"] and cm["name"] == "tae-f2-ft"
    assert (child / "decoder.safetensors").read_bytes() == (parent / "decoder.safetensors").read_bytes()
    assert "frozen" in (child / "CARD.md").read_text()
    a, b = load_file(str(parent / "encoder.safetensors")), load_file(str(child / "encoder.safetensors"))
    assert not all(torch.equal(a[k], b[k]) for k in a)  # the encoder trained
    old, new = load_model(f"tae-f2-ft:{parent}", device="cpu"), load_model(f"tae-f2-ft:{child}", device="cpu")
    assert new.fingerprint == old.fingerprint
    pic = photo_crop(3, 96)
    same = load_codec(f"tae-f2-ft:{child}", device="cpu")
    assert same.decode(same.encode(pic, quality=50, measure=False).data).rgb.shape == pic.rgb.shape
    # continued as stage 2, the decoder trains on from the frozen one, not from tae-f2's
    tc.train(dataclasses.replace(_cfg(child, 3), train_decoder=True, lr=1e-3))
    dec = tc.load_checkpoint(child)["decoder"]
    assert all(torch.equal(dec[k], v) for k, v in old.decoder.state_dict().items())


def test_chained_runs_record_their_lineage(tmp_path):
    """A run started with --init records the folder it came from, with that folder's own start, in its config
    and card, and keeps it across a resume: a model trained in chained leases says every run it took."""
    import dataclasses
    import json

    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    tc.train(_cfg(a, 1))
    tc.train(dataclasses.replace(_cfg(b, 1), init=str(a), lpips_weight=0.5, lpips_form="log"))
    tc.train(dataclasses.replace(_cfg(c, 1), init=str(b)))
    tc.train(dataclasses.replace(_cfg(c, 2), init=str(b)))  # resumes c from its checkpoint: --init is not reapplied
    meta = json.loads((c / "config.json").read_text())
    chain = tc.lineage(meta["training"]["init"])
    assert [r["from"] for r in chain] == [str(a), str(b)] and [r["steps"] for r in chain] == [1, 1]
    assert chain[1]["encoder_sha256"] == json.loads((b / "config.json").read_text())["encoder_sha256"]
    assert meta["training"]["steps"] == 2
    card = (c / "CARD.md").read_text()
    assert f"`{a}` (stage 1, 1 steps" in card and "In all 4 steps" in card
    assert "Started from" not in (a / "CARD.md").read_text()
    # each card states its own objective, the perceptual term included
    assert "plus 0.5 × LPIPS / sg(LPIPS)" in (b / "CARD.md").read_text() and "LPIPS" not in card
    assert json.loads((b / "config.json").read_text())["training"]["objective"]["distortion"] == "mse + 0.5 log-lpips"


def test_eval_only_measures_a_finished_folder_without_its_checkpoint(tmp_path):
    """A kept model folder (its checkpoint dropped) is evaluated from the weights it exported: the stage-2
    decoder included, so its ceiling differs from the stock one; no qualities → the ceiling alone."""
    import dataclasses

    out = tmp_path / "run"
    tc.train(dataclasses.replace(_cfg(out, 2), train_decoder=True, lr=1e-3))
    (out / "checkpoint.pt").unlink()
    cfg = dataclasses.replace(_cfg(out, 2), eval_photos=1, eval_crop=64, eval_qualities=())
    ev = tc.evaluate_folder(out, cfg)
    s = ev["summary"]
    assert set(s) == {"stock", "learned"} and ev["entropy_models"] == [] and set(s["stock"]) == {"unquantized_psnr"}
    assert abs(s["learned"]["unquantized_psnr"] - s["stock"]["unquantized_psnr"]) > 1e-3
    table = tc.format_evaluation(ev)
    assert table.splitlines()[2] == "| encoder | unquantized PSNR |" and "| learned |" in table


def test_log_lpips_prices_relative_changes(tmp_path):
    """--lpips-form log adds W · LPIPS / sg(LPIPS): worth exactly W in value, and its gradient is the linear term's
    divided by the example's LPIPS (that of W · ln LPIPS), on the real encoder, decoder and rate model."""
    import copy

    from latentarc.codec.models import load_model

    stock = load_model("tae-f2", device="cpu")
    encoder = copy.deepcopy(stock.encoder).requires_grad_(True)
    rate = tc.rate_model("laplace")
    x = torch.from_numpy(photo_crop(3, 64).rgb).permute(2, 0, 1)[None].float() / 255
    w = 2.0

    def run(weight, form):
        cfg = tc.TrainConfig(out=str(tmp_path), lpips_weight=weight, lpips_form=form, sens_window=8)
        encoder.zero_grad()
        loss, _ = tc.objective(encoder, stock.decoder, rate, x, torch.tensor([30.0]), cfg,
                               torch.Generator().manual_seed(0), tc.lpips_loss(weight))
        loss.backward()
        return float(loss.detach()), encoder[0].weight.grad.clone()

    (l0, g0), (l1, g1), (l2, g2) = run(0.0, "linear"), run(w, "linear"), run(w, "log")
    lpips = (l1 - l0) / w  # this crop's LPIPS through the codec's quantization
    assert 0.01 < lpips < 1
    assert l2 - l0 == pytest.approx(w, rel=1e-5)
    expected = (g1 - g0) / lpips
    assert torch.allclose(g2 - g0, expected, rtol=1e-3, atol=1e-4 * float(expected.abs().max()))
    with pytest.raises(ValueError, match="lpips-form"):
        tc.TrainConfig(out=str(tmp_path), lpips_form="sqrt")


def test_accumulated_micro_batches_make_one_step_of_their_union(tmp_path):
    """--accumulate N: the gradient of a step is the mean of its micro-batches' gradients (each graph freed before
    the next), and the chunk records the effective batch; on real crops, the real encoder, decoder and rate model."""
    import copy

    from latentarc.codec.models import load_model

    stock = load_model("tae-f2", device="cpu")
    encoder = copy.deepcopy(stock.encoder).requires_grad_(True)
    rate = tc.rate_model("tae-f2-ctx")
    x = torch.stack([torch.from_numpy(photo_crop(i, 64).rgb).permute(2, 0, 1).float() / 255 for i in (3, 8)])
    quality = torch.tensor([20.0, 80.0])
    cfg = tc.TrainConfig(out=str(tmp_path), batch=1, accumulate=2, sens_window=8)
    gen = torch.Generator().manual_seed(5)
    grads = []
    for i in range(2):  # each micro-batch alone, drawing from the generator in the same order
        encoder.zero_grad()
        loss, _ = tc.objective(encoder, stock.decoder, rate, x[i:i + 1], quality[i:i + 1], cfg, gen)
        loss.backward()
        grads.append(encoder[0].weight.grad.clone())
    encoder.zero_grad()
    figures = tc.accumulated_backward(encoder, stock.decoder, rate, x, quality, cfg, torch.Generator().manual_seed(5))
    assert [f.quality for f in figures] == [20.0, 80.0]
    assert not torch.allclose(grads[0], grads[1], rtol=0.1)
    assert torch.allclose(encoder[0].weight.grad, (grads[0] + grads[1]) / 2, rtol=1e-4, atol=1e-8)

    out = tmp_path / "run"
    r = tc.train(tc.TrainConfig(out=str(out), images=str(TRAIN), held_out=str(PHOTOS), steps=2, batch=1,
                                accumulate=2, crop=64, log_every=1, threads=1, device="cpu", eval_photos=0,
                                sens_window=8))
    assert r.step == 2 and all(math.isfinite(h["loss"]) for h in r.history)
    assert "batch 1 × 2 accumulated" in (out / "CARD.md").read_text()
    with pytest.raises(ValueError, match="accumulate"):
        tc.TrainConfig(out=str(out), accumulate=0)


def test_bfloat16_training_follows_the_float32_gradient(tmp_path):
    """--precision bfloat16 (autocast of the networks; rate and loss in float32): on real crops at two qualities,
    with the real encoder, decoder, rate model and LPIPS, its loss is float32's within 5% (the latent's rounding
    and the adaptive steps are discrete: a bfloat16 latent rounds a few values the other way) and its encoder
    gradient points the same way (cosine > 0.95); a run records the precision in its card."""
    import copy

    from latentarc.codec.models import load_model
    from latentarc.codec.precision import native_bfloat16

    if not native_bfloat16(torch.device("cpu")):
        pytest.skip("this CPU has no native bfloat16 (AVX512-BF16 / AMX)")
    stock = load_model("tae-f2", device="cpu")
    encoder = copy.deepcopy(stock.encoder).requires_grad_(True)
    rate = tc.rate_model("tae-f2-ctx")
    x = torch.stack([torch.from_numpy(photo_crop(i, 64).rgb).permute(2, 0, 1).float() / 255 for i in (3, 8)])
    quality = torch.tensor([20.0, 80.0])
    losses, grads = [], []
    for precision in ("float32", "bfloat16"):
        cfg = tc.TrainConfig(out=str(tmp_path), batch=2, sens_window=8, lpips_weight=1.0, precision=precision)
        encoder.zero_grad()
        loss, _ = tc.objective(encoder, stock.decoder, rate, x, quality, cfg, torch.Generator().manual_seed(5),
                               tc.lpips_loss(1.0))
        loss.backward()
        losses.append(float(loss.detach()))
        grads.append(torch.cat([p.grad.flatten() for p in encoder.parameters()]))
    assert abs(losses[1] - losses[0]) < 0.05 * abs(losses[0])
    assert not torch.equal(grads[0], grads[1])  # the passes did run in bfloat16
    cosine = float(torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0))
    assert cosine > 0.95, cosine

    out = tmp_path / "run"
    r = tc.train(tc.TrainConfig(out=str(out), images=str(TRAIN), held_out=str(PHOTOS), steps=1, batch=1, crop=64,
                                log_every=1, threads=1, device="cpu", eval_photos=0, sens_window=8,
                                precision="bfloat16"))
    assert r.step == 1 and math.isfinite(r.history[0]["loss"])
    assert "batch 1, bfloat16" in (out / "CARD.md").read_text()
    with pytest.raises(ValueError, match="precision"):
        tc.TrainConfig(out=str(out), precision="float16")


def test_rate_model_prices_the_bits_of_the_coder_it_names(tmp_path):
    """--rate-model NAME trains against that context model's float twin: on integer symbols of a real crop, coded
    by the fine-tuned encoder at the codec's adaptive steps, its code length is the integer coder's ideal length
    (within 2%) for the fine-tuned model's own context model and for the stock one, and the two models price the
    same symbols differently; a name that is not a context model is refused before training."""
    import numpy as np

    from latentarc.codec.latent_coding import coder
    from latentarc.codec.models import load_model
    from latentarc.codec.neural import quality_to_step
    from latentarc.codec.quantize import choose_params, decoder_sensitivity, quantize

    model = load_model("tae-f2-ft", device="cpu")
    x = torch.from_numpy(photo_crop(5, 128).rgb).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        z = model.encoder(x)[0]
    qp = choose_params(z.numpy(), quality_to_step(40.0), decoder_sensitivity(model, z))
    symbols = quantize(z.numpy(), qp)
    u = torch.from_numpy(symbols).float()[None]
    steps = torch.from_numpy(qp.step_values())[None].float()
    bits = {}
    for name in ("tae-f2-ft-ctx", "tae-f2-ctx"):
        exact = coder(name).model.ideal_bits(symbols, qp.steps)
        bits[name] = float(tc.rate_model(name)(u, steps)[0])
        assert bits[name] == pytest.approx(exact, rel=0.02), name
    assert abs(bits["tae-f2-ft-ctx"] / bits["tae-f2-ctx"] - 1) > 0.01
    assert np.isfinite(float(tc.rate_model("laplace")(u, steps)[0]))
    for bad in ("per-channel", "no-such-model"):
        with pytest.raises(ValueError):
            tc.TrainConfig(out=str(tmp_path), rate_model=bad)


def test_rate_proxy_ste_charges_the_streams_bits_where_the_noisy_latent_overcharges():
    """--rate-proxy ste prices the symbols the coder writes: on a real crop coded by the fine-tuned encoder at the
    coarse steps of quality 0 and −16, its code length of the continuous latent is the integer coder's ideal length
    of its symbols (within 2%), with a gradient back to the latent; the noisy latent (``noise``) is charged more
    than 1.5× that at −16, the error that made the rate term a poor guide at low rates."""
    from latentarc.codec.latent_coding import coder
    from latentarc.codec.models import load_model
    from latentarc.codec.quantize import centred, choose_params, decoder_sensitivity, quantize

    model = load_model("tae-f2-ft", device="cpu")
    x = torch.from_numpy(photo_crop(5, 128).rgb).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        z = model.encoder(x)[0]
    sens = decoder_sensitivity(model, z)
    exact = coder("tae-f2-ft-ctx").model
    over = {}
    for quality in (0.0, -16.0):
        qp = choose_params(z.numpy(), tc.training_step(quality), sens)
        u = torch.from_numpy(centred(z.numpy(), qp)).float()[None].requires_grad_(True)
        steps = torch.from_numpy(qp.step_values())[None].float()
        ideal = exact.ideal_bits(quantize(z.numpy(), qp), qp.steps)
        ste = tc.rate_model("tae-f2-ft-ctx", "ste")(tc.rate_input(u, None, "ste"), steps)[0]
        assert float(ste.detach()) == pytest.approx(ideal, rel=0.02), quality
        ste.backward()
        assert float(u.grad.abs().sum()) > 0
        eps = torch.rand(u.shape, generator=torch.Generator().manual_seed(0)) - 0.5
        with torch.no_grad():
            noisy = float(tc.rate_model("tae-f2-ft-ctx", "noise")(tc.rate_input(u, eps, "noise"), steps)[0])
        over[quality] = noisy / ideal
    assert over[-16.0] > 1.5 and over[-16.0] > over[0.0] > 1, over
    with pytest.raises(ValueError, match="rate-proxy"):
        tc.TrainConfig(out="unused", rate_proxy="uniform")


def _decoded(model, mu, u, steps):
    """The crops decoded from their rounded latents at ``steps``."""
    return model.decoder(mu + torch.round(u) * steps[:, :, None, None])


def test_measured_slope_prices_bits_at_coarse_steps_higher_than_the_formula():
    """--rate-slope measured: on real training crops coded by the fine-tuned model, the secant −ΔD/ΔR is positive
    and finite, and relative to the high-rate formula it grows from quality 30 to −16 (the formula saturates),
    so λ follows the codec's real trade where the formula would hand out bits cheaply. ``objective`` adds the
    perceptual term's change: never less, and at W = 2 (log form) more than twice the MSE's slope at quality 30."""
    import contextlib

    import numpy as np

    from latentarc.codec.models import load_model
    from latentarc.jobs.research import rd_slope

    model = load_model("tae-f2-ft", device="cpu")
    x = torch.from_numpy(np.stack(rd_slope.crops(3, 128))).permute(0, 3, 1, 2).float() / 255
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        z = model.encoder(x).float()
    sens = tc.channel_sensitivity(model.decoder, z, 1, gen, 16)
    rate = tc.rate_model("tae-f2-ft-ctx", "ste")
    lpips = tc.lpips_loss(2.0)
    ratio, gain = {}, {}
    for quality in (30.0, -16.0):
        steps = tc.adaptive_steps(sens, torch.full((len(x),), tc.training_step(quality)))
        mu = tc.channel_means(z)[:, :, None, None]
        u = (z - mu) / steps[:, :, None, None]
        with torch.no_grad():
            d = (_decoded(model, mu, u, steps) - x).pow(2).mean(dim=(1, 2, 3))
            bpp = rate(tc.rate_input(u, None, "ste"), steps) / (128 * 128)
            slope = tc.measured_slope(model.decoder, rate, x, z, mu, steps, None, d, bpp, "ste", "ste",
                                      contextlib.nullcontext())
            p = lpips(_decoded(model, mu, u, steps).clamp(0, 1), x).float()
            whole = tc.measured_slope(model.decoder, rate, x, z, mu, steps, None, d, bpp, "ste", "ste",
                                      contextlib.nullcontext(), tc.PerceptualSlope(lpips, p, 2.0, "log"))
        assert bool(torch.isfinite(slope).all()) and float(slope.max()) > 0
        ratio[quality] = float((slope / tc.high_rate_slope(steps, z.var(dim=(2, 3)), sens)).median())
        # the perceptual term gets worse as the step grows too: with it, each bit is worth more (~5× at W = 2, q30)
        assert bool((whole >= slope).all())
        gain[quality] = float((whole / slope.clamp_min(1e-12)).median())
    assert gain[30.0] > 2, gain
    assert ratio[-16.0] > 4 * ratio[30.0], ratio


def test_a_step_with_the_objectives_measured_slope_trains_and_is_recorded(tmp_path):
    """One real training step with ``--rate-slope objective`` (and the LPIPS term it reads) runs to a finite loss,
    and the config and card say which slope and rate proxy priced the bits."""
    out = tmp_path / "run"
    r = tc.train(tc.TrainConfig(out=str(out), images=str(TRAIN), held_out=str(PHOTOS), steps=1, batch=1, crop=64,
                                log_every=1, threads=1, device="cpu", eval_photos=0, sens_window=8,
                                lpips_weight=2.0, lpips_form="log", rate_slope="objective"))
    assert r.step == 1 and math.isfinite(r.history[0]["loss"])
    objective = json.loads((out / "config.json").read_text())["training"]["objective"]
    assert objective["rate_slope"] == "objective" and objective["rate_proxy"] == "ste"
    assert "whole distortion objective" in (out / "CARD.md").read_text()
    with pytest.raises(ValueError, match="rate-slope"):
        tc.TrainConfig(out=str(out), rate_slope="guessed")


def test_qualities_below_zero_train_the_rate_controls_coarser_steps(tmp_path):
    """--quality-range may start below 0: those examples train at the coarser base steps rate control reaches
    (continuing the knob's doubling every 17.5 points, clipped at STEP_COARSEST), and a real step at them runs;
    below the coarsest step's quality the range is refused."""
    from latentarc.codec.neural import STEP_COARSEST, quality_to_step

    assert tc.training_step(0.0) == quality_to_step(0.0)
    assert tc.training_step(-17.5) == STEP_COARSEST
    assert tc.training_step(-8.75) == pytest.approx(quality_to_step(0.0) * 2 ** 0.5)
    assert tc.training_step(-1e-9) == pytest.approx(quality_to_step(0.0))
    assert tc.MIN_TRAIN_QUALITY == -17
    out = tmp_path / "run"
    r = tc.train(tc.TrainConfig(out=str(out), images=str(TRAIN), held_out=str(PHOTOS), steps=1, batch=2, crop=64,
                                quality_range=(-17.0, -10.0), log_every=1, threads=1, device="cpu", eval_photos=0,
                                sens_window=8))
    assert r.step == 1 and math.isfinite(r.history[0]["loss"]) and r.history[0]["quality"] < -10
    with pytest.raises(ValueError, match="quality-range"):
        tc.TrainConfig(out=str(out), quality_range=(-18.0, 100.0))


def test_rd_slope_finds_the_rate_term_underpricing_bits_at_coarse_steps():
    """rd_slope on real training crops, the shipped fine-tuned model and its context model: coarser steps cost
    fewer bits and the real slope −dD/dR ÷ D grows as the rate falls, while the rate term's λ ÷ D saturates, so
    at the coarsest steps the real slope outgrows λ several times over what it is at quality 30."""
    import numpy as np

    from latentarc.codec.models import load_model
    from latentarc.jobs.research import rd_slope

    model = load_model("tae-f2-ft", device="cpu")
    ctx = tc.context_coder("tae-f2-ft-ctx").model
    pics = rd_slope.crops(3, 128)
    assert len(pics) == 3 and all(p.shape == (128, 128, 3) for p in pics)
    mid = [rd_slope.measure(model, ctx, p, 30.0) for p in pics]
    low = [rd_slope.measure(model, ctx, p, -16.0) for p in pics]
    for m, lo in zip(mid, low):
        assert lo.step > m.step and lo.bpp < m.bpp and lo.real > m.real > 0
    ratio = np.median([lo.real / lo.formula for lo in low]) / np.median([m.real / m.formula for m in mid])
    assert ratio > 4, ratio
