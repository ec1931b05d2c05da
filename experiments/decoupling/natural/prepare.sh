#!/usr/bin/env bash
# The natural-text tier's data (issue 10 §1(b)): a 4,096-piece SentencePiece BPE and token shards
# of ../shared/corpora (brown-nonfiction + nlpcorpus: ~3.9 M BPE tokens, 13.5 M bytes), once
# with the BPE and once byte-level, each with a 1 % validation split by document. Writes
# experiments/decoupling/data/{bpe4k.model,bpe4k/,byte/} (ignored by git). Any other English
# text works the same way: pass the files as arguments instead (CORPUS below).
#
#   experiments/decoupling/natural/prepare.sh [FILE.txt ...]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
ABLATE=${ABLATE:-$ROOT/build/ablate}
OUT=$ROOT/experiments/decoupling/data
if [[ $# -gt 0 ]]; then CORPUS=("$@"); else
  CORPUS=("$ROOT/../shared/corpora/brown-nonfiction.txt" "$ROOT/../shared/corpora/nlpcorpus.txt"); fi
for f in "${CORPUS[@]}"; do [[ -r "$f" ]] || { echo "prepare.sh: cannot read $f" >&2; exit 2; }; done
mkdir -p "$OUT"
[[ -f "$OUT/bpe4k.model" ]] ||
  "$ABLATE" data tokenizer --input "${CORPUS[@]}" --vocab-size 4096 --out "$OUT/bpe4k.model"
[[ -d "$OUT/bpe4k" ]] ||
  "$ABLATE" data prepare --input "${CORPUS[@]}" --tokenizer "$OUT/bpe4k.model" --out "$OUT/bpe4k" --val-fraction 0.01
[[ -d "$OUT/byte" ]] ||
  "$ABLATE" data prepare --input "${CORPUS[@]}" --tokenizer byte --out "$OUT/byte" --val-fraction 0.01
ls -la "$OUT" "$OUT/bpe4k" "$OUT/byte"
