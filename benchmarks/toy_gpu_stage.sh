#!/usr/bin/env bash
# On a lent GPU machine (one `run` call, carry=[".whl"], timeout_s=600; fits a 15-minute lease with
# the machine's start): one pretraining stage of the toy base from the shipped weights with
# caption_context_noise=0.3 (docs/toy_backbone.md, "Subjects next to unseen words"), the sampler sweep
# on the calibration prompts, then both acceptance evaluations (the committed seed and the fresh one).
# Everything comes back as $OUT/stage6.tar plus the logs. Prepare here with benchmarks/gpu_wheels.sh.
set -euo pipefail
: "${OUT:?run this on the device machine, which sets OUT}"
BUDGET=${BUDGET:-330}  # seconds of training; the rest of the call is start-up and ~2 min of evaluation
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -m dreamrelation toy pretrain --output /tmp/stage6 --init-from src/dreamrelation/toyworld/weights/base \
  --size patch1_4x192 --time-budget "$BUDGET" --steps 1000000 --batch-size 128 --lr 3e-4 --min-lr 1e-5 \
  --warmup-steps 50 --ema-decay 0.999 --workers 14 --device cuda --seed 6 --eval-per-relation 5 \
  --checkpoint-every 60 --set caption_context_noise=0.3 2>&1 | tee "$OUT/pretrain.log"
python3 benchmarks/toy_base_sampler.py /tmp/stage6 --output "$OUT/sampler.json" --device cuda 2>&1 \
  | tee "$OUT/sampler.log"
rm -rf /tmp/stage6/checkpoint
tar -C /tmp -cf "$OUT/stage6.tar" stage6
