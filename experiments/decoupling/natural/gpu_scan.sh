#!/usr/bin/env bash
# The natural-text scale scan (scale-scan.yaml) on a lent GPU host, as one prepared command.
#   here:   ninja -C build-bench ablate && bench/gpu_check.sh --prepare
#           experiments/decoupling/natural/prepare.sh
#   device: experiments/decoupling/natural/gpu_scan.sh [SLOTS]
#           carry: build-bench/ablate build-bench/gpu-libs experiments/decoupling/data
# Trains the 11 points concurrently on the one GPU (SLOTS at a time, default 6; bf16 autocast),
# then copies every run's records (not its checkpoints) and the sweep report to $OUT (or
# /tmp/gpu-scan-out), to be put under experiments/decoupling/natural/runs/ here.
set -euo pipefail
cd "$(dirname "$0")/../../.."
source bench/gpu_env.sh
OUT=${OUT:-/tmp/gpu-scan-out}
RUNS=/tmp/gpu-scan-runs
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
$ABLATE --log-level warn sweep run experiments/decoupling/natural/scale-scan.yaml --slots "${1:-6}" --out "$RUNS" \
  --set device=cuda --set train.precision=bf16 || echo "gpu_scan: some points failed (sweep status below)"
$ABLATE sweep status experiments/decoupling/natural/scale-scan.yaml --out "$RUNS" --set device=cuda \
  --set train.precision=bf16 || true
mkdir -p "$OUT"
(cd "$RUNS" && find . -name checkpoints -prune -o -type f -print | tar -cf - -T -) | tar -C "$OUT" -xf -
$ABLATE sweep report experiments/decoupling/natural/scale-scan.yaml --runs "$RUNS" --set device=cuda \
  --set train.precision=bf16 --out "$OUT/report.html" --json "$OUT/report.json" --csv "$OUT/report.csv" || true
ls -la "$OUT"
