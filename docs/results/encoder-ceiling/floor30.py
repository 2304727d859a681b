"""Which held-out photos a codec can code at ``--min-psnr 30``: ``python floor30.py CODEC OUT.json``.

The floor search (``NeuralCodec._encode_min_psnr``) starts from its passing end, the finest step (STEP_FINEST); a
photo passes the search iff that probe passes, so this codes, decodes and measures each full photo there once."""
import json, sys, time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

PHOTOS = Path("/work/shared/data/photos")


def one(path: str):
    import torch
    torch.set_num_threads(1)
    from latentarc.codec.api import load_codec
    from latentarc.codec.images import read_image
    from latentarc.codec.metrics import psnr
    from latentarc.codec.neural import STEP_FINEST
    codec = load_codec(sys.argv[1], device="cpu")
    pic = read_image(Path(path).read_bytes())
    t = time.perf_counter()
    a = codec.analyse(pic)
    data, _ = codec._code(a, STEP_FINEST)
    p = psnr(pic.reference(), codec._reconstruct_planes(a, data))
    return Path(path).name, round(p, 3), round(time.perf_counter() - t, 1)


if __name__ == "__main__":
    files = sorted(str(p) for p in PHOTOS.glob("*.png"))
    rows = []
    with ProcessPoolExecutor(2) as ex:
        for row in ex.map(one, files):
            print(row, flush=True)
            rows.append(row)
    ok = sum(r[1] >= 30 for r in rows)
    print(f"{ok} of {len(rows)} photos can meet --min-psnr 30 with {sys.argv[1]}")
    Path(sys.argv[2]).write_text(json.dumps(rows, indent=1))
