"""Encoder gap: unquantized PSNR of Enc(x) vs latent search, per model, on held-out crops."""
import sys, torch, numpy as np
from PIL import Image
from latentarc.codec.models import load_model
from latentarc.codec.latent_search import search_latent, LatentSearch
torch.set_num_threads(2)
ids = sys.argv[1].split(",")
crop = int(sys.argv[2]); iters = int(sys.argv[3])
for name in sys.argv[4:]:
    m = load_model(name)
    res = []
    for i in ids:
        im = np.asarray(Image.open(f"/work/shared/data/photos/{i}.png").convert("RGB"))
        H, W = im.shape[:2]; c = min(crop, H, W) // 8 * 8
        y, x = (H - c) // 2, (W - c) // 2
        t = torch.from_numpy(im[y:y+c, x:x+c].copy()).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            z = m.encode(t)
        r = search_latent(m, z, t, (c, c), LatentSearch(iterations=iters, lr=0.03))
        res.append((r.psnr_before, r.psnr_after))
        print(name, i, round(r.psnr_before, 2), round(r.psnr_after, 2), flush=True)
    a = np.array(res); print(name, "MEAN", a.mean(0).round(2), "gap", (a[:, 1] - a[:, 0]).mean().round(2), flush=True)
