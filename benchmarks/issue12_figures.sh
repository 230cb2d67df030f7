#!/usr/bin/env bash
# Issue 12's CPU figures in one go: small/conv-heavy models vs timm and the fp32 matmul rate,
# bf16 ViT-S/16 vs timm autocast and the bf16 matmul rate, train.compile vs eager.
# Each scenario is ONE interleaved run (medians, min-max); JSON goes to OUT (default bench-out/).
#   benchmarks/issue12_figures.sh                      # quiet machine: 2 threads, wall clock
#   THREADS=1 CLOCK=cpu benchmarks/issue12_figures.sh  # shared machine: images per CPU-second
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${THREADS:-2}"
clock="${CLOCK:-wall}"
repeats="${REPEATS:-5}"
out="${OUT:-bench-out}"
models="${MODELS:-pit-ti,maxvit-t,mobilevit-xs,twins-svt-s,levit-128s}"
mkdir -p "$out"
export OMP_NUM_THREADS="$threads"
common=(--threads "$threads" --clock "$clock" --repeats "$repeats")
date -u +"start %FT%TZ; load: $(cut -d' ' -f1-3 /proc/loadavg)"
for batch in 16 8; do
  benchmarks/peer_python.sh benchmarks/deploy_speed.py --scenario small --models "$models" \
    --batch "$batch" --iters 2 "${common[@]}" --json "$out/small-b$batch.json"
  models="pit-ti,maxvit-t"  # batch 8 only for the two profiled in this round
done
for batch in 16 8; do
  benchmarks/peer_python.sh benchmarks/deploy_speed.py --scenario layout --batch "$batch" \
    --iters 1 "${common[@]}" --json "$out/layout-b$batch.json"
done
benchmarks/peer_python.sh benchmarks/deploy_speed.py --scenario bf16 --compiled --iters 2 "${common[@]}" \
  --json "$out/bf16.json"
benchmarks/peer_python.sh benchmarks/deploy_speed.py --scenario compile --iters 3 "${common[@]}" \
  --json "$out/compile.json"
date -u +"end %FT%TZ; load: $(cut -d' ' -f1-3 /proc/loadavg)"
