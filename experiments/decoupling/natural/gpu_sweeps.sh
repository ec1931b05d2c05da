#!/usr/bin/env bash
# Natural-tier sweeps on a lent GPU host, as one prepared command: the scale scan by default,
# or the sweep files given (e.g. every natural-*.yaml once the scan has fixed the scale).
#   here:   ninja -C build-bench ablate && bench/gpu_check.sh --prepare
#           experiments/decoupling/natural/prepare.sh
#   device: experiments/decoupling/natural/gpu_sweeps.sh [SLOTS [SWEEP.yaml ...]]
#           carry: build-bench/ablate build-bench/gpu-libs experiments/decoupling/data
# Trains each sweep's points concurrently on the one GPU (SLOTS at a time, default 6; bf16
# autocast), then copies every run's records (not its checkpoints) and the sweep report to
# $OUT/<sweep name>/ (OUT defaults to /tmp/gpu-sweeps-out), to be put under
# experiments/decoupling/natural/runs/<sweep name>/ here. The runs carry `device=cuda` and
# `train.precision=bf16` in their ids, so make_results.py needs them as
# `--natural-set device=cuda --natural-set train.precision=bf16`.
set -euo pipefail
cd "$(dirname "$0")/../../.."
source bench/gpu_env.sh
OUT=${OUT:-/tmp/gpu-sweeps-out}
SLOTS=${1:-6}
shift || true
SWEEPS=("$@")
[[ ${#SWEEPS[@]} -gt 0 ]] || SWEEPS=(experiments/decoupling/natural/scan.yaml)
SET=(--set device=cuda --set train.precision=bf16)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
for sweep in "${SWEEPS[@]}"; do
  name=$(sed -n 's/^name: *//p' "$sweep")
  runs=/tmp/gpu-sweeps-runs/$name
  $ABLATE --log-level warn sweep run "$sweep" --slots "$SLOTS" --out "$runs" "${SET[@]}" ||
    echo "gpu_sweeps: $name: some points failed (sweep status below)"
  $ABLATE sweep status "$sweep" --out "$runs" "${SET[@]}" || true
  mkdir -p "$OUT/$name"
  (cd "$runs" && find . -name checkpoints -prune -o -type f -print | tar -cf - -T -) | tar -C "$OUT/$name" -xf -
  $ABLATE sweep report "$sweep" --runs "$runs" "${SET[@]}" --out "$OUT/$name/report.html" \
    --json "$OUT/$name/report.json" --csv "$OUT/$name/report.csv" || true
done
ls -laR "$OUT" | head -50
