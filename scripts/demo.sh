#!/usr/bin/env bash
# README command 1: set up, build, and run the built-in demo ablation (experiments/demo-ablation.yaml:
# the demo config, pre-norm, against sandwich norm on the synthetic language) on the CPU, then
# print its table. Run again: finished points are kept, interrupted ones resume.
# Arguments: `--set KEY=VALUE` overrides for both points (new run ids), e.g.
#   scripts/demo.sh --set train.steps=1200
set -euo pipefail
sets=()
while (($#)); do
  case "$1" in
    --set)
      (($# >= 2)) || { echo "scripts/demo.sh: --set needs KEY=VALUE" >&2; exit 2; }
      sets+=(--set "$2")
      shift 2 ;;
    --set=*) sets+=("$1"); shift ;;
    *) echo "scripts/demo.sh: unknown argument '$1' (it takes --set KEY=VALUE; any other sweep:" \
            "build/ablate sweep run experiments/demo-ablation.yaml --help)" >&2
       exit 2 ;;
  esac
done
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/build.sh" ablate
cd "$root"
ablate="${ABLATE_BUILD_DIR:-$root/build}/ablate"
"$ablate" sweep run experiments/demo-ablation.yaml --out runs/demo-ablation --slots 2 --progress 15 ${sets[@]+"${sets[@]}"}
exec "$ablate" sweep report experiments/demo-ablation.yaml --runs runs/demo-ablation ${sets[@]+"${sets[@]}"}
