"""Reads `ablate export tensorboard` output with TensorBoard's own reader and checks it against
metrics.jsonl.

    check_tensorboard.py EVENT_DIR METRICS.jsonl

The expected tags are spelled out here independently of scripts/interop/tensorboard_export.py
(docs/interop.md lists them). Every value must equal the float32 rounding of the metrics.jsonl
value at the same step, and every tag must hold exactly one value per record. Prints one JSON
line (tags, values checked, problems); exit status 0 when there are no problems.
"""

import json
import math
import sys

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def expected(records):
    """{tag: {step: value}} from metrics.jsonl, by the documented mapping."""
    want = {}

    def put(tag, step, v):
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            want.setdefault(tag, {})[step] = v

    for r in records:
        step = r["step"]
        if r["split"] == "train":
            for k in ("loss", "lr", "grad_norm", "tokens_per_s", "tokens"):
                put(f"train/{k}", step, r.get(k))
        elif r["split"] == "val":
            put("val/loss", step, r.get("loss"))
            put("val/ppl", step, r.get("ppl"))
        elif r["split"] == "probe":
            p = r["probe"]
            put("probe/probe_s", step, r.get("probe_s"))
            put("probe/loss", step, p.get("loss"))
            put("spike/magnitude", step, p["spike"]["magnitude"])
            put("spike/massive_total", step, p["spike"]["massive_total"])
            put("spike/spike_channel_magnitude", step, p["spike"]["spike_channel_magnitude"])
            for b, block in enumerate(p["spike"]["blocks"]):
                put(f"spike/top1_per_block/block_{b:02d}", step, block["top1"])
            put("sink/mass", step, p["sink"]["mass"])
            put("sink/sink_eps", step, p["sink"]["sink_eps"])
            for l, v in enumerate(p["sink"]["mass_per_layer"]):
                put(f"sink/mass_per_layer/layer_{l:02d}", step, v)
            for l, v in enumerate(p["sink"]["sink_eps_per_layer"]):
                put(f"sink/sink_eps_per_layer/layer_{l:02d}", step, v)
    return want


def main():
    event_dir, metrics = sys.argv[1], sys.argv[2]
    records = [json.loads(line) for line in open(metrics) if line.strip()]
    want = expected(records)
    acc = EventAccumulator(event_dir, size_guidance={"scalars": 0})
    acc.Reload()
    have = acc.Tags()["scalars"]
    problems, checked = [], 0
    for tag in sorted(set(have) - set(want)):
        problems.append(f"unexpected tag {tag}")
    for tag, values in sorted(want.items()):
        if tag not in have:
            problems.append(f"missing tag {tag}")
            continue
        events = acc.Scalars(tag)
        steps = [e.step for e in events]
        if sorted(steps) != sorted(values):
            problems.append(f"{tag}: steps {steps} != {sorted(values)}")
            continue
        for e in events:
            checked += 1
            if np.float32(e.value) != np.float32(values[e.step]):
                problems.append(f"{tag} @ {e.step}: {e.value} != {values[e.step]}")
    out = {"tags": len(have), "values": checked, "records": len(records),
           "problems": problems[:20], "sample": {t: want[t] for t in ("train/loss", "sink/sink_eps_per_layer/layer_00")
                                                 if t in want}}
    print(json.dumps(out))
    sys.exit(0 if not problems and checked > 0 else 1)


if __name__ == "__main__":
    main()
