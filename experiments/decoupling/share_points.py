#!/usr/bin/env python3
"""Reuses finished points that several sweeps have in common (the shared baseline).

Every sweep of a tier of experiments/decoupling/ has a baseline point per seed (pre-norm
RMSNorm, softmax, SwiGLU, no gate, full loss window, weight decay 0; 2 heads x 32 on the
synthetic tier, the natural tier's natural/base.yaml) whose resolved configuration is the same
in every sweep of the tier: only `name` differs, and the id's
hash suffix (a hash of the resolved configuration) is equal. Training is deterministic, so
training it again gives the same run bit for bit (checked once: gates/kind=none and
sink-free/variant=softmax, trained separately, have identical metrics.jsonl records).

For every planned point without a run directory, this script looks for a finished point of
another sweep with the same hash suffix (the first 8 hex digits of the SHA-256 of the resolved
configuration, src/sweep/sweep.cpp) and the same seed in its id, and copies the run directory with `name` and the `done` marker rewritten to the new id (its checkpoints as hard links).
It never overwrites an existing directory. A copied run keeps a `shared_from` file naming its
source.

    python3 experiments/decoupling/share_points.py [--ablate build/ablate] [--dry-run] [--natural]
"""
import argparse
import concurrent.futures
import functools
import json
import math
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
AXES = ["norm-placement", "norm-type", "ffn-type", "head-dim", "gates", "loss-window",
        "weight-decay", "sink-free"]
# Axes of the natural tier only: DyT at an alpha0 that trains at that scale (natural/natural-dyt.yaml).
NATURAL_ONLY = ["dyt"]
# The synthetic tier's sweeps, then the natural tier's (natural/natural-<axis>.yaml, sharing the
# natural baseline among themselves and with the scale scan's centre, natural/scan.yaml point 0;
# configs of different tiers never hash alike).
SWEEPS = AXES + ["natural/natural-" + a for a in AXES + NATURAL_ONLY] + ["natural/scan"]


@functools.lru_cache(maxsize=None)
def plan_text(ablate, sweep):
    """`ablate sweep plan` of a sweep (sweep: its path under experiments/decoupling without .yaml), once
    per process: a plan depends only on the sweep file and its base configs."""
    return subprocess.run([ablate, "sweep", "plan", os.path.join(HERE, sweep + ".yaml")],
                          cwd=ROOT, capture_output=True, text=True, check=True).stdout


def plan_all(ablate, sweeps):
    """Plans the sweeps at once, one `ablate` process per CPU (each takes ~2 s, most of it loading
    LibTorch: one at a time, 18 sweeps took ~45 s), into plan_text's cache."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as ex:
        list(ex.map(lambda s: plan_text(ablate, s), sweeps))


def planned(ablate, sweep):
    """(id, run_dir) of every point of a sweep, from `ablate sweep plan`."""
    out = plan_text(ablate, sweep)
    m = re.search(r"^run directories: (.*)/<id>$", out, re.M)
    base = os.path.join(ROOT, m.group(1))
    ids = [line.split()[1] for line in out.splitlines() if re.match(r"^\d+\s+\S+", line)]
    return [(i, os.path.join(base, i)) for i in ids]


def hash_of(pid):
    """The id's hash suffix: equal for points whose resolved configurations (seed included) are equal."""
    return pid.rsplit("_", 1)[1]


def seed_of(pid):
    return re.search(r"seed=(\d+)_", pid).group(1)


def num(x):
    """x as a float when it is a finite number (not a bool), else None."""
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def read_jsonl(path):
    """The JSON records of a file with one per line (a run's metrics.jsonl); blank and unparsable lines
    (a line cut short by a crash) are skipped. OSError when the file cannot be read."""
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
    return out


def provenance(run_dir):
    """run.json's provenance of a run (cpu, time, ...), {} when the file is missing, unparsable or
    predates the field. make_results.py and natural/cpu_queue.py both read it here."""
    try:
        with open(os.path.join(run_dir, "run.json")) as f:
            prov = json.load(f).get("provenance", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return prov if isinstance(prov, dict) else {}


def train_rates(records, skip_steps=None):
    """The `tokens_per_s` of a run's metrics records (only its training records carry one), in order;
    with skip_steps, only those logged after that step (the warm-up's are slower): the throughput
    make_results.py reports and cpu_queue.py estimates with."""
    return [num(r["tokens_per_s"]) for r in records
            if isinstance(r, dict) and num(r.get("tokens_per_s")) is not None
            and (skip_steps is None or (num(r.get("step", 0)) or 0) > skip_steps)]


def share(ablate, sweeps, dry_run=False, out=print):
    """Copies, for every planned point of the sweeps without a run directory, a finished point of
    another of them with the same hash suffix; returns how many it copied."""
    plan_all(ablate, sweeps)
    points = {s: planned(ablate, s) for s in sweeps}
    finished = {}  # hash suffix -> run dir
    for pts in points.values():
        for pid, d in pts:
            if os.path.exists(os.path.join(d, "done")):
                finished.setdefault(hash_of(pid), d)
    copied = 0
    for sweep, pts in points.items():
        for pid, d in pts:
            if os.path.exists(d):
                continue
            src = finished.get(hash_of(pid))
            if src is None:
                continue
            if seed_of(pid) != seed_of(os.path.basename(src)):
                sys.exit(f"share_points: {pid} and {src} share a hash but not a seed")
            out(f"{sweep}/{pid} <- {os.path.relpath(src, ROOT)}")
            if dry_run:
                continue
            copy_run(src, d, pid)
            copied += 1
    return copied


def copy_run(src, d, pid):
    """src's run directory as d, renamed to pid; written beside d and renamed into place at the end."""
    tmp = d + ".sharing"
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("checkpoints"))
    # Checkpoints are hard links (written once, never changed in place): the copy can still be
    # probed (make_results.py's final probes), at no disk cost.
    if os.path.isdir(os.path.join(src, "checkpoints")):
        shutil.copytree(os.path.join(src, "checkpoints"), os.path.join(tmp, "checkpoints"), copy_function=os.link)
    cfg = os.path.join(tmp, "config.yaml")
    with open(cfg) as f:
        lines = f.readlines()
    lines = [f"name: {pid}\n" if line.startswith("name:") else line for line in lines]
    with open(cfg, "w") as f:
        f.writelines(lines)
    with open(os.path.join(tmp, "done")) as f:
        done = json.load(f)
    done["id"] = pid
    with open(os.path.join(tmp, "done"), "w") as f:
        json.dump(done, f, separators=(",", ":"))
    with open(os.path.join(tmp, "shared_from"), "w") as f:
        f.write(os.path.relpath(src, ROOT) + "\n")
    os.rename(tmp, d)


def tier_sweeps(natural_only=False):
    """The sweep files there are (paths under experiments/decoupling, no .yaml)."""
    return [s for s in SWEEPS if os.path.exists(os.path.join(HERE, s + ".yaml"))
            and (not natural_only or s.startswith("natural/"))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ablate", default=os.path.join(ROOT, "build", "ablate"))
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--natural", action="store_true", help="the natural tier's sweeps only")
    args = ap.parse_args()
    copied = share(args.ablate, tier_sweeps(args.natural), args.dry_run)
    print(f"share_points: {copied} run directories copied")


if __name__ == "__main__":
    main()
