"""The worker of ``latentarc bench-speed``: times one neural codec's encode and decode, image by image.

Run as a script (``python speed_probe.py --threads N``), in whichever source tree ``latentarc`` imports from — this
one, or an older one the bench puts first on ``PYTHONPATH`` — so it uses only what every tree has: ``load_codec``,
``read_image``, ``encode`` and ``decode``. Requests and answers are JSON lines on stdin / stdout.

A request names an image, an entropy model, a quality, codec options and where to save the decoded RGB (``.npy``;
the bench scores it). The answer: encode and decode wall and process-CPU seconds, where each side's time went
(cProfile's cumulative time of the functions in :data:`PARTS`; the rest is "other"), the stream size and the
process's peak RSS. Encode is the analysis and the coding without a measuring decode (``measure=False``), as the
RD bench times it. Each codec is warmed up once on a 64×64 crop before its first timed image.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import resource
import sys
import time

#: the entropy model a request names for "the model's own" (``load_codec(entropy_model=None)``): per-channel for
#: tae-f2, its context model for tae-f2-ft, whatever the tree's default codec is
OWN_ENTROPY = "own"
#: (side, file suffix, function) → part name: the code every tree has, timed by its cumulative time
PARTS = {
    ("encode", "codec/tae.py", "encode"): "encoder network",
    ("encode", "codec/quantize.py", "decoder_sensitivity"): "channel sensitivity",
    ("encode", "codec/neural.py", "_code"): "quantize + entropy coding",
    ("decode", "codec/tae.py", "decode"): "decoder network",
    ("decode", "codec/latent_coding.py", "decode"): "entropy decoding",
}


def _parts(profile: cProfile.Profile, side: str, total: float) -> dict[str, float]:
    stats = pstats.Stats(profile, stream=io.StringIO()).stats
    found = {name: 0.0 for (s, _, _), name in PARTS.items() if s == side}
    for (file, _, func), (_, _, _, cumulative, _) in stats.items():
        for (s, suffix, f), name in PARTS.items():
            if s == side and f == func and file.replace("\\", "/").endswith(suffix):
                found[name] = max(found[name], cumulative)  # recursive entries repeat the outer time
    found["other"] = max(0.0, total - sum(found.values()))
    return found


def _timed(side: str, fn):
    prof = cProfile.Profile()
    c0, t0 = time.process_time(), time.perf_counter()
    prof.enable()
    try:
        out = fn()
    finally:
        prof.disable()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return out, wall, cpu, _parts(prof, side, wall)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import numpy as np
    import torch
    from PIL import Image

    from latentarc.codec.api import load_codec
    from latentarc.codec.images import read_image

    torch.set_num_threads(args.threads)
    codecs: dict[str, object] = {}
    for line in sys.stdin:
        req = json.loads(line)
        key = json.dumps([req["entropy"], req.get("options", {})], sort_keys=True)
        data = open(req["image"], "rb").read()
        if key not in codecs:
            own = req["entropy"] == OWN_ENTROPY  # the model's own entropy model (load_codec's None)
            codec = load_codec(entropy_model=None if own else req["entropy"], **req.get("options", {}))
            rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))[:64, :64]
            buf = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG")
            codec.decode(codec.encode(read_image(buf.getvalue()), quality=req["quality"], measure=False).data)
            codecs[key] = codec
        codec = codecs[key]
        pic = read_image(data)
        res, enc_s, enc_cpu, enc_parts = _timed("encode", lambda: codec.encode(pic, quality=req["quality"],
                                                                               measure=False))
        dec, dec_s, dec_cpu, dec_parts = _timed("decode", lambda: codec.decode(res.data))
        np.save(req["out"], np.ascontiguousarray(dec.rgb))
        device = str(req.get("options", {}).get("device") or ("cuda" if torch.cuda.is_available() else "cpu"))
        print(json.dumps({
            "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
            "megapixels": pic.width * pic.height / 1e6, "bytes": len(res.data),
            "encode_s": enc_s, "encode_cpu_s": enc_cpu, "encode_parts": enc_parts,
            "decode_s": dec_s, "decode_cpu_s": dec_cpu, "decode_parts": dec_parts,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
