#!/bin/bash
# One device lease: GPU speed of the codec (bench-speed), then two stage-1 train-codec chunks side by side.
# Env: PY (python), OUT (results), MAXMIN (training minutes), BENCH_S (bench cap), THREADS, EVALN, EVALCROP
set -u
PY=${PY:-python3}; MAXMIN=${MAXMIN:-5}; BENCH_S=${BENCH_S:-150}; THREADS=${THREADS:-4}
EVALN=${EVALN:-3}; EVALCROP=${EVALCROP:-512}
ROOT=$(pwd); G=$ROOT/.gpu
export PYTHONUNBUFFERED=1 LATENTARC_MODEL_DIR=$G/models
mkdir -p /tmp/shim && ln -sfn "$ROOT" /tmp/shim/latentarc
export PYTHONPATH=/tmp/shim${PYTHONPATH:+:$PYTHONPATH}
printf '#!/bin/bash\nexec %s -c "import sys; from latentarc.jobs.cli import main; sys.exit(main(sys.argv[1:]))" "$@"\n' "$PY" > /tmp/la
chmod +x /tmp/la; LA=/tmp/la
{
date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tail -1; nproc
$PY -c 'import torch, numpy, constriction, google_crc32c; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "numpy", numpy.__version__)'

echo "== smoke: 2 steps of train-codec on the default device"
$LA train-codec $G/train --held-out $G/photos --iterations 2 --batch 2 --crop 64 --sens-window 8 --eval-photos 0 \
  --out /tmp/smoke --log-every 1 > /tmp/smoke.log 2>&1; SMOKE=$?; echo "smoke rc $SMOKE"; tail -5 /tmp/smoke.log

echo "== bench-speed"
mkdir -p /tmp/bench
timeout $BENCH_S $LA bench-speed $G/photos --out /tmp/bench --threads 16 \
  --entropy per-channel,tae-f2-ctx --variant cpu16:device=cpu --variant bf16:encoder_precision=bfloat16 \
  > /tmp/bench/log 2>&1; echo "bench rc $?"; cat /tmp/bench/log
(cd /tmp && tar czf $OUT/bench.tgz bench)

[ $SMOKE -eq 0 ] || { echo "smoke failed: no training"; exit 1; }
echo "== train-codec x2, $MAXMIN min each"
common="$G/train --held-out $G/photos --iterations 100000 --max-minutes $MAXMIN --batch 16 --crop 256
  --lr 1e-4 --warmup 50 --save-every 500 --save-minutes 2 --log-every 50 --threads $THREADS
  --eval-photos $EVALN --eval-crop $EVALCROP"
$LA train-codec $common --out /tmp/run-a --name tae-f2-le > /tmp/run-a.log 2>&1 &
A=$!
$LA train-codec $common --out /tmp/run-b --name tae-f2-le-lpips --lpips-weight 1.0 > /tmp/run-b.log 2>&1 &
B=$!
wait $A; echo "run-a rc $?"; wait $B; echo "run-b rc $?"
for r in a b; do
  echo "-- run-$r"; grep -v "^step" /tmp/run-$r.log | tail -25; grep "^step" /tmp/run-$r.log | awk 'NR%4==1' | tail -12
  cp /tmp/run-$r.log /tmp/run-$r/train.log 2>/dev/null
  (cd /tmp && tar czf $OUT/run-$r.tgz --exclude=checkpoint.pt run-$r)
  [ -f /tmp/run-$r/checkpoint.pt ] && cp /tmp/run-$r/checkpoint.pt $OUT/ckpt-$r.pt
done
ls -la $OUT; date -u
} 2>&1 | tee $OUT/all.log
