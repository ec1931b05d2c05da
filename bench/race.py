#!/usr/bin/env python3
"""Ablate vs. the PyTorch reference, side by side, alternating (docs/performance.md).

    .venv/bin/python bench/race.py [--ablate build-bench/ablate] [--rounds 3] [--steps 30]
                                   [--configs tiny small] [--no-compile] [--compile-timeout 900]

For every config (bench/configs/NAME.yaml) and variant (baseline; conditional gate):
1. `ablate bench --dump` writes the initial weights, batches and learning rates; the reference
   replays them and its losses are compared with Ablate's (the same model, numerically).
2. `rounds` rounds, each running Ablate, PyTorch eager and torch.compile once, in that order,
   each a fresh process on the same batches; the median tokens/s of each is reported with the
   ratio Ablate / reference.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = {"baseline": [], "gated": ["model.attention.gate.kind=conditional"]}


def run_json(cmd, timeout):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["exit %d" % p.returncode])[-1]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ablate", default=os.path.join(ROOT, "build-bench", "ablate"))
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--configs", nargs="+", default=["tiny", "small"])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--compile-timeout", type=int, default=900)
    ap.add_argument("--compile-rounds", type=int, default=1, help="torch.compile runs (each recompiles or hits the cache)")
    ap.add_argument("--ablate-args", default="", help="extra arguments for ablate bench, e.g. '--threads 1'")
    ap.add_argument("--ref-args", default="", help="extra arguments for the reference, e.g. '--device cuda'")
    args = ap.parse_args()

    user_set = "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ
    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')} "
          f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', '(unset)')} for the reference; Ablate: "
          + ("the same" if user_set else "GOMP_SPINCOUNT=20000 (its default)"))
    print(f"load average before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    rows = []
    tmp = tempfile.mkdtemp(prefix="ablate-race-")
    for cfg in args.configs:
        for var in args.variants:
            config = os.path.join(ROOT, "bench", "configs", cfg + ".yaml")
            sets = []
            for s in VARIANTS[var]:
                sets += ["--set", s]
            base = [args.ablate, "bench", config, *sets, "--steps", str(args.steps), "--warmup", str(args.warmup),
                    "--json", *args.ablate_args.split()]
            dump = os.path.join(tmp, f"{cfg}-{var}.safetensors")
            first = run_json(base + ["--dump", dump], 600)
            if "error" in first:
                print(f"{cfg}/{var}: ablate failed: {first['error']}")
                continue
            ref = [args.python, os.path.join(ROOT, "bench", "reference", "train.py"), dump,
                   "--warmup", str(args.warmup), *args.ref_args.split()]
            check = run_json(ref, 600)
            if "error" in check:
                print(f"{cfg}/{var}: reference failed: {check['error']}")
                continue
            print(f"{cfg}/{var}: first losses ablate {first['losses'][:3]} reference {check['losses'][:3]} "
                  f"(first diff {check['first_loss_diff']:.2e}, max over {len(check['losses'])} steps "
                  f"{check['max_loss_diff']:.2e})", flush=True)
            tps = {"ablate": [], "pytorch-eager": [], "pytorch-compile": []}
            compile_note = ""
            for r in range(args.rounds):
                a = run_json(base, 600)
                e = run_json(ref, 600)
                tps["ablate"].append(a.get("tokens_per_s"))
                tps["pytorch-eager"].append(e.get("tokens_per_s"))
                if not args.no_compile and not compile_note and r < args.compile_rounds:
                    c = run_json(ref + ["--compile"], args.compile_timeout)
                    if "error" in c:
                        compile_note = c["error"]
                    else:
                        tps["pytorch-compile"].append(c["tokens_per_s"])
                print(f"  round {r + 1}: ablate {a.get('tokens_per_s', a.get('error'))}, "
                      f"eager {e.get('tokens_per_s', e.get('error'))}"
                      + ("" if args.no_compile else f", compile {tps['pytorch-compile'][-1] if tps['pytorch-compile'] and not compile_note else compile_note}")
                      + f"  (load {os.getloadavg()[0]:.2f})", flush=True)
            med = {k: statistics.median([x for x in v if x]) if any(v) else None for k, v in tps.items()}
            rows.append((cfg, var, med, first.get("threads"), compile_note))
    print()
    print(f"{'config':8} {'variant':9} {'ablate tok/s':>13} {'eager tok/s':>12} {'ratio':>6} "
          f"{'compile tok/s':>14} {'ratio':>6}")
    for cfg, var, med, threads, note in rows:
        a, e, c = med["ablate"], med["pytorch-eager"], med["pytorch-compile"]
        fmt = lambda x: f"{x:.0f}" if x else "-"
        ratio = lambda x: f"{a / x:.2f}" if a and x else "-"
        print(f"{cfg:8} {var:9} {fmt(a):>13} {fmt(e):>12} {ratio(e):>6} {fmt(c):>14} {ratio(c):>6}"
              + (f"  compile: {note}" if note else ""))
    print(f"load average after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")


if __name__ == "__main__":
    main()
