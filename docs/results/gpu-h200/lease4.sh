#!/bin/bash
# Device lease 4 (prepared, not yet run): stage 2 with the LPIPS term priced like MSE (--lpips-form log, W = 2),
# (a) continuing the CPU stage-2 model that first beat the stock codec on PSNR and LPIPS (docs/training.md), at GPU
# batch, and (b) afresh from stage1-lpips at the GPU learning rates; and the realistic denoiser (the shipped
# detail-energy model) trained through its own two sampler steps with the strong discriminator at GPU batch, the
# detail term kept (--unrolled-fraction 0.5, adversarial 1.0, detail 3): texture of the original's kind at
# 0.05 bpp. Three side by side.
# Both stage-2 runs use bfloat16 autocast (--precision: twice the steps per second on the CPU; weights and loss
# stay float32).
# Carry as in lease 3 (.gpu/ models + photos + a training subset, .whl/ wheels); OUT is the device's result folder.
# The tracked tree is 42 MB now (the CPU stage-2 model added 10.7 MB): carry a smaller training subset
# (every twelfth photo) to stay inside the 64 MiB a lease carries.
# Every run folder comes back whole (weights and checkpoint) so the next session can continue it:
# keep what is worth continuing inside the repository (docs/results/gpu-h200/lease4/), /tmp does not survive.
set -u
PY=${PY:-python3}; CMIN=${CMIN:-7}; RMIN=${RMIN:-7}
ROOT=$(pwd); G=$ROOT/.gpu
export PYTHONUNBUFFERED=1 LATENTARC_MODEL_DIR=$G/models
mkdir -p /tmp/shim && ln -sfn "$ROOT" /tmp/shim/latentarc
export PYTHONPATH=/tmp/shim${PYTHONPATH:+:$PYTHONPATH}
printf '#!/bin/bash\nexec %s -c "import sys; from latentarc.jobs.cli import main; sys.exit(main(sys.argv[1:]))" "$@"\n' "$PY" > /tmp/la
chmod +x /tmp/la; LA=/tmp/la
{
date -u; nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
$PY -m pip install -q --no-deps $ROOT/.whl/*.whl 2>&1 | tail -2
cc="$G/train --held-out $G/photos --train-decoder --lpips-form log --lpips-weight 2 --iterations 100000
  --max-minutes $CMIN --batch 16 --crop 256 --warmup 50 --save-every 100000 --save-minutes 100 --log-every 100
  --threads 5 --eval-photos 1 --eval-crop 512 --name tae-f2-ft --precision bfloat16"
$LA train-codec $cc --init $ROOT/docs/results/cpu-stage2-log2 --lr 3e-5 --decoder-lr 1e-4 --out /tmp/s2cont \
  > /tmp/s2cont.log 2>&1 &
A=$!
$LA train-codec $cc --init $ROOT/docs/results/gpu-h200/stage1-lpips --lr 1e-4 --decoder-lr 3e-4 --out /tmp/s2l2 \
  > /tmp/s2l2.log 2>&1 &
B=$!
$LA train-refiner $G/train --held-out $G/photos --init $ROOT/codec/weights/tae-f2-realistic --name tae-f2-realistic \
  --loss decoded-lpips --lpips-weight 3 --detail-weight 3 --adversarial-weight 1.0 --disc-steps 2 --disc-width 64 --disc-lr 5e-4 \
  --disc-warmup 100 --base-steps 0.5,12 --quantized-fraction 0.75 --unrolled-fraction 0.5 --batch-size 16 --crop 32 \
  --lr 5e-5 --max-side 512 --iterations 100000 --max-minutes $RMIN --log-every 200 --threads 5 \
  --out /tmp/r4u --cache /tmp/c4 > /tmp/r4u.log 2>&1 &
C=$!
sleep 60; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
wait $A; echo "s2cont rc $?"; wait $B; echo "s2l2 rc $?"; wait $C; echo "r4u rc $?"
for r in s2cont s2l2 r4u; do
  echo "-- $r"; grep -v "^step" /tmp/$r.log | tail -22; grep "^step" /tmp/$r.log | awk 'NR%3==1' | tail -8
  cp /tmp/$r.log /tmp/$r/train.log 2>/dev/null
  (cd /tmp && tar czf $OUT/$r.tgz $r)
done
ls -la $OUT; date -u
} 2>&1 | tee $OUT/all.log
