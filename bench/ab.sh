#!/usr/bin/env bash
# A/B of two Ablate binaries on one bench config, alternating (docs/performance.md):
#   bench/ab.sh OLD_BINARY NEW_BINARY ROUNDS CONFIG.yaml [ablate bench options...]
# e.g. cp build/ablate /tmp/ablate-old; (change, rebuild);
#      bench/ab.sh /tmp/ablate-old build/ablate 4 bench/configs/small.yaml --steps 10 --warmup 2
# Each round runs A then B as fresh processes; prints every tokens/s, the medians and B/A.
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: $0 OLD_BINARY NEW_BINARY ROUNDS CONFIG.yaml [bench options...]" >&2
  exit 2
fi
a=$1 b=$2 rounds=$3
shift 3
for _ in $(seq "$rounds"); do
  for side in A B; do
    bin=$a
    [ "$side" = B ] && bin=$b
    echo "$side $("$bin" bench "$@" --json 2>/dev/null | tail -1)"
  done
done | python3 -c '
import json, statistics, sys
tps = {"A": [], "B": []}
for line in sys.stdin:
    side, js = line.split(" ", 1)
    tps[side].append(json.loads(js)["tokens_per_s"])
a, b = statistics.median(tps["A"]), statistics.median(tps["B"])
for side in "AB":
    print(side, " ".join(f"{t:.0f}" for t in tps[side]), f"median {statistics.median(tps[side]):.0f}")
print(f"B/A {b / a:.3f}")'
