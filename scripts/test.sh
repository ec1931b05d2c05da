#!/usr/bin/env bash
# README command 2: set up, build, and run the whole test suite (CTest over the Catch2 binaries
# and the Python tests of tests/experiments).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/build.sh"
ctest --test-dir "${ABLATE_BUILD_DIR:-$root/build}" --output-on-failure "$@"
