"""Loads an `ablate export hf` directory with transformers and compares it with Ablate.

    check_hf.py EXPORT_DIR REFERENCE.safetensors [--tokenizer TOKENS.json]

REFERENCE holds `tokens` (B, T) int64 and `logits` (B, T, V) float32 computed by Ablate's own
forward pass (tests/interop/export_test.cpp). Prints one JSON line: the architecture class, the
max |logit difference| for the sdpa and eager attention implementations, the max |logit|, the
load report (missing / unexpected keys) and, with --tokenizer, whether AutoTokenizer's ids for
each text equal Ablate's. Exit status 0 when everything matches (diff <= 1e-4), else 1.
"""

import argparse
import json
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

TOLERANCE = 1e-4


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("export_dir")
    ap.add_argument("reference")
    ap.add_argument("--tokenizer", help="JSON list of {text, ids}: ids as Ablate encodes text (with BOS)")
    a = ap.parse_args()

    torch.manual_seed(0)
    ref = load_file(a.reference)
    tokens, want = ref["tokens"], ref["logits"]
    report = {"ok": True, "diff": {}}
    for impl in ("sdpa", "eager"):
        model, info = AutoModelForCausalLM.from_pretrained(
            a.export_dir, dtype=torch.float32, attn_implementation=impl, output_loading_info=True)
        model.eval()
        with torch.no_grad():
            got = model(input_ids=tokens).logits
        diff = (got - want).abs().max().item()
        report["architecture"] = type(model).__name__
        report["diff"][impl] = diff
        report["loading"] = {k: sorted(v) for k, v in info.items() if v}
        report["ok"] &= got.shape == want.shape and diff <= TOLERANCE and not report["loading"]
    report["max_abs_diff"] = max(report["diff"].values())
    report["max_abs_logit"] = want.abs().max().item()
    report["shape"] = list(want.shape)

    if a.tokenizer:
        tok = AutoTokenizer.from_pretrained(a.export_dir)
        cases = json.load(open(a.tokenizer))
        report["tokenizer"] = type(tok).__name__
        report["tokenizer_mismatches"] = [
            {"text": c["text"], "ablate": c["ids"], "transformers": tok(c["text"])["input_ids"]}
            for c in cases if tok(c["text"])["input_ids"] != c["ids"]]
        report["ok"] &= not report["tokenizer_mismatches"]

    print(json.dumps(report))
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
