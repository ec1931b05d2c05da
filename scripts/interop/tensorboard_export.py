"""metrics.jsonl -> TensorBoard event files, written by torch.utils.tensorboard.

Run by `ablate export tensorboard RUN_DIR [--out DIR]` (docs/interop.md) with the project's
virtual environment, which has the `tensorboard` package (scripts/setup.sh). Usable on its own:

    .venv/bin/python scripts/interop/tensorboard_export.py --metrics RUN/metrics.jsonl --out DIR

Each record of metrics.jsonl (docs/training.md) becomes scalars at global step = its `step`:

    split train  loss, lr, grad_norm, tokens_per_s, tokens   -> train/<field>
    split val    loss, ppl                                   -> val/<field>
    split probe  probe_s, probe.loss                         -> probe/probe_s, probe/loss
                 probe.spike.magnitude, .massive_total,
                 .spike_channel_magnitude                    -> spike/<field>
                 probe.spike.blocks[b].top1                  -> spike/top1_per_block/block_BB
                 probe.sink.mass, .sink_eps                  -> sink/<field>
                 probe.sink.mass_per_layer[l]                -> sink/mass_per_layer/layer_LL
                 probe.sink.sink_eps_per_layer[l]            -> sink/sink_eps_per_layer/layer_LL

A field that is missing, null or not a number is skipped (older runs, non-finite values).
TensorBoard stores scalars as float32. Errors: one line on stderr, exit status 2.
"""

import argparse
import json
import math
import sys


def fail(message):
    print(f"ablate: error: {message}", file=sys.stderr)
    sys.exit(2)


def number(x):
    """x as a float when it is a finite JSON number (not a bool), else None."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def get(record, path):
    for key in path.split("."):
        if not isinstance(record, dict) or key not in record:
            return None
        record = record[key]
    return record


# (split, field path in the record, tag) for single values.
SCALARS = [
    ("train", "loss", "train/loss"),
    ("train", "lr", "train/lr"),
    ("train", "grad_norm", "train/grad_norm"),
    ("train", "tokens_per_s", "train/tokens_per_s"),
    ("train", "tokens", "train/tokens"),
    ("val", "loss", "val/loss"),
    ("val", "ppl", "val/ppl"),
    ("probe", "probe_s", "probe/probe_s"),
    ("probe", "probe.loss", "probe/loss"),
    ("probe", "probe.spike.magnitude", "spike/magnitude"),
    ("probe", "probe.spike.massive_total", "spike/massive_total"),
    ("probe", "probe.spike.spike_channel_magnitude", "spike/spike_channel_magnitude"),
    ("probe", "probe.sink.mass", "sink/mass"),
    ("probe", "probe.sink.sink_eps", "sink/sink_eps"),
]
# (split, path of a list, tag prefix, index label, key inside each element or None).
SERIES = [
    ("probe", "probe.spike.blocks", "spike/top1_per_block", "block", "top1"),
    ("probe", "probe.sink.mass_per_layer", "sink/mass_per_layer", "layer", None),
    ("probe", "probe.sink.sink_eps_per_layer", "sink/sink_eps_per_layer", "layer", None),
]


def scalars(record):
    """Yields (tag, value) for one metrics.jsonl record."""
    split = record.get("split")
    for s, path, tag in SCALARS:
        if s == split:
            v = number(get(record, path))
            if v is not None:
                yield tag, v
    for s, path, prefix, label, key in SERIES:
        items = get(record, path) if s == split else None
        if not isinstance(items, list):
            continue
        for i, item in enumerate(items):
            v = number(item.get(key) if key and isinstance(item, dict) else item)
            if v is not None:
                yield f"{prefix}/{label}_{i:02d}", v


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--metrics", required=True, help="metrics.jsonl of a run")
    ap.add_argument("--out", required=True, help="directory for the event file")
    ap.add_argument("--name", default="", help="run name (recorded as a text summary)")
    a = ap.parse_args()

    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        fail(f"{sys.executable}: cannot import torch.utils.tensorboard ({e}); run scripts/setup.sh")

    records = []
    try:
        with open(a.metrics, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except OSError as e:
        fail(f"{a.metrics}: {e.strerror}")
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if n == len(lines) or (n == len(lines) - 1 and not lines[-1]):
                continue  # a torn last line (crash mid-write), as data::read_metrics skips it
            fail(f"{a.metrics}:{n}: not a JSON object")

    writer = SummaryWriter(log_dir=a.out)
    count = 0
    for r in records:
        step = r.get("step") if isinstance(r, dict) else None
        if isinstance(step, bool) or not isinstance(step, int):
            continue
        for tag, v in scalars(r):
            writer.add_scalar(tag, v, global_step=step)
            count += 1
    if a.name:
        writer.add_text("run", a.name, global_step=0)
    writer.close()
    print(f"{count} scalars from {len(records)} records")


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except Exception as e:  # one line, like every other ablate error (e.g. --out not writable)
        fail(f"export tensorboard: {type(e).__name__}: {e}")
