#!/bin/bash
# Device lease 3, second command on the warm machine: continue s2b (stage 2, decoder lr 3e-4) and both denoisers
# from the folders the first command left in /tmp, 3.7 minutes each, three side by side.
set -u; G=$(pwd)/.gpu; export PYTHONUNBUFFERED=1 LATENTARC_MODEL_DIR=$G/models PYTHONPATH=/tmp/shim; ln -sfn "$(pwd)" /tmp/shim/latentarc; LA=/tmp/la; { date -u
$LA train-codec $G/train --held-out $G/photos --init /tmp/s2b --train-decoder --decoder-lr 3e-4 --lpips-weight 1.0 --iterations 100000 --max-minutes 3.7 --batch 16 --crop 256 --lr 1e-4 --warmup 50 --save-every 100000 --save-minutes 100 --log-every 100 --threads 5 --eval-photos 1 --eval-crop 512 --name tae-f2-ft --out /tmp/s2c > /tmp/s2c.log 2>&1 &
A=$!
rc="$G/train --held-out $G/photos --loss decoded-lpips --base-steps 0.5,12.0 --iterations 100000 --max-minutes 3.7 --batch-size 16 --crop 32 --lr 5e-5 --max-side 512 --log-every 200 --lpips-weight 3.0 --quantized-fraction 0.75 --disc-steps 2 --disc-width 64 --disc-lr 5e-4 --disc-warmup 100 --threads 5"
$LA train-refiner $rc --init /tmp/r1 --out /tmp/r1b --cache /tmp/c1 --adversarial-weight 1.0 > /tmp/r1b.log 2>&1 &
C=$!
$LA train-refiner $rc --init /tmp/r2 --out /tmp/r2b --cache /tmp/c2 --adversarial-weight 0.3 > /tmp/r2b.log 2>&1 &
D=$!
wait $A; echo "s2c rc $?"; wait $C; echo "r1b rc $?"; wait $D; echo "r2b rc $?"
for r in s2c r1b r2b; do echo "-- $r"; grep -v "^step" /tmp/$r.log | tail -14; grep "^step" /tmp/$r.log | tail -3; cp /tmp/$r.log /tmp/$r/train.log; (cd /tmp && tar czf $OUT/$r.tgz --exclude=checkpoint.pt $r); done; date -u; } 2>&1 | tee $OUT/all2.log
