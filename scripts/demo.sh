#!/usr/bin/env bash
# README command 1: set up, build, and train the built-in demo (configs/demo.yaml) on the CPU.
# Extra arguments go to `ablate train`, e.g. scripts/demo.sh --set model.norm.placement=sandwich
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/build.sh" ablate
cd "$root"
exec "${ABLATE_BUILD_DIR:-$root/build}/ablate" train configs/demo.yaml "$@"
