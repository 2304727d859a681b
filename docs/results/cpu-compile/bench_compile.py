"""Eager vs torch.compile (inductor, freezing) on the tae-f2 decoder tail and encoder body, one thread, A/B alternating."""
import time, sys
import torch
torch.set_num_threads(1)
import torch._inductor.config as ic
ic.freezing = True
from latentarc.codec.models import load_model
from latentarc.codec import tae
m = load_model("tae-f2")
tail = m.decoder[tae._DEC_SPLIT:]
body = m.encoder[:tae._ENC_SPLIT]
lat = int(sys.argv[1]) if len(sys.argv) > 1 else 40
torch.manual_seed(0)
f = torch.randn(1, 64, lat, lat).contiguous(memory_format=torch.channels_last)
x = torch.rand(1, 3, lat * 8, lat * 8).contiguous(memory_format=torch.channels_last)
with torch.no_grad():
    t0 = time.perf_counter()
    ctail = torch.compile(tail)
    cbody = torch.compile(body)
    yc = ctail(f); zc = cbody(x)
    print(f"compile+first {time.perf_counter() - t0:.1f} s", flush=True)
    ye = tail(f); ze = body(x)
    print("max |diff| tail", float((yc - ye).abs().max()), "body", float((zc - ze).abs().max()), flush=True)
    res = {"tail eager": [], "tail compiled": [], "body eager": [], "body compiled": []}
    for r in range(4):
        for name, fn, inp in (("tail eager", tail, f), ("tail compiled", ctail, f), ("body eager", body, x), ("body compiled", cbody, x)):
            c0 = time.process_time(); fn(inp); res[name].append(time.process_time() - c0)
    for k, v in res.items():
        print(f"{k}: min {min(v):.3f} CPU-s, median {sorted(v)[len(v)//2]:.3f}", flush=True)
    mp = (lat * 8) ** 2 / 1e6
    print(f"tile {lat} latents = {mp:.3f} MP")
