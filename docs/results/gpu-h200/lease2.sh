#!/bin/bash
# Device lease 2: three realistic-denoiser candidates trained side by side (train-refiner, time-boxed).
set -u
PY=${PY:-python3}; MAXMIN=${MAXMIN:-3}; ITERS=${ITERS:-6000}
ROOT=$(pwd); G=$ROOT/.gpu
export PYTHONUNBUFFERED=1 LATENTARC_MODEL_DIR=$G/models
mkdir -p /tmp/shim && ln -sfn "$ROOT" /tmp/shim/latentarc
export PYTHONPATH=/tmp/shim${PYTHONPATH:+:$PYTHONPATH}
printf '#!/bin/bash\nexec %s -c "import sys; from latentarc.jobs.cli import main; sys.exit(main(sys.argv[1:]))" "$@"\n' "$PY" > /tmp/la
chmod +x /tmp/la; LA=/tmp/la
{
date -u
common="$G/train --held-out $G/photos --init $ROOT/codec/weights/tae-f2-denoiser --loss decoded-lpips
  --base-steps 1.0,12.0 --iterations $ITERS --max-minutes $MAXMIN --batch-size 16 --crop 32 --lr 1e-4
  --max-side 512 --holdout-every 20 --log-every 200 ${LIMIT:+--limit $LIMIT}"
$LA train-refiner $common --out /tmp/g1 --cache /tmp/c1 --adversarial-weight 0.3 --lpips-weight 1.0 --quantized-fraction 0.75 > /tmp/g1.log 2>&1 &
P1=$!
$LA train-refiner $common --out /tmp/g2 --cache /tmp/c2 --adversarial-weight 1.0 --lpips-weight 1.0 --quantized-fraction 0.5 > /tmp/g2.log 2>&1 &
P2=$!
$LA train-refiner $common --out /tmp/g3 --cache /tmp/c3 --adversarial-weight 0.3 --lpips-weight 3.0 --quantized-fraction 0.75 > /tmp/g3.log 2>&1 &
P3=$!
wait $P1; echo "g1 rc $?"; wait $P2; echo "g2 rc $?"; wait $P3; echo "g3 rc $?"
for r in g1 g2 g3; do
  echo "-- $r"; grep -v "^step" /tmp/$r.log | tail -8; grep "^step" /tmp/$r.log | tail -6
  cp /tmp/$r.log /tmp/$r/train.log 2>/dev/null
  (cd /tmp && tar czf $OUT/$r.tgz --exclude=checkpoint.pt $r)
done
ls -la $OUT; date -u
} 2>&1 | tee $OUT/all.log
