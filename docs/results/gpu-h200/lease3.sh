#!/bin/bash
# Device lease 3: two stage-2 train-codec chunks (decoder lr 1e-4 / 3e-4, from stage1-lpips) and two
# realistic-denoiser chunks with the stronger discriminator (adv 1.0 / 0.3), all four side by side.
set -u
PY=${PY:-python3}; CMIN=${CMIN:-6.5}; RMIN=${RMIN:-6}
ROOT=$(pwd); G=$ROOT/.gpu
export PYTHONUNBUFFERED=1 LATENTARC_MODEL_DIR=$G/models
mkdir -p /tmp/shim && ln -sfn "$ROOT" /tmp/shim/latentarc
export PYTHONPATH=/tmp/shim${PYTHONPATH:+:$PYTHONPATH}
printf '#!/bin/bash\nexec %s -c "import sys; from latentarc.jobs.cli import main; sys.exit(main(sys.argv[1:]))" "$@"\n' "$PY" > /tmp/la
chmod +x /tmp/la; LA=/tmp/la
{
date -u; nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
$PY -m pip install -q --no-deps $ROOT/.whl/*.whl 2>&1 | tail -2
$PY -c 'import torch, constriction, diffusers; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
cc="$G/train --held-out $G/photos --init $ROOT/docs/results/gpu-h200/stage1-lpips --train-decoder --lpips-weight 1.0
  --iterations 100000 --max-minutes $CMIN --batch 16 --crop 256 --lr 1e-4 --warmup 50 --save-every 100000
  --save-minutes 100 --log-every 100 --threads 4 --eval-photos 1 --eval-crop 512 --name tae-f2-ft"
$LA train-codec $cc --out /tmp/s2a --decoder-lr 1e-4 > /tmp/s2a.log 2>&1 &
A=$!
$LA train-codec $cc --out /tmp/s2b --decoder-lr 3e-4 > /tmp/s2b.log 2>&1 &
B=$!
rc="$G/train --held-out $G/photos --init $ROOT/codec/weights/tae-f2-realistic --loss decoded-lpips
  --base-steps 0.5,12.0 --iterations 100000 --max-minutes $RMIN --batch-size 16 --crop 32 --lr 5e-5
  --max-side 512 --log-every 200 --lpips-weight 3.0 --quantized-fraction 0.75
  --disc-steps 2 --disc-width 64 --disc-lr 5e-4 --disc-warmup 100"
$LA train-refiner $rc --threads 4 --out /tmp/r1 --cache /tmp/c1 --adversarial-weight 1.0 > /tmp/r1.log 2>&1 &
C=$!
$LA train-refiner $rc --threads 4 --out /tmp/r2 --cache /tmp/c2 --adversarial-weight 0.3 > /tmp/r2.log 2>&1 &
D=$!
sleep 60; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
wait $A; echo "s2a rc $?"; wait $B; echo "s2b rc $?"; wait $C; echo "r1 rc $?"; wait $D; echo "r2 rc $?"
for r in s2a s2b r1 r2; do
  echo "-- $r"; grep -v "^step" /tmp/$r.log | tail -22; grep "^step" /tmp/$r.log | awk 'NR%3==1' | tail -8
  cp /tmp/$r.log /tmp/$r/train.log 2>/dev/null
  (cd /tmp && tar czf $OUT/$r.tgz --exclude=checkpoint.pt $r)
done
ls -la $OUT; date -u
} 2>&1 | tee $OUT/all.log
