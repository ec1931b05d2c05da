#!/usr/bin/env bash
# The GPU half of issue 8, prepared for an H200 host (docs/performance.md, "GPU plan").
# The host has torch 2.11 (cu130) in its system Python and no network, no yaml-cpp, spdlog or
# sentencepiece, so Ablate is built here and carried over with the shared libraries it needs
# beyond LibTorch:
#
#   here:   ninja -C build-bench ablate && bench/gpu_check.sh --prepare   # fills build-bench/gpu-libs
#   device: bench/gpu_check.sh                                          # carry: build-bench/ablate,
#                                                                       #        build-bench/gpu-libs
# It races Ablate (bf16 autocast, TF32) against the PyTorch reference, eager and torch.compile,
# at the GPT-2-small shape (bench/configs/gpt2-small.yaml: 12 layers, d 768, 12 heads, T 1024,
# 16 x 1024 tokens/step), for the baseline and the conditional gate, then prints the SDPA backend
# and the bench table (phase split, peak memory, MFU against the H200's 989 TFLOP/s dense bf16).
set -euo pipefail
cd "$(dirname "$0")/.."
LIBS=build-bench/gpu-libs
if [[ "${1:-}" == "--prepare" ]]; then
  mkdir -p "$LIBS"
  # Everything ablate links that is neither LibTorch/CUDA (the host's torch provides those) nor libc.
  ldd build-bench/ablate | awk '/=>/ {print $3}' |
    grep -Ev '/(torch|nvidia)/|libc\.so|libm\.so|libdl|libpthread|librt|ld-linux|libstdc\+\+|libgcc_s' |
    xargs -r -I{} cp -L {} "$LIBS/"
  ls -la "$LIBS"
  exit 0
fi
source bench/gpu_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())'
$ABLATE version || { echo "ablate does not start here (missing libraries?): ldd:"; ldd $ABLATE | grep 'not found'; exit 1; }
# Data parallelism through NCCL at world size 1 (issue 6): the same trainer path as N GPUs
# (process group, Reducer), 50 demo steps; the loss curve must match the plain run's.
$ABLATE --log-level warn train configs/demo.yaml --set device=cuda --set train.steps=50 --run-dir /tmp/gpu-plain
$ABLATE launch --nproc 1 -- --log-level info train configs/demo.yaml --set device=cuda --set train.steps=50 \
  --run-dir /tmp/gpu-nccl
$PY - <<'PYEOF'
import json
def losses(d):
    return [(r["step"], r["loss"]) for r in map(json.loads, open(d + "/metrics.jsonl")) if r["split"] == "train"]
a, b = losses("/tmp/gpu-plain"), losses("/tmp/gpu-nccl")
print("NCCL world-size-1 vs plain: steps", len(a), len(b), "max |loss diff|",
      max(abs(x[1] - y[1]) for x, y in zip(a, b)))
PYEOF
# The phase split and peak memory, with device syncs between phases (throughput below is without).
$ABLATE bench bench/configs/gpt2-small.yaml --steps 10 --warmup 3
$PY -c '
import torch, torch.nn.functional as F
q = torch.randn(16, 12, 1024, 64, device="cuda", dtype=torch.bfloat16)
print("SDPA backend chosen for (16, 12, 1024, 64) bf16 causal:", torch._fused_sdp_choice(q, q, q, is_causal=True),
      "(0 math, 1 flash, 2 efficient, 3 cuDNN)")'
# Every attention variant and the gates at the same shape (issue 8: sink-free and gated within 10 %
# of softmax's tokens/s), one process each, no phase syncs.
for v in "" "model.attention.gate.kind=conditional" "model.attention.variant=sigmoid" \
         "model.attention.variant=softmax1" "model.attention.variant=k_bias" "model.attention.variant=kv_bias" \
         "model.attention.variant=sink_token"; do
  printf '%-40s ' "${v:-softmax (baseline)}"
  $ABLATE bench bench/configs/gpt2-small.yaml --steps 10 --warmup 3 --no-phase-sync ${v:+--set $v} | grep 'tokens/s'
done
# The race: alternating, fresh processes, the same weights and batches; losses compared first.
$PY bench/race.py --configs gpt2-small --rounds 3 --steps 20 --warmup 5 --compile-timeout 300 \
  --ablate-args "--no-phase-sync" --ref-args "--device cuda" --python "$PY"
