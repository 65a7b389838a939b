#!/usr/bin/env bash
# The recipes' toy comparison (docs/toyworld.md, "What carries the relation"): two queues side by side,
# one torch thread each, seeds 0-2, each run resumable (rerun this script to resume).
# Usage: [SEEDS="1 2"] benchmarks/toy_variants.sh [OUTPUT]   (default runs/toy-variants)
# Seeds and rows already in docs/toy_variants_results.json need not run again (the report adds them).
set -uo pipefail
out=${1:-runs/toy-variants}
export OMP_NUM_THREADS=1
toy() { dreamrelation toy benchmark --steps 1600 --seeds "$1" --methods "$2" --relation "$3" --output "$out/$2"; }
seeds=${SEEDS:-0 1 2}
queue_a() {
  for seed in $seeds; do
    toy "$seed" relation_only all
    # all eight: its reuse check failed on 2026-12-06 (docs/toyworld.md), so no ablation run is reused
    toy "$seed" relation_ffn all
  done
}
queue_b() {
  for seed in $seeds; do
    toy "$seed" dreamrelation_inference_steps all
    toy "$seed" dreamrelation_official_optimizer all
  done
}
mkdir -p "$out"
queue_a > "$out/queue_a.log" 2>&1 &
queue_b > "$out/queue_b.log" 2>&1 &
wait
