#!/usr/bin/env python3
"""Generate experiments/decoupling/RESULTS.md from the sweep reports (issue 10 §3).

Standard library only. Run from anywhere:

    python3 experiments/decoupling/make_results.py

For every sweep file of a tier whose runs directory exists, it first runs

    build/ablate sweep report <sweep>.yaml --out results/<sweep>/report.html \
        --csv results/<sweep>/report.csv --json results/<sweep>/report.json

(skip with --no-report, e.g. where the binary or the run directories are absent), then reads
results/<sweep>/report.json and, per point, the run's metrics.jsonl (for the numbers the report
does not carry: top-1/median at the peak block, bias mass, probe loss, and the probe records over
training). The per-point numbers and curves are written to results/<sweep>/points.csv and
curves.csv, so RESULTS.md can be regenerated from the committed results/ alone when the run
directories are gone (the script then reads those CSVs back).

Outputs: RESULTS.md, results/<sweep>/{report.json,report.csv,report.html,points.csv,curves.csv},
results/emergence.{csv,svg} (synthetic tier) and results/natural-emergence.{csv,svg}.

Finished runs leave small records under results/<sweep>/records/ (committed), from which a fresh
checkout restores its run directories (`--restore`, also done before every `sweep report`), so a
sweep can be finished over several checkouts without training a finished point twice.

Options for smoke tests: --set k=v (passed to `sweep report`, must equal the `sweep run --set`),
--runs-root DIR (runs in DIR/<sweep>/ instead of experiments/decoupling/runs/<sweep>/),
--out-dir DIR (write RESULTS.md and results/ there instead); --natural-set k=v as --set, for the
natural tier and the scan only (runs trained with natural/gpu_sweeps.sh carry two such sets).
"""

import argparse
import csv
import gzip
import json
import math
import os
import shutil
import subprocess
import sys

import share_points  # this directory's: which sweep points are the same run
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "natural"))
import cpu_queue  # noqa: E402  natural/'s queue: its SKIP list of points never trained

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
REL = os.path.relpath(HERE, REPO)  # experiments/decoupling

# ---- tiers and sweeps ---------------------------------------------------------------------------
# axis -> sweep file (relative to this directory); a tier's parameters say which values its sweeps
# use where the two tiers differ (head_dim at fixed heads and width, the loss windows, the
# sigmoid bias of about -ln T).
NATURAL_AXES = ["norm-placement", "norm-type", "ffn-type", "head-dim", "gates", "loss-window",
                "weight-decay", "sink-free", "dyt"]
TIERS = [
    ("synthetic", "synthetic language (data.source synthetic), 4 layers, d 64, 2 x 32, T 64, "
                  "16 seq/step, lr 1e-2, wd 0, 2,000 steps, 8 seeds", {
        "norm-placement": "norm-placement.yaml",
        "norm-type": "norm-type.yaml",
        "ffn-type": "ffn-type.yaml",
        "head-dim": "head-dim.yaml",
        "gates": "gates.yaml",
        "loss-window": "loss-window.yaml",
        "weight-decay": "weight-decay.yaml",
        "sink-free": "sink-free.yaml",
    }),
    ("natural", "natural text (the 4k BPE shards of ../shared/corpora, BOS at position 0): the scale scan's "
                "centre shape, `natural/base.yaml` (6 layers, d 256, 4 x 64, T 256, 16 seq/step, lr 3e-3, wd 0), "
                "2,000 steps (8.2 M tokens), fp32 (bf16 on a GPU host), probes over T 256, 3 seeds", {a: "natural/natural-%s.yaml" % a for a in NATURAL_AXES}),
]
# How each tier's sweeps were trained, for the Regenerate commands: (environment, `sweep run` arguments),
# per tier and per (tier, sweep) where one differs. The synthetic sweeps came from builds before the fused
# CPU kernels (ABLATE_FUSED_CPU=0 reproduces them); sink-free was re-run in sessions 25-26 with them on.
TRAINED_WITH = {
    "synthetic": ("ABLATE_FUSED_CPU=0 ", "--slots 2"),
    "natural": ("", "--slots 2"),
    ("synthetic", "sink-free"): ("", "  # fused kernels on, 2 threads per point (2 cores, --slots 1), as re-run in sessions 25-26"),
}
TIER_PARAMS = {
    # heads: head count of the fixed-heads series; hds: its head_dims (base_hd the baseline's);
    # width: (heads, head_dim) points at the baseline's width, small heads first (the tests compare
    # the first with the last);
    # windows: the baseline's loss window first, then the others (the tests use T/4 and T/2);
    # sig_b: the sigmoid variant's negative bias.
    "synthetic": dict(heads="2", hds=("8", "16", "32", "64", "128"), base_hd="32", width=(("8", "8"), ("4", "16"), ("1", "64")),
                      windows=("[1, 64]", "[8, 64]", "[16, 64]", "[32, 64]"), sig_b="-4.0"),
    # learn_check: leave out seeds that did not learn (LEARN_MIN_DROP).
    "natural": dict(heads="4", hds=("16", "32", "64", "128"), base_hd="64", width=(("16", "16"), ("2", "128")),
                    learn_check=True,
                    windows=("[]", "[32, 256]", "[64, 256]", "[128, 256]"), sig_b="-5.5",
                    # P5's DyT point: natural/natural-dyt.yaml's alpha0 0.1 (that file says why).
                    dyt=("dyt", {"model.norm.type": "dyt", "model.norm.dyt_alpha": "0.1"}),
                    # What the committed records of the norm-type sweep's DyT seed 0 show (session 16).
                    p5_note="in this tier DyT at the paper's alpha0 0.5 (the norm-type sweep's row) did not "
                            "learn in seed 0 (above): train loss stayed at ~7.0 from step 50 on (the RMSNorm "
                            "baseline: 6.66 at step 50, 5.30 at step 250) and the in-training probe's figures "
                            "are frozen from step 500 on (spike 155.2 at every probe); the figures: the DyT and "
                            "baseline records' metrics.jsonl.gz under results/natural-norm-type/records/. Short "
                            "checks of seed 0 to step 250 (natural/natural-dyt.yaml lists them) stalled alike at "
                            "alpha0 0.2, 0.5 and 2.0 (val loss 7.01-7.04) and fell below that at 0.02, 0.05 and "
                            "0.1 (6.89, 6.77, 6.61), so the tests use `natural-dyt.yaml`'s alpha0 0.1 at the "
                            "base's lr 3e-3, and cpu_queue.py never trains the norm-type sweep's other alpha0 "
                            "0.5 seeds."),
}

# The natural tier's scale scan (issue 10 §1(b)): one sweep, one seed, one knob at a time.
# SCAN is the scan at the natural tier's own settings (natural/scan.yaml: its centre is
# natural/base.yaml); FIRST_SCAN the first pass (natural/scale-scan.yaml: 4,000 steps, fp32,
# in-training probes over the first 64 positions), of which the centre and weight decay 0.1 ran.
SCAN = ("natural-scan", "natural/scan.yaml")
FIRST_SCAN = ("natural-scale-scan", "natural/scale-scan.yaml")
# LONG_SCAN: the scan's leads trained for 4,000 steps (natural/scan-long.yaml).
LONG_SCAN = ("natural-scan-long", "natural/scan-long.yaml")
SCANS = (SCAN, FIRST_SCAN, LONG_SCAN)
SCAN_LABELS = ["centre: 6 layers, d 256, 4 x 64, 4k BPE, lr 3e-3, wd 0, BOS", "depth 12", "depth 3",
               "head_dim 32 (8 heads)", "head_dim 128 (2 heads)", "lr 1e-2", "lr 1e-3", "weight decay 0.1",
               "random crops (no BOS)", "byte-level", "width 512 (8 x 64)"]
LONG_LABELS = ["lr 1e-3, 4,000 steps", "lr 1e-3 and weight decay 0.1, 4,000 steps"]
# Scan points left untrained on purpose, and why (said while such a point has not started).
SCAN_LEFT = {"width 512 (8 x 64)": (
    "the scan's largest point, ~3.5× the centre's cost by size (the cost paragraph below), so a GPU lease's point "
    "(issue 10 §1(b): the GPU host takes the largest points), and none was lent to this task; width is not among "
    "the issue's knobs, which are all finished")}

# ---- variants: a variant is a dict of the sweep's varied keys (strings, as in report.json) -----
def base_for(tp):
    """The baseline point of each sweep of a tier: its varied keys' values (strings, as report.json)."""
    return {
        "norm-placement": {"model.norm.placement": "pre"},
        "norm-type": {"model.norm.placement": "pre", "model.norm.type": "rmsnorm", "model.norm.qk_norm": "false"},
        "ffn-type": {"model.ffn.type": "swiglu"},
        "head-dim": {"model.n_heads": tp["heads"], "model.head_dim": tp["base_hd"]},
        "gates": {"model.attention.gate.kind": "none"},
        "loss-window": {"data.loss_window": tp["windows"][0]},
        "weight-decay": {"train.optimizer.weight_decay": "0.1"},  # the paper's setting; P11 turns it off
        "sink-free": {"model.attention.variant": "softmax"},
        "dyt": {"model.norm.type": "rmsnorm"},  # the natural tier's DyT sweep (natural/natural-dyt.yaml)
    }


def V(axis, **kv):
    keys = {
        "placement": "model.norm.placement", "type": "model.norm.type", "qk": "model.norm.qk_norm",
        "ffn": "model.ffn.type", "heads": "model.n_heads", "hd": "model.head_dim",
        "kind": "model.attention.gate.kind", "gran": "model.attention.gate.granularity",
        "window": "data.loss_window", "wd": "train.optimizer.weight_decay",
        "attn": "model.attention.variant", "sb": "model.attention.sigmoid_bias",
    }
    return (axis, {keys[k]: v for k, v in kv.items()})


# Metrics (per point). "spike" tests compare log10(spike magnitude); the others raw values.
METRICS = [
    ("spike_magnitude", "spike", "{:.4g}"),
    ("spike_ratio", "top-1/median", "{:.4g}"),
    ("sink_mass", "sink mass", "{:.3f}"),
    ("sink_eps", "Sink^0.3", "{:.3f}"),
    ("sink_eps_max", "max layer Sink^0.3", "{:.3f}"),
    ("val_loss", "val loss", "{:.4f}"),
]
SPIKE_PRESENT = 100.0   # top-1/median (issue 10 §1(b))
SINK_PRESENT = 0.2      # largest per-layer Sink^0.3 (issue 10 §1(b))
SPIKE_BLOCK_SHARE = 0.5  # a block carries the spike when its top-1 is at least this share of the magnitude
SINK_ABSENT = 0.05      # a baseline has no sink to keep or remove below this (mean + k s.e., t_crit)
SINK_STAYS = 0.5        # "stays" = not reduced below this fraction of the baseline
LOSS_MARGIN = 0.01      # P10: |val-loss change| within 1 % of the baseline's val loss
# A finished seed "did not learn" when its last val loss is less than this fraction below its first
# (the natural tier's baselines fall 19-20 % from step 250 to step 2,000; its DyT seed 0, whose
# train loss stopped falling at step 50, 0.6 %). Such a seed's figures describe a failed run, not
# the variant: the tables and tests leave it out and say so. Seeds with fewer than two val
# evaluations are kept. Natural tier only (TIER_PARAMS' learn_check): the synthetic language is
# learned before its first evaluation (sink-free softmax seed 0: val loss 3.884 at step 100,
# 3.861 at step 2,000), so the rule would read every synthetic seed as failed.
LEARN_MIN_DROP = 0.05

# A test: (label, kind, metric, ref variant, var variant[, var metric]).
# kind: "down" / "up" (direction), "stays" (sink not halved), "present" (var only, threshold),
#       "same" (P10, within LOSS_MARGIN).
def predictions(tp):
    """The predictions P1-P14 as tests on a tier's sweeps (tp: TIER_PARAMS of the tier)."""
    base = base_for(tp)

    def B(axis):
        return (axis, base[axis])
    h, hds, bhd = tp["heads"], tp["hds"], tp["base_hd"]
    width = tp["width"]
    (wh0, wd0), (wh1, wd1) = width[0], width[-1]
    win, sig_b = tp["windows"], tp["sig_b"]
    small_hd, large_hd = hds[0], hds[-1]
    # P5's DyT point: the norm-type sweep's (alpha0 0.5), unless the tier names another.
    dyt_norm_type = V("norm-type", placement="pre", type="dyt", qk="false")
    dyt = tp.get("dyt") or dyt_norm_type
    return [
        dict(id="P1", change="pre-norm RMSNorm + SwiGLU baseline",
             paper="spike and sink both present (7B: spike 3818, sink 46.0 %, perplexity 10.1)",
             expected="both present", rows=["baseline"],
             tests=[("spike present: top-1/median >= %g in some block" % SPIKE_PRESENT, "present", "block_ratio", None,
                     "baseline"),
                    ("sink present: max layer Sink^0.3 >= %g" % SINK_PRESENT, "present", "sink_eps_max", None, "baseline")]),
        dict(id="P3", change="sandwich norm", paper="spike 3818 -> 520, sink 46.0 -> 44.7 %",
             expected="spike down a lot, sink about equal",
             rows=[B("norm-placement"), V("norm-placement", placement="sandwich")],
             tests=[("spike: sandwich vs pre", "down", "spike_magnitude", B("norm-placement"), V("norm-placement", placement="sandwich")),
                    ("sink: sandwich vs pre", "stays", "sink_eps_max", B("norm-placement"), V("norm-placement", placement="sandwich"))]),
        dict(id="P4", change="sandwich + QK-norm", paper="spike -> 92, sink 42.0 %",
             expected="spike down a lot, sink about equal",
             rows=[B("norm-type"), V("norm-type", placement="pre", type="rmsnorm", qk="true"),
                   V("norm-type", placement="sandwich", type="rmsnorm", qk="false"),
                   V("norm-type", placement="sandwich", type="rmsnorm", qk="true")],
             tests=[("spike: sandwich+QK-norm vs pre", "down", "spike_magnitude", B("norm-type"),
                     V("norm-type", placement="sandwich", type="rmsnorm", qk="true")),
                    ("sink: sandwich+QK-norm vs pre", "stays", "sink_eps_max", B("norm-type"),
                     V("norm-type", placement="sandwich", type="rmsnorm", qk="true"))],
             controls_are="single changes",
             controls=[("spike: pre + QK-norm vs pre (QK-norm alone)", "spike_magnitude", B("norm-type"),
                        V("norm-type", placement="pre", type="rmsnorm", qk="true")),
                       ("spike: sandwich vs pre (sandwich alone)", "spike_magnitude", B("norm-type"),
                        V("norm-type", placement="sandwich", type="rmsnorm", qk="false")),
                       ("spike: sandwich+QK-norm vs sandwich (QK-norm on top of it)", "spike_magnitude",
                        V("norm-type", placement="sandwich", type="rmsnorm", qk="false"),
                        V("norm-type", placement="sandwich", type="rmsnorm", qk="true"))],
             note="the rows pre + QK-norm and sandwich without QK-norm are controls that separate the two changes "
                  "(not predictions of the paper): the controls above compare them, and the sink columns can be "
                  "read against the pre row the same way."),
        dict(id="P5", change="DyT instead of every norm", paper="spike -> 153, sink 61.0 %",
             expected="spike down, sink about equal or up",
             rows=[B("norm-type"), dyt_norm_type] + ([dyt] if dyt != dyt_norm_type else []),
             tests=[("spike: DyT vs RMSNorm", "down", "spike_magnitude", B("norm-type"), dyt),
                    ("sink: DyT vs RMSNorm", "stays", "sink_eps_max", B("norm-type"), dyt)],
             note=tp.get("p5_note")),
        dict(id="P6", change="FFN type",
             paper="SwiGLU 3818/46 %, GeLU 3369/69 %, linear 688/59 %, attention-only 637/74 %",
             expected="sinks in all; spike larger with the gated FFN",
             rows=[B("ffn-type")] + [V("ffn-type", ffn=f) for f in ("gelu", "linear", "none")],
             tests=[("sink present with %s" % f, "present", "sink_eps_max", None, V("ffn-type", ffn=f))
                    for f in ("swiglu", "gelu", "linear", "none")]
             + [("spike: %s vs swiglu" % f, "down", "spike_magnitude", B("ffn-type"), V("ffn-type", ffn=f))
                for f in ("gelu", "linear", "none")]),
        dict(id="P7", change="head_dim (paper: 8 -> 128 at 32 heads)", paper="sink 4.1 -> 46.0 %, spike 291 -> 3818",
             expected="both grow with head_dim",
             rows=[V("head-dim", heads=h, hd=d) for d in hds] + [V("head-dim", heads=a, hd=b) for a, b in width],
             tests=[(m + ": %s x %s vs %s x %s (fixed heads)" % (h, d, h, bhd), k, metric, B("head-dim"), V("head-dim", heads=h, hd=d))
                    for d, k in ((small_hd, "down"), (large_hd, "up")) for m, metric in (("spike", "spike_magnitude"), ("sink", "sink_eps_max"))]
             + [(m + ": %s x %s vs %s x %s (fixed width)" % (wh1, wd1, wh0, wd0), "up", metric, V("head-dim", heads=wh0, hd=wd0),
                 V("head-dim", heads=wh1, hd=wd1)) for m, metric in (("spike", "spike_magnitude"), ("sink", "sink_eps_max"))]
             + [(m + ": trend over %s x %s (fixed heads; slope per seed on log2 head_dim)" % (h, ", ".join(hds)), "trend_up", metric,
                 None, [(math.log2(int(d)), V("head-dim", heads=h, hd=d)) for d in hds])
                for m, metric in (("spike", "spike_magnitude"), ("sink", "sink_eps_max"))]),
        dict(id="P8", change="conditional output gate (elementwise / headwise)", paper="sink 4.5 % / 6.4 %, spike 202 / 186",
             expected="sink gone; spike down too",
             rows=[B("gates"), V("gates", kind="conditional", gran="elementwise"), V("gates", kind="conditional", gran="headwise")],
             tests=[(m + ": conditional %s vs none" % g, "down", metric, B("gates"), V("gates", kind="conditional", gran=g))
                    for g in ("elementwise", "headwise") for m, metric in (("sink", "sink_eps_max"), ("spike", "spike_magnitude"))]),
        dict(id="P8b", change="static / positional / token-embedding gates", paper="sink 31-42 %",
             expected="sink stays",
             rows=[B("gates")] + [V("gates", kind=k, gran=g) for k in ("static", "position", "token") for g in ("headwise", "elementwise")],
             tests=[("sink: %s %s vs none" % (k, g), "stays", "sink_eps_max", B("gates"), V("gates", kind=k, gran=g))
                    for k in ("static", "position", "token") for g in ("headwise", "elementwise")],
             controls_are="gates' spikes",
             controls=[("spike: %s %s vs none" % (k, g), "spike_magnitude", B("gates"), V("gates", kind=k, gran=g))
                       for k in ("static", "position", "token") for g in ("headwise", "elementwise")],
             note="the paper predicts nothing about these gates' spikes; the controls give them beside P8's."),
        dict(id="P9", change="loss window (paper 1/256, 1/4096 vs 1024/4096, 2048/4096)",
             paper="sink 42-46 % vs 13 %, 1.2 %", expected="removing the short-range loss removes the sink",
             rows=[V("loss-window", window=w) for w in win],
             tests=[("sink: window %s vs %s" % (w, win[0]), "down", "sink_eps_max", B("loss-window"), V("loss-window", window=w))
                    for w in win[2:]],
             note="val loss is computed on the loss window, so it is not comparable across windows; "
                  "`probe loss` (all positions, last in-training probe) is shown beside it."),
        dict(id="P10", change="all of the above (P3-P8b)", paper="perplexity about unchanged",
             expected="val loss about equal", rows=[], tests="P10"),
        dict(id="P11", change="weight decay off", paper="spike about 3x",
             expected="spike up",
             rows=[B("weight-decay"), V("weight-decay", wd="0.01"), V("weight-decay", wd="0.0")],
             tests=[("spike: wd 0 vs wd 0.1", "up", "spike_magnitude", B("weight-decay"), V("weight-decay", wd="0.0"))],
             controls_are="middle weight decay",
             controls=[("spike: wd 0.01 vs wd 0.1", "spike_magnitude", B("weight-decay"), V("weight-decay", wd="0.01")),
                       ("spike: wd 0 vs wd 0.01", "spike_magnitude", V("weight-decay", wd="0.01"),
                        V("weight-decay", wd="0.0"))]),
        dict(id="P12", change="post-norm (Gu et al., 60 M)", paper="Sink^0.3 13.5 % vs 18.2 %",
             expected="sink stays; spike moves before the norm",
             rows=[B("norm-placement"), V("norm-placement", placement="post")],
             tests=[("sink: post vs pre", "stays", "sink_eps_max", B("norm-placement"), V("norm-placement", placement="post")),
                    ("spike before the norm: post's largest norm input vs its normalised stream (full probe)", "up",
                     "fp_spike", V("norm-placement", placement="post"), V("norm-placement", placement="post"),
                     "fp_norm_input_top1"),
                    ("spike before the norm: post's largest norm input top-1/median >= 100 (full probe)", "present",
                     "fp_norm_input_ratio", None, V("norm-placement", placement="post"))],
             note="\"Spike moves before the norm\" is measured by the full probe (`ablate probe` on the final "
                  "checkpoint, 100 validation sequences), which reports the inputs of every norm that sees the stream "
                  "(`spike.norm_inputs`): with post-norm, x + f(x) before the norm rescales it."),
        dict(id="P13", change="sigmoid attention, no normalisation (Gu et al.)", paper="Sink 0.44 %, no massive activations",
             expected="both gone",
             rows=[B("sink-free"), V("sink-free", attn="sigmoid", sb="0.0"), V("sink-free", attn="sigmoid", sb=sig_b)],
             tests=[t for b in ("0.0", sig_b) for t in (
                 ("sink (row share): sigmoid b=%s vs softmax" % b, "down", "sink_eps_max", B("sink-free"),
                  V("sink-free", attn="sigmoid", sb=b), "sink_eps_share_max"),
                 ("spike: sigmoid b=%s vs softmax" % b, "down", "spike_magnitude", B("sink-free"),
                  V("sink-free", attn="sigmoid", sb=b)))],
             note="Sigmoid rows are not normalised, so the raw Sink^0.3 of the table counts heads whose "
                  "weights are merely large: with b = 0 every weight starts at sigmoid(0) = 0.5 > 0.3, a flat "
                  "head. The sink tests therefore read the row-normalised share of position 0, A[t,0] / "
                  "sum_{s<=t} A[t,s] (the probe's `sink.sink_eps_share_per_layer`, largest layer), against the "
                  "softmax baseline's max layer Sink^0.3, which is the same number there (its rows sum to 1). "
                  "Seeds probed before the probe recorded the share cannot be read by these tests."),
        dict(id="P14", change="learnable k / kv bias (Gu et al., Sun et al.)",
             paper="sink moves onto the bias; kv bias removes spikes", expected="sink off token 0",
             rows=[B("sink-free")] + [V("sink-free", attn=a, sb="0.0") for a in ("k_bias", "kv_bias", "softmax1", "sink_token")],
             tests=[("token-0 sink mass: %s vs softmax" % a, "down", "sink_mass", B("sink-free"), V("sink-free", attn=a, sb="0.0"))
                    for a in ("k_bias", "kv_bias")]
             + [("bias-key mass (%s) vs softmax's token-0 mass" % a, "up", "sink_mass", B("sink-free"), V("sink-free", attn=a, sb="0.0"), "bias_mass")
                for a in ("k_bias", "kv_bias")]
             + [("spike: kv_bias vs softmax", "down", "spike_magnitude", B("sink-free"), V("sink-free", attn="kv_bias", sb="0.0"))],
             controls_are="softmax1 and sink_token",
             controls=[("%s: %s vs softmax" % (lab, a), metric, B("sink-free"), V("sink-free", attn=a, sb="0.0"))
                       for a in ("softmax1", "sink_token")
                       for lab, metric in (("token-0 sink mass", "sink_mass"), ("max layer Sink^0.3", "sink_eps_max"),
                                           ("spike", "spike_magnitude"))],
             note="softmax1 and sink_token have no number in PAPER.md; they are shown for reference, as controls "
                  "(for sink_token, position 0 is the learned token, so its sink mass is the mass on that token)."),
    ]


# The axis each row of the SVG/CSV emergence plot comes from (baseline + one variant per axis).
def emergence_series(tp):
    h, large_hd, win = tp["heads"], tp["hds"][-1], tp["windows"][-1]
    return [
        ("norm placement: sandwich", ("norm-placement", {"model.norm.placement": "sandwich"})),
        ("norm type: sandwich + QK-norm", V("norm-type", placement="sandwich", type="rmsnorm", qk="true")),
        ("FFN: attention-only", V("ffn-type", ffn="none")),
        ("head_dim: %s x %s" % (h, large_hd), V("head-dim", heads=h, hd=large_hd)),
        ("gate: conditional elementwise", V("gates", kind="conditional", gran="elementwise")),
        ("loss window %s" % win, V("loss-window", window=win)),
        ("weight decay 0.1", V("weight-decay", wd="0.1")),
        ("sigmoid attention (b 0)", V("sink-free", attn="sigmoid", sb="0.0")),
    ]


# Where the pre-norm baseline (the same resolved config in these sweeps) is taken from, first found.
BASELINE_FROM = ["norm-type", "gates", "sink-free", "ffn-type", "head-dim", "loss-window",
                 ("weight-decay", {"train.optimizer.weight_decay": "0.0"}), "norm-placement"]


# ---- reading -------------------------------------------------------------------------------------
def norm_val(key, v):
    """Canonical string of a sweep value, as report.json's vars give it."""
    v = str(v).strip()
    if key == "data.loss_window":
        return "[" + ", ".join(x.strip() for x in v.strip("[]").split(",") if x.strip()) + "]"
    return v


def matches(vars_, want):
    return all(norm_val(k, vars_.get(k, "")) == norm_val(k, v) for k, v in want.items())


num = share_points.num  # a finite number as float, else None


def flat_numbers(x):
    """The finite numbers of a nested list (bias_mass and alpha1 are layers x heads)."""
    flat = []

    def walk(y):
        if isinstance(y, list):
            for z in y:
                walk(z)
        elif num(y) is not None:
            flat.append(float(y))
    walk(x)
    return flat


def mean_tensor(x):
    """Mean of a nested list of numbers, None when empty."""
    flat = flat_numbers(x)
    return sum(flat) / len(flat) if flat else None


def max_tensor(x):
    """Largest number of a nested list, None when empty."""
    flat = flat_numbers(x)
    return max(flat) if flat else None


def probe_numbers(pr):
    spike = pr.get("spike", {}) or {}
    sink = pr.get("sink", {}) or {}
    blocks = spike.get("blocks") or []
    peak = spike.get("peak_block")
    ratio = None
    if isinstance(peak, int) and 0 <= peak < len(blocks):
        ratio = num(blocks[peak].get("ratio"))
    per_layer = [num(x) for x in (sink.get("sink_eps_per_layer") or []) if num(x) is not None]
    share_per_layer = [num(x) for x in (sink.get("sink_eps_share_per_layer") or []) if num(x) is not None]
    # top-1/median per block b >= 1 (the blocks the spike magnitude is taken over): Sun et al.
    # compare an entry with the median of its own block, and the block of the largest activation
    # (spike_ratio) need not be the block where it stands out most. Only blocks that carry the spike
    # count (top-1 >= half the spike magnitude), so that a stray entry over a block's tiny median is not
    # read as a massive activation.
    mag = num(spike.get("magnitude"))
    carrying = [(num(b.get("ratio")), i) for i, b in enumerate(blocks) if i >= 1 and mag is not None
                and (num(b.get("top1")) or 0) >= SPIKE_BLOCK_SHARE * mag]
    best = max(((r, i) for r, i in carrying if r is not None), default=(None, None))
    return {
        "spike_magnitude": mag,
        "spike_ratio": ratio,
        "ratio_block_max": best[0],
        "ratio_block": best[1],  # the block of ratio_block_max
        "massive_total": num(spike.get("massive_total")),
        "sink_mass": num(sink.get("mass")),
        "sink_eps": num(sink.get("sink_eps")),
        "sink_eps_max": max(per_layer) if per_layer else None,
        # the same on the row-normalised share of position 0 (comparable for unnormalised sigmoid
        # rows); None in records probed before the probe recorded it
        "sink_eps_share_max": max(share_per_layer) if share_per_layer else None,
        # the largest per-head alpha_1 (attention on position 0): what Sink^0.3 thresholds, graded
        "alpha1_max": max_tensor(sink.get("alpha1")),
        "bias_mass": mean_tensor(sink.get("bias_mass")),
        "probe_loss": num(pr.get("loss")),
        "norm_input_top1": num((spike.get("norm_inputs") or {}).get("peak_top1")),
        "norm_input_ratio": num((spike.get("norm_inputs") or {}).get("peak_ratio")),
    }


# Sweeps whose final checkpoints also get a full `ablate probe` (cached in the run directory as
# final_probe.json): norm-placement, for P12's "spike before the norm" — the in-training records
# of runs made before the probe reported norm inputs do not have it.
FULL_PROBE_SWEEPS = ("norm-placement", "natural-norm-placement")
FULL_PROBE_COLS = ["fp_spike", "fp_norm_input_top1", "fp_norm_input_ratio", "fp_ratio", "fp_sink_eps_max",
                   "fp_alpha1_max", "fp_ratio_block_max", "fp_ratio_block", "fp_sink_mass"]
ABLATE = [None]  # the binary, set by main()
# The scans' finished points are also probed over their whole context on 100 validation sequences
# (T 256; the first pass's in-training probes read only the first 64 positions, the default
# probe.seq_len; the scan's read T 256 but on 16 training sequences).
SCAN_PROBE_SETS = ["probe.seq_len=256"]


def full_probe(run_dir, sets=(), name="final_probe.json"):
    out = os.path.join(run_dir, name)
    if not os.path.exists(out) and ABLATE[0] and os.path.exists(os.path.join(run_dir, "done")):
        cmd = [ABLATE[0], "--log-level", "warn", "probe", run_dir, "--out", out]
        for x in sets:
            cmd += ["--set", x]
        subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL)
    if not os.path.exists(out):
        return {}
    with open(out) as f:
        n = probe_numbers(json.load(f).get("probe", {}))
    return {"fp_spike": n["spike_magnitude"], "fp_norm_input_top1": n["norm_input_top1"],
            "fp_norm_input_ratio": n["norm_input_ratio"], "fp_ratio": n["spike_ratio"],
            "fp_sink_eps_max": n["sink_eps_max"], "fp_alpha1_max": n["alpha1_max"],
            "fp_ratio_block_max": n["ratio_block_max"], "fp_ratio_block": n["ratio_block"],
            "fp_sink_mass": n["sink_mass"]}


POINT_COLS = ["sweep", "variant", "vars", "seed", "state", "step", "probe_step", "val_loss", "spike_magnitude",
              "spike_ratio", "massive_total", "sink_mass", "sink_eps", "sink_eps_max", "bias_mass", "probe_loss",
              "norm_input_top1", "norm_input_ratio", "alpha1_max", "ratio_block_max", "sink_eps_share_max"] + FULL_PROBE_COLS
CURVE_COLS = ["sweep", "variant", "vars", "seed", "step", "spike_magnitude", "spike_ratio", "sink_mass", "sink_eps_max",
              "alpha1_max", "ratio_block_max", "train_loss", "val_loss"]


# Per-point numbers read from the run's records rather than the sweep report.
EXTRA_COLS = ["spike_ratio", "massive_total", "bias_mass", "probe_loss", "norm_input_top1",
              "norm_input_ratio", "alpha1_max", "ratio_block_max", "sink_eps_share_max"] + FULL_PROBE_COLS


def add_losses(curve, train, val):
    """Each probe step of a curve gains the losses logged beside it: train_loss, the mean of the
    training losses logged since the previous probe (each one step's batch), and val_loss, the
    validation loss at that step (None where none was logged)."""
    prev = None
    for c in sorted(curve, key=lambda c: c.get("step") or 0):
        s = c.get("step") or 0
        xs = [x for t, x in train if (prev is None or t > prev) and t <= s]
        c["train_loss"] = sum(xs) / len(xs) if xs else None
        c["val_loss"] = num(val.get(s))
        prev = s


def stalled(val_evals):
    """(first, last) val evaluation [(step, loss), ...] of a seed that did not learn (its last val loss
    less than LEARN_MIN_DROP below its first), else None."""
    evs = sorted(val_evals or [])
    if len(evs) < 2:
        return None
    first, last = evs[0], evs[-1]
    return (first, last) if first[1] - last[1] < LEARN_MIN_DROP * first[1] else None


def block_ratio(p, pre=""):
    """A point's spike ratio from its last in-training probe (pre "") or its final probe (pre "fp_"):
    the largest per-block ratio, else (records that did not keep per-block ratios) the ratio at the
    block of the largest activation, a lower bound of it."""
    v = p.get(pre + "ratio_block_max")
    return v if v is not None else p.get(pre + "ratio" if pre else "spike_ratio")


def load_sweep(name, results_dir, runs_dir):
    """Points of one sweep: list of dicts (vars, seed, metrics, curve) or None when not run."""
    rep_path = os.path.join(results_dir, name, "report.json")
    if not os.path.exists(rep_path):
        return None
    with open(rep_path) as f:
        rep = json.load(f)
    old_points, old_curves = {}, {}
    pcsv = os.path.join(results_dir, name, "points.csv")
    ccsv = os.path.join(results_dir, name, "curves.csv")
    if os.path.exists(pcsv):
        with open(pcsv) as f:
            for r in csv.DictReader(f):
                old_points[(r["vars"], r["seed"])] = r
    if os.path.exists(ccsv):
        with open(ccsv) as f:
            for r in csv.DictReader(f):
                old_curves.setdefault((r["vars"], r["seed"]), []).append(r)
    points = []
    for p in rep.get("points", []):
        vars_ = {k: v for k, v in (p.get("vars") or {}).items() if k != "seed"}
        vkey = json.dumps(vars_, sort_keys=True)
        seed = str(p.get("seed"))
        pt = {"sweep": name, "id": p.get("id", ""), "variant": p.get("variant", ""), "vars": vars_, "vkey": vkey, "seed": seed,
              "state": p.get("state"), "step": p.get("step"), "probe_step": p.get("probe_step"),
              "val_loss": num(p.get("val_loss")), "curve": []}
        for m in ("spike_magnitude", "sink_mass", "sink_eps", "sink_eps_max"):
            pt[m] = num(p.get(m))
        for m in EXTRA_COLS:
            pt[m] = None
        cands = [p.get("run_dir") or ""]
        cands.append(os.path.join(REPO, cands[0]))
        cands.append(os.path.join(runs_dir, p.get("id", "")))
        mpath = next((os.path.join(c, "metrics.jsonl") for c in cands
                      if c and os.path.exists(os.path.join(c, "metrics.jsonl"))), None)
        if mpath:
            records = share_points.read_jsonl(mpath)
            pt["cpu"], pt["tokens_per_s"] = run_cpu(os.path.dirname(mpath)), share_points.train_rates(records)
            last, train, val = None, [], {}
            for r in records:
                if r.get("split") == "probe" and isinstance(r.get("probe"), dict):
                    n = probe_numbers(r["probe"])
                    last = n
                    pt["curve"].append(dict(step=r.get("step"), **n))
                elif r.get("split") == "train" and num(r.get("loss")) is not None:
                    train.append((r.get("step") or 0, r["loss"]))
                elif r.get("split") == "val" and num(r.get("loss")) is not None:
                    val[r.get("step")] = r["loss"]
            add_losses(pt["curve"], train, val)
            pt["val_evals"] = [(t, x) for t, x in val.items() if t is not None]
            if last:
                for m in EXTRA_COLS:
                    if m not in FULL_PROBE_COLS:
                        pt[m] = last[m]
            if name in FULL_PROBE_SWEEPS:
                pt.update(full_probe(os.path.dirname(mpath)))
            elif name in (n for n, _ in SCANS):
                pt.update(full_probe(os.path.dirname(mpath), SCAN_PROBE_SETS, "final_probe_T256.json"))
        elif pt["state"] != "pending":  # run directories gone: the numbers the script extracted last time
            old = old_points.get((vkey, seed))
            if old:
                for m in EXTRA_COLS:
                    pt[m] = num(float(old[m])) if old.get(m) not in (None, "") else None
            for r in old_curves.get((vkey, seed), []):
                c = {"step": int(r["step"])}
                for m in CURVE_COLS[5:]:
                    c[m] = float(r[m]) if r.get(m) not in (None, "") else None
                pt["curve"].append(c)
            pt["val_evals"] = [(c["step"], c["val_loss"]) for c in pt["curve"] if c.get("val_loss") is not None]
        pt["stalled"] = stalled(pt.get("val_evals"))
        pt["block_ratio"] = block_ratio(pt)  # P1's spike test reads it by name
        points.append(pt)
    return points


# ---- run records: what survives a fresh checkout ------------------------------------------------
# Run directories (checkpoints) are not committed, and a new checkout of the repository has none. So
# that a sweep can be finished over several checkouts, every finished run leaves a record under
# results/<sweep>/records/<run id>/: run.json, done, config.yaml, the final probes and
# metrics.jsonl.gz (all that `sweep report`, share_points.py and this script read). Before `sweep
# report`, records whose run directory is absent are unpacked into the runs directory (`sweep run`
# then skips them as finished; `--restore` does only this); after it, finished runs without a
# record get one.
RECORD_FILES = ("run.json", "done", "config.yaml", "final_probe.json", "final_probe_T256.json")


def restore_records(name, results_dir, runs_dir):
    """Unpacks every complete record whose run directory does not exist (a directory that exists,
    finished or not, is the local truth). Each is assembled under <id>.restoring and renamed into
    place, `done` written last, so an interruption never leaves a half-restored run marked done."""
    rec = os.path.join(results_dir, name, "records")
    if not os.path.isdir(rec):
        return 0
    n = 0
    for rid in sorted(os.listdir(rec)):
        src, dst = os.path.join(rec, rid), os.path.join(runs_dir, rid)
        if os.path.lexists(dst) or not os.path.exists(os.path.join(src, "done")):
            continue
        tmp = dst + ".restoring"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        try:
            with gzip.open(os.path.join(src, "metrics.jsonl.gz"), "rb") as f, \
                    open(os.path.join(tmp, "metrics.jsonl"), "wb") as g:
                shutil.copyfileobj(f, g)
        except (OSError, EOFError) as e:
            shutil.rmtree(tmp, ignore_errors=True)
            print("make_results: %s: record not restored (%s)" % (src, e), file=sys.stderr)
            continue
        for fn in RECORD_FILES:
            if fn != "done" and os.path.exists(os.path.join(src, fn)):
                shutil.copyfile(os.path.join(src, fn), os.path.join(tmp, fn))
        shutil.copyfile(os.path.join(src, "done"), os.path.join(tmp, "done"))
        os.rename(tmp, dst)
        n += 1
    return n


def archive_records(name, results_dir, runs_dir, ids):
    """Records of the finished runs `ids` (this sweep's points the report calls done). A record that
    exists gains the files it lacks (a final probe made later), never loses or rewrites one."""
    n = 0
    for rid in ids:
        src, dst = os.path.join(runs_dir, rid), os.path.join(results_dir, name, "records", rid)
        if not (os.path.exists(os.path.join(src, "done")) and os.path.exists(os.path.join(src, "metrics.jsonl"))):
            continue
        complete = os.path.exists(os.path.join(dst, "done"))
        os.makedirs(dst, exist_ok=True)
        for fn in RECORD_FILES:
            if fn != "done" and os.path.exists(os.path.join(src, fn)) and not os.path.exists(os.path.join(dst, fn)):
                shutil.copyfile(os.path.join(src, fn), os.path.join(dst, fn))
        if complete:
            continue
        with open(os.path.join(src, "metrics.jsonl"), "rb") as f, \
                gzip.GzipFile(os.path.join(dst, "metrics.jsonl.gz"), "wb", mtime=0) as g:
            shutil.copyfileobj(f, g)
        shutil.copyfile(os.path.join(src, "done"), os.path.join(dst, "done"))  # last: marks a complete record
        n += 1
    return n


def keep_earlier_points(rep, old_text, runs_dir):
    """After `sweep report` wrote `rep`: a point the earlier report had finished, whose run
    directory does not exist (and had no record to restore), keeps the earlier report's entry (runs
    from before records). A point being trained again, or deleted to be, is reported as it is now.
    Changes `rep` in place; returns how many points it kept."""
    try:
        old = {p.get("id"): p for p in json.loads(old_text).get("points", [])} if old_text else {}
    except ValueError:
        return 0
    n = 0
    for i, p in enumerate(rep.get("points", [])):
        o = old.get(p.get("id"))
        if (p.get("state") == "pending" and o and o.get("state") == "done"
                and not os.path.lexists(os.path.join(runs_dir, p.get("id", "")))):
            rep["points"][i] = dict(o, kept_from_earlier_report=True)
            n += 1
    return n


def run_cpu(run_dir):
    """The processor a run trained on (run.json provenance.cpu; None where it predates the field)."""
    return share_points.provenance(run_dir).get("cpu")


def finished_runs(sweeps):
    """hash suffix -> point for a tier's finished points read from a run directory (their `cpu` and
    `tokens_per_s`), each distinct run once (share_points.py's key: a shared baseline counts once)."""
    return {share_points.hash_of(p["id"]): p for pts in sweeps.values() for p in pts or []
            if p["state"] == "done" and "cpu" in p}


def processors(sweeps):
    """One sentence on which processors trained a tier's finished runs (each distinct run once, keyed
    like share_points.py) and their median training throughput, or "" when none has a run directory."""
    runs = finished_runs(sweeps)
    if not runs:
        return ""
    by = {}
    for p in runs.values():
        by.setdefault(p["cpu"] or "", []).append(p)
    parts = []
    for cpu, ps in sorted(by.items(), key=lambda kv: (kv[0] == "", kv[0])):
        rates = sorted(r for p in ps for r in p["tokens_per_s"])
        rate = " (median %.1f k tokens/s over their logging intervals)" % (rates[len(rates) // 2] / 1e3) if rates else ""
        parts.append("%s: %d%s" % (cpu or "not recorded (started before run.json named the CPU)", len(ps), rate))
    mix = (" A variant and the baseline seed it pairs with may come from different processors: they share "
           "initial weights and data order but not bit-identical arithmetic, a far smaller difference than "
           "any variant's own.") if len(by) > 1 else ""
    return ("Processors of the %d finished runs (run.json provenance.cpu; throughput with one or two runs "
            "at a time): %s.%s\n" % (len(runs), "; ".join(parts), mix))


def run_estimate(sweeps):
    """(steps, median tokens/s, minutes) of one run of a tier, from its finished runs: the steps any
    finished point reached (their common target), the median over the runs' logging intervals, and
    cpu_queue.py's own estimate at that rate (evaluation and probes included); None without rates."""
    rates = sorted(r for p in finished_runs(sweeps).values() for r in p["tokens_per_s"])
    steps = max((int(p["step"]) for pts in sweeps.values() for p in pts or []
                 if p["state"] == "done" and p.get("step") not in (None, "")), default=0)
    if not rates or not steps:
        return None
    rate = rates[len(rates) // 2]
    return steps, rate, cpu_queue.minutes_left(rate, {}, "", "", steps)


def run_cost(est, left):
    """The clauses on what one run costs and what the `left` runs cost (est: run_estimate's); two at a
    time, the wall time is whole rounds of two runs."""
    rounds = math.ceil(left / 2)
    if est is None:
        return ("each takes ~1 h in fp32 on this project's 2-core CPU hosts",
                "~%d run-hours (~%d h on a 2-core host training two at a time)" % (left, rounds))
    steps, rate, minutes = est
    hours = left * minutes / 60
    return (("each is %s steps of %s tokens (%.1f M) in fp32: ~%.0f min (its tokens at the median %.1f k tokens/s "
             "of the finished runs' logging intervals, one or two runs at a time on 2-core CPU hosts, the processors "
             "line below giving each host's rate, plus %.0f %% for evaluation and probes)" % (
                 "{:,}".format(steps), "{:,}".format(cpu_queue.TOKENS_PER_STEP), steps * cpu_queue.TOKENS_PER_STEP / 1e6,
                 minutes, rate / 1e3, (cpu_queue.OVERHEAD - 1) * 100)),
            "~%.0f run-hours (~%.0f h on a 2-core host training two at a time: %d round(s) of two)" % (
                hours, rounds * minutes / 60, rounds))


def cpu_mix(name, runs_dir, ids):
    """Warns when a sweep's finished runs came from different processors (run.json provenance.cpu):
    their floating-point paths differ, so pairing by seed no longer means bit-identical baselines."""
    cpus = {}
    for rid in ids:
        cpu = run_cpu(os.path.join(runs_dir, rid))
        if cpu:
            cpus.setdefault(cpu, []).append(rid)
    if len(cpus) > 1:
        print("make_results: %s: finished runs come from %d processors: %s" % (
            name, len(cpus), "; ".join("%s (%d runs)" % (c, len(v)) for c, v in sorted(cpus.items()))), file=sys.stderr)


def sweep_report(ablate, sweep_path, name, results_dir, runs_dir, sets):
    """`ablate sweep report` for one sweep into results/<name>/, with the records restored first.
    Returns the ids of the points it found finished (to archive once load_sweep has probed them),
    [] when the report failed."""
    rdir = os.path.join(results_dir, name)
    os.makedirs(rdir, exist_ok=True)
    restore_records(name, results_dir, runs_dir)
    rep_path = os.path.join(rdir, "report.json")
    old_text = open(rep_path).read() if os.path.exists(rep_path) else None
    cmd = [ablate, "sweep", "report", sweep_path, "--runs", runs_dir,
           "--out", os.path.join(rdir, "report.html"), "--csv", os.path.join(rdir, "report.csv"), "--json", rep_path]
    for s in sets:
        cmd += ["--set", s]
    r = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        print("make_results: %s failed (%d):\n%s" % (" ".join(cmd), r.returncode, r.stdout), file=sys.stderr)
        return []
    with open(rep_path) as f:
        rep = json.load(f)
    kept = keep_earlier_points(rep, old_text, runs_dir)
    if kept:
        with open(rep_path, "w") as f:
            f.write(json.dumps(rep, indent=2) + "\n")
        print("make_results: %s: %d finished point(s) without a run directory or record kept from the earlier "
              "report.json (report.html and report.csv list them as pending)" % (name, kept), file=sys.stderr)
    done = [p["id"] for p in rep.get("points", []) if p.get("state") == "done" and not p.get("kept_from_earlier_report")]
    cpu_mix(name, runs_dir, done)
    return done


def sweep_name(fname):
    """A tier sweep's name is its file's (the scans' names differ: SCANS)."""
    return os.path.splitext(os.path.basename(fname))[0]


def tier_runs_dir(a, name, fname):
    return os.path.join(a.runs_root, name) if a.runs_root else os.path.join(HERE, os.path.dirname(fname), "runs", name)


def scan_runs_dir(name, fname):
    return os.path.join(HERE, os.path.dirname(fname), "runs", name)  # beside the file, whatever --runs-root


def report_and_load(a, name, fname, runs, results_dir, sets):
    """One sweep: `sweep report` where there are runs or records (unless --no-report), its points
    (None when it has no report), points.csv and curves.csv, and records of its finished runs."""
    done = []
    has_runs = os.path.isdir(runs) or os.path.isdir(os.path.join(results_dir, name, "records"))
    if not a.no_report and has_runs and os.path.exists(a.ablate):
        done = sweep_report(a.ablate, os.path.join(REL, fname), name, results_dir, runs, sets)
    pts = load_sweep(name, results_dir, runs)
    if pts is not None:
        write_sweep_csvs(name, pts, results_dir)
        archive_records(name, results_dir, runs, done)  # after load_sweep's final probes
    return pts


def write_sweep_csvs(name, points, results_dir):
    d = os.path.join(results_dir, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "points.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(POINT_COLS)
        for p in points:
            w.writerow([p["sweep"], p["variant"], p["vkey"], p["seed"], p["state"], p["step"], p["probe_step"]]
                       + [fmt_csv(p[m]) for m in POINT_COLS[7:]])
    with open(os.path.join(d, "curves.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CURVE_COLS)
        for p in points:
            for c in p["curve"]:
                w.writerow([p["sweep"], p["variant"], p["vkey"], p["seed"], c["step"]]
                           + [fmt_csv(c.get(m)) for m in CURVE_COLS[5:]])


def fmt_csv(x):
    if x is None:
        return ""
    return repr(float(x)) if isinstance(x, float) else str(x)


# ---- statistics ----------------------------------------------------------------------------------
def mean_sd(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None, 0
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, sd, len(xs)


def values(points, metric):
    """seed -> value."""
    return {p["seed"]: p.get(metric) for p in points if p.get(metric) is not None}


# Metrics compared as log10 (spike magnitudes: the ratio is what reads).
LOG_METRICS = ("spike_magnitude", "fp_spike")


def paired(ref, var, log=False):
    """Paired (by seed) difference var - ref: mean, s.e., n. log: differences of log10."""
    ds = []
    for s in sorted(set(ref) & set(var)):
        a, b = ref[s], var[s]
        if log:
            if a <= 0 or b <= 0:
                continue
            a, b = math.log10(a), math.log10(b)
        ds.append(b - a)
    m, sd, n = mean_sd(ds)
    if n < 2:
        return m, None, n
    return m, sd / math.sqrt(n), n


# Two-sided 95 % quantiles of Student's t with 1..30 degrees of freedom (tests/experiments checks
# them against the integrated density); beyond 30, the Cornish-Fisher expansion about the normal's.
T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788,
        2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639,
        2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)


def t_crit(n):
    """How many s.e. a mean over n seeds must clear: Student's t 0.975 quantile with n - 1 degrees
    of freedom (12.71 at n 2, 4.303 at n 3, 2.365 at n 8), so that a verdict from 2 or 3 seeds is not
    read as if their sd were the population's (a flat 2 s.e. would be a 70 % interval at n 2)."""
    df = n - 1
    if df < 1:
        raise ValueError("t_crit needs at least 2 values")
    if df <= len(T975):
        return T975[df - 1]
    z = 1.959964
    return (z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * df ** 3))


def t_coverage(k, n, steps=2000):
    """The probability that a mean over n seeds lies within k of its s.e. of the true mean: P(|T| < k)
    for Student's t with n - 1 degrees of freedom (Simpson's rule on its density); what an interval of
    k s.e. covers at n seeds (a flat 2 s.e.: 70 % at n 2, 82 % at n 3)."""
    df = n - 1
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    h = k / steps
    s = sum((1 if i in (0, steps) else 4 if i % 2 else 2) * (1 + (i * h) ** 2 / df) ** (-(df + 1) / 2)
            for i in range(steps + 1))
    return 2 * c * s * h / 3


def signed_verdict(d, se, n, sign, ev):
    """A mean effect d (s.e. se over n seeds) against the paper's sign (+1 up, -1 down)."""
    k = t_crit(n)
    if d * sign > k * se:
        return "reproduced in direction", ev + ": the paper's sign, beyond %.3g s.e." % k
    if d * sign < -k * se:
        return "not reproduced", ev + ": the opposite sign, beyond %.3g s.e." % k
    return "inconclusive", ev + ": within %.3g s.e." % k


def control_effect(metric, ref_pts, var_pts):
    """A control comparison (no prediction, so no verdict): the paired effect of var over ref with its
    two-sided 95 % t interval, as a ratio for spike magnitudes (log10 pairs) and a difference otherwise."""
    if ref_pts is None or var_pts is None:
        return "sweep not run (no report)"
    ref, var = values(ref_pts, metric), values(var_pts, metric)
    if not var or not ref:
        return "no finished seed of the %s yet" % ("variant" if not var else "reference")
    log = metric in LOG_METRICS
    d, se, n = paired(ref, var, log=log)
    if n < 2 or se is None:
        return "%d paired seed(s)" % n
    k = t_crit(n)
    if log:
        return "x%.3g, 95 %% interval x%.3g to x%.3g (mean log10 ratio %+.3f, s.e. %.3f, n %d)" % (
            10 ** d, 10 ** (d - k * se), 10 ** (d + k * se), d, se, n)
    return "diff %+.4g, 95 %% interval %+.4g to %+.4g (s.e. %.3g, n %d)" % (d, d - k * se, d + k * se, se, n)


def baseline_without_sink(kind, metric, ref_pts):
    """For a test that a variant keeps ("stays") or removes ("down") the baseline's sink: why it
    cannot be read when the baseline has none (largest per-layer Sink^0.3 below SINK_ABSENT by
    t_crit s.e. over at least 2 finished seeds), else None. A variant's run changes nothing then, so
    the natural tier's variants with only such tests are trained last (natural/cpu_queue.py)."""
    if kind not in ("down", "stays") or metric != "sink_eps_max" or ref_pts is None:
        return None
    m, sd, n = mean_sd(list(values(ref_pts, metric).values()))
    if n < 2 or m + t_crit(n) * sd / math.sqrt(n) >= SINK_ABSENT:
        return None
    return ("the baseline has no sink to %s (max layer Sink^0.3 mean %.3g, s.e. %.3g, n %d)"
            % ("keep" if kind == "stays" else "remove", m, sd / math.sqrt(n), n))


def run_test(kind, metric, ref_pts, var_pts, var_metric=None):
    """Returns (verdict, evidence text)."""
    vm = var_metric or metric
    if var_pts is None or (kind != "present" and ref_pts is None):
        return "not run yet", "sweep not run (no report)"
    var = values(var_pts, vm)
    if kind == "present" and not var:
        return "not run yet", "no finished seed yet"
    if kind == "present":
        m, sd, n = mean_sd(list(var.values()))
        if n < 2:
            return "inconclusive", "%d seed(s) with a value" % n
        se, k = sd / math.sqrt(n), t_crit(n)
        thr = SPIKE_PRESENT if metric.endswith("ratio") else SINK_PRESENT
        ev = "mean %.4g, s.e. %.3g, n %d, threshold %g" % (m, se, n, thr)
        if m - k * se >= thr:
            return "reproduced in direction", ev + ": mean - %.3g s.e. above the threshold" % k
        if m + k * se < thr:
            if metric == "block_ratio" and any(p.get("ratio_block_max") is None for p in var_pts
                                               if p.get("block_ratio") is not None):
                # the ratio at the block of the largest activation is a lower bound of the per-block one
                return "inconclusive", ev + (": mean + %.3g s.e. below the threshold, but some seeds kept only the "
                                             "ratio at the block of the largest activation, a lower bound" % k)
            return "not reproduced", ev + ": mean + %.3g s.e. below the threshold" % k
        return "inconclusive", ev + ": the threshold is within %.3g s.e." % k
    ref = values(ref_pts, metric)
    no_sink = baseline_without_sink(kind, metric, ref_pts)
    # finished seeds of the variant whose records predate its own measure (e.g. the row-share Sink^0.3)
    unprobed = len(set(values(var_pts, metric)) - set(var)) if vm != metric else 0
    if not var and unprobed:
        return "inconclusive", ("the variant's %d finished seed(s) were probed before the probe recorded %s"
                                % (unprobed, vm)) + ("; and " + no_sink if no_sink else "")
    if no_sink and not var:
        return "inconclusive", "no seed of the variant trained, and none is needed: " + no_sink
    if not var:
        return "not run yet", "no finished seed of the variant yet"
    if not ref:
        return "not run yet", "no finished seed of the baseline yet"
    log = metric in LOG_METRICS and vm in LOG_METRICS + ("fp_norm_input_top1",)
    left = "; %d more finished seed(s) probed before the probe recorded %s" % (unprobed, vm) if unprobed else ""
    d, se, n = paired(ref, var, log=log)
    if n < 2 or se is None:
        # the baseline's lack of a sink is the reason that stands whatever more seeds show
        return "inconclusive", (no_sink + "; " if no_sink else "") + "%d paired seed(s)" % n + left
    rm = mean_sd(list(ref.values()))[0]
    if log:
        ev = "x%.3g (mean log10 ratio %+.3f, s.e. %.3f, n %d%s)" % (10 ** d, d, se, n, left)
    else:
        ev = "diff %+.4g (s.e. %.3g, n %d; baseline mean %.4g%s)" % (d, se, n, rm, left)
    if no_sink:
        return "inconclusive", ev + ": " + no_sink
    if kind in ("down", "up"):
        if se == 0 and d == 0:
            return "inconclusive", ev + ": no difference"
        return signed_verdict(d, se, n, -1 if kind == "down" else 1, ev)
    k = t_crit(n)
    if kind == "stays":
        if rm is None or rm < SINK_ABSENT:
            return "inconclusive", ev + ": the baseline has no sink to keep"
        floor = -SINK_STAYS * rm
        if d - k * se > floor:
            return "reproduced in direction", ev + ": not halved (diff - %.3g s.e. > -%g x baseline)" % (k, SINK_STAYS)
        if d + k * se < floor:
            return "not reproduced", ev + ": at least halved (diff + %.3g s.e. < -%g x baseline)" % (k, SINK_STAYS)
        return "inconclusive", ev + ": halving within %.3g s.e." % k
    if kind == "same":
        margin = LOSS_MARGIN * rm
        if abs(d) + k * se <= margin:
            return "reproduced in direction", ev + ": |diff| + %.3g s.e. <= %.3g" % (k, margin)
        if abs(d) - k * se > margin:
            return "not reproduced", ev + ": |diff| - %.3g s.e. > %.3g" % (k, margin)
        return "inconclusive", ev + ": margin %.3g within %.3g s.e." % (margin, k)
    raise ValueError(kind)


def run_trend(kind, metric, series):
    """A paired trend over several points: series = [(x, points)], x e.g. log2(head_dim). Per seed
    present in every point, the least-squares slope of the metric (log10 for spike magnitudes)
    on x; the verdict compares the mean slope with t_crit s.e. over seeds."""
    if any(pts is None for _, pts in series):
        return "not run yet", "sweep not run (no report)"
    log = metric in LOG_METRICS
    xs = [x for x, _ in series]
    mx = sum(xs) / len(xs)
    sxx = sum((x - mx) ** 2 for x in xs)
    per_point = [values(pts, metric) for _, pts in series]
    empty = sum(1 for v in per_point if not v)
    if empty:
        return "not run yet", "no finished seed yet in %d of the %d points" % (empty, len(series))
    slopes = []
    for sd in sorted(set.intersection(*(set(v) for v in per_point))):
        ys = [v[sd] for v in per_point]
        if log:
            if any(y <= 0 for y in ys):
                continue
            ys = [math.log10(y) for y in ys]
        my = sum(ys) / len(ys)
        slopes.append(sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx)
    m, sdv, n = mean_sd(slopes)
    if n < 2:
        return "inconclusive", "%d seed(s) in every point" % n
    se = sdv / math.sqrt(n)
    ev = "slope %+.3f%s per doubling (s.e. %.3f, n %d, %d points)" % (
        m, " log10" if log else "", se, n, len(series))
    return signed_verdict(m, se, n, 1 if kind == "trend_up" else -1, ev)


UNTESTABLE = "untestable"  # combine()'s name for a sink test whose baseline has no sink (baseline_without_sink)


def combine(verdicts, short=False):
    """One verdict from a prediction's tests; `short`: a variant they read has seeds still to train.
    A test given as UNTESTABLE (a sink to keep or remove where the baseline has none) counts for
    neither side: the verdict rests on the others and says how many could not be read; a prediction
    whose every test is such reads inconclusive."""
    unread = verdicts.count(UNTESTABLE)
    verdicts = [v for v in verdicts if v != UNTESTABLE]
    note = (" (%d sink test%s untestable: the baseline has no sink)" % (unread, "s" if unread > 1 else "")
            if unread else "")
    if not verdicts:
        return "inconclusive (untestable: the baseline has no sink)" if unread else "not run yet"
    ran = [v for v in verdicts if v != "not run yet"]
    if not ran:
        return "not run yet" + note
    partial = len(ran) < len(verdicts) or short
    rep = ran.count("reproduced in direction")
    nrep = ran.count("not reproduced")
    if rep == len(ran):
        v = "reproduced in direction"
    elif nrep and rep:
        v = "partly reproduced"
    elif nrep:
        v = "not reproduced"
    else:
        v = "inconclusive"
    if v != "reproduced in direction" and len(ran) > 1:
        v += " (%d of %d tests reproduced)" % (rep, len(ran))
    return v + note + (" (partial data)" if partial else "")


# ---- rendering -----------------------------------------------------------------------------------
def label(axis, want):
    if want is None:
        return "-"
    short = {"model.norm.placement": "", "model.norm.type": "", "model.norm.qk_norm": "QK-norm ",
             "model.ffn.type": "", "model.n_heads": "heads ", "model.head_dim": "head_dim ",
             "model.attention.gate.kind": "gate ", "model.attention.gate.granularity": "",
             "data.loss_window": "window ", "train.optimizer.weight_decay": "wd ",
             "model.attention.variant": "", "model.attention.sigmoid_bias": "b ", "model.norm.dyt_alpha": "alpha0 "}
    parts = []
    for k, v in want.items():
        if k == "model.attention.sigmoid_bias" and want.get("model.attention.variant") != "sigmoid":
            continue
        if k == "model.attention.gate.granularity" and want.get("model.attention.gate.kind") == "none":
            continue
        if k == "model.norm.dyt_alpha" and want.get("model.norm.type") != "dyt":
            continue
        parts.append(short.get(k, k + "=") + str(v))
    return axis + ": " + " ".join(parts)


def pm(ms, f):
    m, sd, n = ms
    if m is None:
        return "-"
    return (f.format(m) + " ± " + f.format(sd)) if n > 1 else f.format(m)


# A point's numbers that the tables and tests read: only a finished point has them there.
POINT_NUMBERS = ["val_loss", "spike_magnitude", "sink_mass", "sink_eps", "sink_eps_max", "block_ratio"] + EXTRA_COLS


def finished_numbers(p):
    """The point as the tests see it: a point that has not reached its last step (running, or stopped
    at a session's end) keeps its state and curve but none of its numbers, which come from an earlier
    probe than its finished seeds' and would pair unlike with like; nor does a finished seed that did
    not learn (`stalled`), whose numbers describe a failed run rather than its variant."""
    if p["state"] == "done" and not p.get("stalled"):
        return p
    return dict(p, **{m: None for m in POINT_NUMBERS})


class Data:
    def __init__(self, sweeps, tp):
        # axis -> points or None
        learn = tp.get("learn_check")  # else no seed is left out for not learning
        self.sweeps = {k: None if v is None else [finished_numbers(p if learn else dict(p, stalled=None)) for p in v]
                       for k, v in sweeps.items()}
        self.base = base_for(tp)
        self.preds = predictions(tp)
        self.emergence = emergence_series(tp)

    def select(self, sel):
        if sel is None:
            return None
        if sel == "baseline":
            for b in BASELINE_FROM:
                axis, want = (b, self.base[b]) if isinstance(b, str) else b
                pts = self.select((axis, want))
                if pts:
                    return pts
            return None
        axis, want = sel
        pts = self.sweeps.get(axis)
        if pts is None:
            return None
        chosen = [p for p in pts if matches(p["vars"], want)]
        return chosen if chosen else None

    def baseline_label(self):
        for b in BASELINE_FROM:
            axis, want = (b, self.base[b]) if isinstance(b, str) else b
            if self.select((axis, want)):
                return label(axis, want)
        return "pre-norm baseline"


def test_selections(t):
    """The selections (baseline, variant) whose points a test reads."""
    out = []
    for sel in t[3:5]:
        if isinstance(sel, list):  # a trend's [(x, sel)]
            out.extend(s for _, s in sel)
        elif sel is not None:
            out.append(sel)
    return out


def never_trained(p):
    """A point natural/cpu_queue.py never queues (its SKIP: a variant another sweep replaces)."""
    return any(p["sweep"] == sweep and p["id"].startswith(prefix) for sweep, prefix, _ in cpu_queue.SKIP)


def kind_of(t):
    return "trend" if t[1].startswith("trend") else t[1]


def short_of_seeds(data, sels):
    """Whether a selection among `sels` has a seed not finished yet that will be trained."""
    return any(p["state"] != "done" and not never_trained(p) for sel in sels for p in (data.select(sel) or []))


def stalled_seeds(data, sels):
    """[(name, (first, last) val evaluation)] of the finished seeds that did not learn among the points
    of the selections, each once."""
    out, seen = [], set()
    for sel in sels:
        for p in data.select(sel) or []:
            key = (p["sweep"], p["id"])
            if p.get("stalled") and key not in seen:
                seen.add(key)
                name = data.baseline_label() if sel == "baseline" else label(*sel)
                out.append(("%s seed %s" % (name, p["seed"]), p["stalled"]))
    return out


def leave_out_stalled(result, failed):
    """A test's (label, verdict, evidence) once the seeds that did not learn are left out: the evidence
    names them, and a test that has no other seed reads inconclusive, not "not run yet"."""
    lab, v, ev = result
    if not failed:
        return result
    names = ", ".join(n for n, _ in failed)
    if v == "not run yet" and ev.startswith("no finished seed"):
        return lab, "inconclusive", "no finished seed that learned: %s did not learn" % names
    return lab, v, ev + "; left out: %s (did not learn)" % names


def row_for(data, sel, extra_probe_loss=False):
    pts = data.select(sel)
    name = data.baseline_label() if sel == "baseline" else label(*sel)
    if not pts:
        return "| " + name + " | not run yet |" + " |" * (len(METRICS) + (1 if extra_probe_loss else 0))
    have = [p for p in pts if p.get("val_loss") is not None or p.get("spike_magnitude") is not None]
    failed = [p for p in pts if p.get("stalled")]
    cells = [name, "%d/%d" % (len(have), len(pts)) + (" (%d did not learn)" % len(failed) if failed else "")]
    for m, _, f in METRICS:
        cells.append(pm(mean_sd([p.get(m) for p in pts]), f))
    if extra_probe_loss:
        cells.append(pm(mean_sd([p.get("probe_loss") for p in pts]), "{:.4f}"))
    return "| " + " | ".join(cells) + " |"


def table_head(extra_probe_loss=False):
    h = ["variant", "seeds"] + [t for _, t, _ in METRICS] + (["probe loss"] if extra_probe_loss else [])
    return "| " + " | ".join(h) + " |\n|" + "---|" * len(h)


def p10_tests(data):
    """Every variant named in P3-P8b against its own sweep's baseline, on val loss."""
    tests, seen = [], set()
    for pred in data.preds:
        if pred["id"] not in ("P3", "P4", "P5", "P6", "P7", "P8", "P8b"):
            continue
        for sel in pred["rows"]:
            if sel == "baseline" or sel[1] == data.base[sel[0]]:
                continue
            key = (sel[0], json.dumps(sel[1], sort_keys=True))
            if key in seen:
                continue
            seen.add(key)
            tests.append(("val loss: " + label(*sel), "same", "val_loss", (sel[0], data.base[sel[0]]), sel))
    return tests


# Runs made under an earlier natural/base.yaml (a different configuration, so not part of the
# natural sweeps now), kept as committed results and summarised beside the tier.
NATURAL_EARLIER = (
    "Earlier natural runs, not part of these sweeps: with the base in bf16 autocast (session 6, on the "
    "AVX-512/AMX Xeon), pre-norm and sandwich norm ran 2 seeds each before the base moved to fp32 (bf16 "
    "has no fast path on AVX2-only hosts; `natural/base.yaml` says why). Final in-training probe, seeds 0 "
    "and 1: pre-norm spike 736.5 and 562.1 (top-1/median 76.9, 67.4), val loss 4.240, 4.283; sandwich "
    "spike 79.4 and 83.8 (top-1/median 37.5, 41.6), val loss 4.427, 4.441; max per-layer Sink^0.3 0 in "
    "all four, also over the whole context: sandwich cut the spike ×0.127 (geometric mean over the 2 "
    "paired seeds) at a val-loss cost of 0.17. Files: [results/natural-norm-placement-bf16/]"
    "(results/natural-norm-placement-bf16/points.csv).\n")


def distinct_runs(ablate, fnames, finished):
    """(distinct runs, of them finished) over the sweep files: points of different sweeps with the same
    resolved configuration (id hash suffix, as share_points.py matches them) count once; `finished`
    holds the hash suffixes of finished runs elsewhere (the scan's). None without the binary."""
    if not ablate or not os.path.exists(ablate):
        return None
    try:
        keys = {share_points.hash_of(pid) for f in fnames for pid, _ in share_points.planned(ablate, f[:-len(".yaml")])}
    except subprocess.CalledProcessError:
        return None
    return len(keys), len(keys & finished)


# The opening of the natural tier's Progress and Done lines (% (distinct runs, finished)), and the
# points cpu_queue.py's SKIP leaves untrained, as both lines name them.
RUNS_CLAUSE = ("the tier's sweeps are %d distinct runs (a baseline shared by several sweeps counts once: "
               "`share_points.py` copies it), %d of them finished (scale-scan points included)")
SKIPPED_RUNS = "the norm-type sweep's DyT seeds 1 and 2, at alpha0 0.5,"


def tier_done(cost, skipped):
    """The line that takes the Progress line's place once every run a tier's sweeps plan is finished or
    skipped (cost: (distinct runs, finished), skipped: cpu_queue.py's SKIP points among them)."""
    txt = "Done: " + RUNS_CLAUSE % cost
    if skipped:
        txt += ("; the other %d, %s were not trained: `natural-dyt.yaml` trains DyT at an alpha0 that trains "
                "(P5's note)" % (skipped, SKIPPED_RUNS))
    return txt + (". The finished ones trained on 2-core CPU hosts, one or two at a time "
                  "(`%s/natural/cpu_queue.py`); no GPU lease was drawn for this task.\n" % REL)


def render_tier(tier, desc, axes, data, out, cost=None):
    out.append("## Tier: %s\n\n%s.\n" % (tier, desc))
    if tier == "natural":
        out.append(NATURAL_EARLIER)
    none_run = not any(pts is not None for pts in data.sweeps.values())
    if none_run:
        out.append("No sweep of this tier has run yet (%s): every prediction is **not run yet**.\n"
                   % ", ".join("`%s/%s`" % (REL, f) for f in axes.values()))
    # cpu_queue.py's SKIP points (counted among the distinct runs, never trained) cost nothing
    skipped = len({share_points.hash_of(p["id"]) for pts in data.sweeps.values() for p in pts or []
                   if p["state"] != "done" and never_trained(p)})
    if cost and cost[1] + skipped < cost[0]:
        out.append(("Why" if none_run else "Progress") + ": " + RUNS_CLAUSE % cost[:2] + "; %s, "
                   "so the rest is %s, or one GPU lease (`%s/natural/gpu_sweeps.sh 16 <sweeps>`), which "
                   "has not been drawn for this task so far. On CPU hosts `%s/natural/cpu_queue.py` trains them a few "
                   "per session in a fixed order (`--dry-run` lists it with each point's state): the baseline's seeds, "
                   "then the variants whose predictions have a spike test (P3, P12, P11, P4, P6; then one variant each "
                   "of P7, P13, P14 (kv bias) and P8, then their other variants), each variant's three seeds in a "
                   "row, then P4's control and P5's DyT "
                   "(`natural-dyt.yaml`, at an alpha0 that trains: P5's note; %s are never trained, though "
                   "counted above and left out of the rest's cost); the variants with sink tests "
                   "only (P8b's gates, P9's loss windows, P14's other variants) come last, because the scan "
                   "found no sink at this scale: a sink test against a baseline without one is untestable (the "
                   "verdict rule), so those predictions' verdicts do not wait for them.\n" % (
                       run_cost(run_estimate(data.sweeps), cost[0] - cost[1] - skipped) + (REL, REL, SKIPPED_RUNS)))
    elif cost:
        out.append(tier_done(cost, skipped))
    if tier == "natural" and not none_run:
        line = processors(data.sweeps)
        if line:
            out.append(line)
    if none_run:
        out.append("| id | change | verdict |\n|---|---|---|")
        out.extend("| %s | %s | **not run yet** |" % (p["id"], p["change"]) for p in data.preds)
        out.append("")
        return
    summary = []
    details = []
    for pred in data.preds:
        tests = p10_tests(data) if pred["tests"] == "P10" else pred["tests"]
        results = []
        for t in tests:
            lab, kind, metric, ref, var = t[:5]
            vmetric = t[5] if len(t) > 5 else None
            if not axes:
                results.append((lab, "not run yet", "no sweep for this tier"))
                continue
            if kind.startswith("trend"):
                results.append((lab,) + run_trend(kind, metric, [(x, data.select(sel)) for x, sel in var]))
                continue
            results.append((lab,) + run_test(kind, metric, data.select(ref), data.select(var), vmetric))
        results = [leave_out_stalled(r, stalled_seeds(data, test_selections(t))) for r, t in zip(results, tests)]
        failed = stalled_seeds(data, list(pred["rows"]) + [s for t in tests for s in test_selections(t)])
        # a sink test against a baseline without a sink is read by no variant's seeds (baseline_without_sink):
        # it counts for neither side, and its variant's seeds still to train leave no data partial
        unread = [axes and kind_of(t) != "trend" and t[3] is not None and
                  bool(baseline_without_sink(t[1], t[2], data.select(t[3]))) for t in tests]
        verdict = combine([UNTESTABLE if u else r[1] for r, u in zip(results, unread)],
                          short_of_seeds(data, [s for t, u in zip(tests, unread) if not u for s in test_selections(t)]))
        summary.append("| %s | %s | %s | %s | **%s** |" % (pred["id"], pred["change"], pred["paper"], pred["expected"], verdict))
        d = ["### %s — %s\n" % (pred["id"], pred["change"]),
             "Paper: %s. Expected direction: %s. **Verdict: %s.**\n" % (pred["paper"], pred["expected"], verdict)]
        rows = pred["rows"]
        if pred["tests"] == "P10":
            rows = []
            for t in tests:
                if t[3] not in rows:
                    rows.append(t[3])
                rows.append(t[4])
        if axes and rows:
            extra = pred["id"] == "P9"
            d.append(table_head(extra))
            for sel in rows:
                d.append(row_for(data, sel, extra))
            if pred["id"] == "P13":
                d.append("")
                d.append("Max layer Sink^0.3 on the row share (last probe): " + ", ".join(
                    "%s %s" % (lab, pm(mean_sd([p.get("sink_eps_share_max") for p in (data.select(sel) or [])]), "{:.3f}"))
                    for lab, sel in [("softmax", rows[0])] + [
                        ("sigmoid b %s" % sel[1]["model.attention.sigmoid_bias"], sel) for sel in rows[1:]]) + ".")
            if pred["id"] == "P14":
                d.append("")
                d.append("Bias-key mass (mean attention on the learned key, last probe): " + ", ".join(
                    "%s %s" % (a, pm(mean_sd([p.get("bias_mass") for p in (data.select(V("sink-free", attn=a, sb="0.0")) or [])]), "{:.3f}"))
                    for a in ("k_bias", "kv_bias")) + ".")
            d.append("")
        d.append("Tests:\n")
        for lab, v, ev in results:
            d.append("- %s: **%s** — %s" % (lab, v, ev))
        if pred.get("controls") and axes:
            d.append("\nControls (not predictions, so no verdict; paired by seed, Student's t interval):\n")
            for lab, metric, ref, var in pred["controls"]:
                d.append("- %s: %s" % (lab, control_effect(metric, data.select(ref), data.select(var))))
        if failed:
            d.append("\nDid not learn (val loss less than %d %% below its first evaluation; the table and tests "
                     "leave these seeds out): %s." % (round(LEARN_MIN_DROP * 100), "; ".join(
                         "%s, val loss %.3f at step %s and %.3f at step %s" % (n, f[1], "{:,}".format(f[0]), l[1],
                                                                             "{:,}".format(l[0]))
                         for n, (f, l) in failed)))
        if pred.get("note"):
            d.append("\nNote: " + pred["note"])
        d.append("")
        details.append("\n".join(d))
    out.append("| id | change | paper | expected | verdict |\n|---|---|---|---|---|")
    out.extend(summary)
    out.append("")
    out.extend(details)


# ---- emergence curves ----------------------------------------------------------------------------
def fmt(x, spec):
    """x in %-format spec, "-" for a missing number."""
    return ("%" + spec) % x if x is not None else "-"


def scan_table(pts, out, probe_len, labels=SCAN_LABELS):
    """Rows of one scan: the last in-training probe (over probe_len positions) and, for finished
    points, the whole-context probe of the last checkpoint (100 validation sequences)."""
    out.append("| point | state | step | top-1/median (%s) | spike (%s) | max layer Sink^0.3 (%s) | "
               "top-1/median (final, T 256) | largest per-block top-1/median (final, T 256) | "
               "max layer Sink^0.3 (final, T 256) | largest head α₁ (final, T 256) | sink mass (final, T 256) | "
               "val loss | both present |" % (probe_len, probe_len, probe_len))
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for i, p in enumerate(pts):
        out.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            scan_label(i, p, labels), p["state"], p["step"], fmt(p["spike_ratio"], ".1f"), fmt(p["spike_magnitude"], ".4g"),
            fmt(p["sink_eps_max"], ".3f"), fmt(p.get("fp_ratio"), ".1f"), fmt(p.get("fp_ratio_block_max"), ".1f"),
            fmt(p.get("fp_sink_eps_max"), ".3f"),
            fmt(p.get("fp_alpha1_max"), ".3f"), fmt(p.get("fp_sink_mass"), ".3f"), fmt(p["val_loss"], ".4f"),
            "yes" if scan_both(p) else "no"))
    if any(p["state"] == "failed" for p in pts):
        out.append("")
        out.append("state *failed* is the sweep's word for a point that ended before its last step, by an error or "
                   "stopped by a signal at a session's end (its run directory's `failed` file says which; "
                   "`sweep run` resumes it from its last checkpoint while that directory exists).")
    out.append("")
    if not any(p["curve"] for p in pts):
        return
    out.append("Emergence per point (in-training probes: step → top-1/median at the block of the largest activation "
               "/ largest per-block top-1/median, max per-layer Sink^0.3, largest per-head α₁ = mean attention on "
               "position 0, the number Sink^0.3 compares with 0.3):\n")
    for i, p in enumerate(pts):
        cs = sorted((c for c in p["curve"] if c.get("step") is not None), key=lambda c: c["step"])
        if cs:
            out.append("- %s: %s" % (scan_label(i, p, labels), "; ".join(
                "%d → %s/%s, %s, %s" % (c["step"], fmt(c.get("spike_ratio"), ".1f"), fmt(c.get("ratio_block_max"), ".1f"),
                                        fmt(c.get("sink_eps_max"), ".3f"), fmt(c.get("alpha1_max"), ".2f"))
                for c in cs)))
    out.append("")


def scan_label(i, p, labels=SCAN_LABELS):
    return labels[i] if i < len(labels) else p["variant"]


def scan_both(p):
    """Both phenomena present at a scan point: the final whole-context probe where there is one. The
    spike counts as massive when some block's top-1 is >= SPIKE_PRESENT x that block's median (the
    ratio at the block of the largest activation where the per-block ratios were not kept)."""
    full = block_ratio(p, "fp_") is not None and p.get("fp_sink_eps_max") is not None
    r, k = (block_ratio(p, "fp_"), p["fp_sink_eps_max"]) if full else (block_ratio(p), p["sink_eps_max"])
    return r is not None and k is not None and r >= SPIKE_PRESENT and k >= SINK_PRESENT


def scan_progress(pts, labels):
    """A scan's finished points as (index, point), the labels of those showing both, and the labels of
    the points not finished (with SCAN_LEFT's reason for one that has not started)."""
    done = [(i, p) for i, p in enumerate(pts) if p["state"] == "done"]
    def todo(i, p):
        label = scan_label(i, p, labels)
        why = SCAN_LEFT.get(label) if p["state"] == "pending" and not p.get("step") else None
        return "%s (not trained: %s)" % (label, why) if why else label
    return (done, [scan_label(i, p, labels) for i, p in done if scan_both(p)],
            [todo(i, p) for i, p in enumerate(pts) if p["state"] != "done"])


def massive(done, labels):
    """The finished points whose final probe finds a massive activation by the per-block ratio, as
    "label (ratio in block b of largest activation)"."""
    return ["%s (%.1f in block %s of %s)" % (scan_label(i, p, labels).split(":")[0], block_ratio(p, "fp_"),
                                            p.get("fp_ratio_block") or "-", fmt(p.get("fp_spike"), ".4g"))
            for i, p in done if (block_ratio(p, "fp_") or 0) >= SPIKE_PRESENT]


def render_scan(pts, first, long, out):
    out.append("## Natural-text tier: the scale scan (issue 10 §1(b))\n")
    out.append("Which smallest pre-norm baseline shows a massive activation (top-1/median ≥ %g in some block that "
               "carries the spike, its top-1 at least half the largest activation: Sun et al. compare an entry with "
               "the median of its own block; the ratio at the block of the largest activation, which the tables "
               "also show, can be smaller) and a sink (max "
               "per-layer Sink^0.3 ≥ %g) on ../shared/corpora (brown-nonfiction + nlpcorpus, 3.78 M tokens "
               "with the 4k BPE)? Sweep `%s/%s`: one knob at a time around `natural/base.yaml` (the natural "
               "sweeps' own baseline: point 0 is the same configuration), one seed, 2,000 steps of 16 × 256 tokens "
               "(8.2 M tokens, ~2.2 epochs) in fp32, in-training probes over the whole context (T 256, 16 "
               "sequences) every 250 steps; each finished point's last checkpoint is probed again on 100 validation "
               "sequences (`ablate probe RUN --set probe.seq_len=256`), and \"both present\" uses that probe. Sink mass is "
               "the mean attention on position 0 over queries t ≥ 1, heads and layers (docs/metrics.md).\n"
               % (SPIKE_PRESENT, SINK_PRESENT, REL, SCAN[1]))
    if pts is None:
        out.append("**Not run yet.**\n")
    else:
        scan_table(pts, out, "T 256")
        done, both, todo = scan_progress(pts, SCAN_LABELS)
        def peak(metric):  # (largest value at any in-training probe, point, step), None without probes
            return max(((c.get(metric) or 0, scan_label(i, p), c["step"]) for i, p in enumerate(pts)
                        for c in p["curve"]), default=None)
        ratio, sink, alpha = peak("spike_ratio"), peak("sink_eps_max"), peak("alpha1_max")
        block = peak("ratio_block_max")
        txt = ("**Where the scan stands**: %d of %d points finished. Largest top-1/median at any in-training probe: "
               "%s at the block of the largest activation, %s in any block; largest max per-layer Sink^0.3: %s; "
               "largest per-head α₁: %s. " % (
                   len(done), len(pts), "%.1f (%s, step %d)" % ratio if ratio else "-",
                   "%.1f (%s, step %d)" % block if block and block[0] > 0 else "-",
                   ("%.3f (%s, step %d)" % sink if sink[0] > 0 else "0 at every probe of every point") if sink else "-",
                   "%.2f (%s, step %d)" % alpha if alpha else "-"))
        masses = sorted(((p["fp_sink_mass"], scan_label(i, p).split(":")[0]) for i, p in done
                         if p.get("fp_sink_mass") is not None), reverse=True)
        if masses:
            txt += ("Sink mass at the final probe runs from %.3f (%s) to %.3f (%s); the centre's is %s. " % (
                masses[0] + masses[-1] + (fmt(pts[0].get("fp_sink_mass"), ".3f"),)))
        if both:
            txt += ("Both phenomena are present at: %s; the smallest of them is the scale the natural tier should "
                    "move to (`natural/base.yaml`). " % ", ".join(both))
        else:
            spiky = massive(done, SCAN_LABELS)
            centre = pts[0] if pts else {}
            txt += ("No finished point shows both, so the natural tier stays at `natural/base.yaml`'s scale (the "
                    "centre): there its sink tests meet a baseline without a sink (inconclusive by the rule above "
                    "unless a variant makes one), and its spike tests compare the largest activation (%s at the "
                    "centre, top-1/median %s at its block and %s in the block where it stands out most). "
                    "Massive by the per-block ratio at the final probe (top-1/median ≥ %g in a block whose top-1 is "
                    "at least %g × the largest activation): %s. " % (
                        fmt(centre.get("fp_spike"), ".4g"), fmt(centre.get("fp_ratio"), ".1f"),
                        fmt(centre.get("fp_ratio_block_max"), ".1f"), SPIKE_PRESENT, SPIKE_BLOCK_SHARE,
                        "; ".join(spiky) if spiky else "none"))
        if todo:
            txt += "Not finished: %s." % "; ".join(todo)
        out.append(txt.rstrip() + "\n")
    out.append("**Leads, trained longer** (`%s/%s`: lr 1e-3 alone and with weight decay 0.1, 4,000 steps = 16.4 M "
               "tokens, ~4.3 epochs; otherwise the centre). At 2,000 steps these were the two points whose largest "
               "head α₁ was still rising at the end (lr 1e-3: 0.15 → 0.21 over steps 1,000–2,000; weight decay 0.1: "
               "0.11 → 0.19); a layer's Sink^0.3 is the fraction of its heads whose α₁ exceeds 0.3. Gu et al.'s small setting, "
               "in which the sink forms, trains at lr 4e-4 with weight decay 0.1 (PAPER.md).\n" % (REL, LONG_SCAN[1]))
    if long is None:
        out.append("**Not run yet.**\n")
    else:
        scan_table(long, out, "T 256", LONG_LABELS)
        done, both, todo = scan_progress(long, LONG_LABELS)
        txt = "%d of %d finished. " % (len(done), len(long))
        if done:
            txt += ("Both phenomena present at: %s. " % "; ".join(both) if both else
                    "No finished lead shows both. ")
            spiky = massive(done, LONG_LABELS)
            txt += "Massive by the per-block ratio at the final probe: %s. " % ("; ".join(spiky) if spiky else "none")
        if todo:
            txt += "Not finished: %s." % "; ".join(todo)
        out.append(txt.rstrip() + "\n")
    out.append("**First pass** (`%s/%s`: the same knobs at 4,000 steps, 16.4 M tokens, fp32, in-training probes "
               "over the first 64 positions, the default `probe.seq_len`). Its centre and weight decay 0.1 ran to "
               "the end (lr 1e-2 was stopped at step 900 and the rest not started when `%s` replaced it: "
               "whole-context probes at 2,000 steps); it is kept for tokens seen (the centre's curve to 16.4 M tokens) "
               "and for what it showed "
               "about probe length: the sink its in-training probes see in the centre (one layer-2 head, Sink^0.3 "
               "0.25 over the first 64 positions from step 1,250) is not there over the whole context "
               "(`build/ablate probe <centre run>/checkpoints/step_00003000 --set probe.seq_len=T --set "
               "probe.sequences=32`: 0.25 at T 64, 0 at T 256; sink mass 0.121 and 0.043). The natural tier's "
               "probes therefore read the whole context.\n" % (REL, FIRST_SCAN[1], SCAN[1]))
    if first is not None:
        scan_table(first, out, "T 64")
    out.append("Cost on the 2-core CPU hosts of this project: a centre-shape point (2,000 steps) took ~113 min "
               "in fp32 on an AMD EPYC (Zen 3, AVX2) with one core per run, two runs at a time (median 1.4 k "
               "tokens/s, `tokens_per_s` in the records' metrics.jsonl.gz of points 0 and 4), ~62 min with 2 threads "
               "when run one at a time (median 2.2 k tokens/s, points 7 and 8), and ~27 min in "
               "bf16 on the AVX-512/AMX Xeon of session 6 (5.2 k tokens/s, its train.log; bf16 has no fast path "
               "on AVX2 CPUs); depth 12 took ~116 min with 2 threads (median 1.2 k tokens/s, its metrics.jsonl.gz; run in two parts, 52 + 64 min, with a resume at step 930), ~1.9× the centre, and width 512 should cost ~3.5× (by size, not measured). `%s/natural/gpu_sweeps.sh 16 %s/%s` runs all points at once on a GPU host (none was lent "
               "to this task). What the choices may change: the corpus is small (2.2 passes at 2,000 steps), so "
               "late spikes and sinks may reflect memorisation%s; BOS at position 0 gives the sink a fixed target "
               "that random crops (point 8) do not, and point 8's row measures what removing it changes; more "
               "real English text was not obtained: Debian's packages hold little modern English prose (`apt-cache "
               "search` for bible, gutenberg, corpus, fortune, wordnet finds the King James Bible in bible-kjv-text, "
               "2.5 MB installed, dictionaries and fortune files), and the corpus packages on PyPI "
               "(gutenberg; nltk, whose data is separate) download their texts from sites these hosts cannot reach "
               "(`curl https://www.gutenberg.org/` and `https://raw.githubusercontent.com/`: could not resolve host), "
               "so the corpora are what the tier trains on.\n"
               % (REL, REL, SCAN[1], memorisation(pts, long)))


# One pass over the BPE shards: 14,991 training sequences of 256 tokens (prepare.sh's split), 16 a step.
EPOCH_STEPS = 14991 // 16


def loss_gap(p, last_step=None):
    """(step, validation loss - mean training loss since the previous probe) at a point's last probe
    step (<= last_step where given) that has both losses, or None."""
    cs = [c for c in p["curve"] if (last_step is None or (c.get("step") or 0) <= last_step)
          and c.get("val_loss") is not None and c.get("train_loss") is not None]
    c = max(cs, key=lambda c: c["step"], default=None)
    return (c["step"], c["val_loss"] - c["train_loss"]) if c else None


def memorisation(pts, long):
    """The measured part of the small-corpus caveat: how far the validation loss sits above the
    training loss within the first pass over the shards and at the end."""
    if not pts or pts[0]["state"] != "done":
        return ""
    first, end = loss_gap(pts[0], EPOCH_STEPS), loss_gap(pts[0])
    if not first or not end:
        return ""
    gaps = sorted(g[1] for p in pts if p["state"] == "done" and p["vars"].get("data.tokenizer") != "byte"
                  for g in [loss_gap(p)] if g)  # byte-level: other units, and 0.6 passes
    txt = (" (measured, validation loss minus the mean training loss logged since the previous probe: at the "
           "centre %+.2f at step %s, within the first pass, and %+.2f at step %s; %+.2f to %+.2f at the end of "
           "the finished BPE points" % (first[1], "{:,}".format(first[0]), end[1], "{:,}".format(end[0]),
                                        gaps[0], gaps[-1]))
    lead = [(scan_label(i, p, LONG_LABELS), loss_gap(p)) for i, p in enumerate(long or [])]
    lead = [(lab, g) for lab, g in lead if g and g[0] > 2000]  # only once past the scan's 2,000 steps
    if lead:
        txt += "; %s" % "; ".join("%+.2f at step %s of %s" % (g[1], "{:,}".format(g[0]), lab) for lab, g in lead)
    vals = [c["val_loss"] for c in sorted(pts[0]["curve"], key=lambda c: c["step"]) if c.get("val_loss") is not None]
    falls = len(vals) >= 2 and vals[-1] < vals[-2]
    return txt + ": the later passes are partly memorised%s)" % (
        ", while the centre's validation loss still falls, %.3f → %.3f over its last two probes" % (vals[-2], vals[-1])
        if falls else "")


def emergence(data, results_dir, out_dir, stem):
    series = []
    base = data.select("baseline")
    if base:
        series.append(("baseline (" + data.baseline_label() + ")", base))
    for lab, sel in data.emergence:
        pts = data.select(sel)
        if pts:
            series.append((lab, pts))
    rows, curves = [], []
    for lab, pts in series:
        by_step = {}
        for p in pts:
            for c in p["curve"]:
                by_step.setdefault(c["step"], []).append(c)
        pts_out = []
        for step in sorted(by_step):
            cs = by_step[step]
            sp = mean_sd([c.get("spike_magnitude") for c in cs])
            lsp = mean_sd([math.log10(c["spike_magnitude"]) for c in cs if (c.get("spike_magnitude") or 0) > 0])
            sk = mean_sd([c.get("sink_eps_max") for c in cs])
            rows.append([lab, step, sp[2], fmt_csv(sp[0]), fmt_csv(sp[1]), fmt_csv(lsp[0]), fmt_csv(sk[0]), fmt_csv(sk[1])])
            pts_out.append((step, lsp[0], sk[0]))
        if pts_out:
            curves.append((lab, pts_out))
    if not curves:
        return None
    with open(os.path.join(results_dir, stem + ".csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["series", "step", "seeds", "spike_mean", "spike_std", "log10_spike_mean",
                    "sink_eps_max_mean", "sink_eps_max_std"])
        w.writerows(rows)
    ls = [v for _, c in curves for _, v, _ in c if v is not None]
    y0, y1 = (math.floor(min(ls)), math.ceil(max(ls))) if ls else (0, 1)
    if y1 == y0:
        y1 = y0 + 1
    panels = [("spike magnitude (mean of log10 over seeds)", y0, y1, list(range(y0, y1 + 1)), lambda t: "1e%d" % t),
              ("max per-layer Sink^0.3 (mean over seeds)", 0.0, 1.0, [0, 0.25, 0.5, 0.75, 1.0], lambda t: "%g" % t)]
    with open(os.path.join(results_dir, stem + ".svg"), "w") as f:
        f.write(svg_plot(curves, panels))
    return os.path.relpath(os.path.join(results_dir, stem + ".svg"), out_dir)


def scan_emergence(scans, results_dir, out_dir, stem):
    """The scale scan's in-training probes as a plot: for every point with probes, the largest
    per-block top-1/median and the largest head α₁ over training, each against its threshold
    (SPIKE_PRESENT; Sink^0.3's 0.3). scans: [(points, labels, dashed)]. Returns the SVG's path
    relative to out_dir, None without probes."""
    curves, dashed = [], set()
    for pts, labels, dash in scans:
        for i, p in enumerate(pts or []):
            cs = sorted((c for c in p["curve"] if c.get("step") is not None), key=lambda c: c["step"])
            if cs and any(c.get("ratio_block_max") is not None for c in cs):
                if dash:
                    dashed.add(len(curves))
                curves.append((scan_label(i, p, labels).split(":")[0],
                               [(c["step"], c.get("ratio_block_max"), c.get("alpha1_max")) for c in cs]))
    if not curves:
        return None
    top = max(v for _, c in curves for _, v, _ in c if v is not None)
    hi_r = max(2 * SPIKE_PRESENT, 50 * math.ceil(top / 50))
    top_a = max((a for _, c in curves for _, _, a in c if a is not None), default=0)
    hi_a = max(0.4, 0.1 * math.ceil(top_a / 0.1))
    panels = [("largest per-block top-1/median (massive at %g)" % SPIKE_PRESENT, 0, hi_r,
               list(range(0, int(hi_r) + 1, 50)), lambda t: "%d" % t, SPIKE_PRESENT),
              ("largest head α₁ (a sink head above 0.3)", 0.0, hi_a,
               [round(0.1 * k, 1) for k in range(int(round(hi_a / 0.1)) + 1)], lambda t: "%g" % t, 0.3)]
    with open(os.path.join(results_dir, stem + ".svg"), "w") as f:
        f.write(svg_plot(curves, panels, dashed))
    return os.path.relpath(os.path.join(results_dir, stem + ".svg"), out_dir)


COLORS = ["#000000", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
          "#bcbd22", "#7f7f7f", "#aec7e8", "#ffbb78"]


def step_ticks(x0, x1):
    """Round tick values in [x0, x1], about five: multiples of 1, 2, 2.5 or 5 x 10^k."""
    raw = (x1 - x0) / 4
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(x0 / step) * step
    return [first + k * step for k in range(int((x1 - first) // step) + 1)]


def svg_plot(curves, panels, dashed=()):
    """Two panels side by side over training steps. curves: [(label, [(step, v0, v1)])], the first
    drawn thicker; panels: [(title, lo, hi, ticks, tick_label[, threshold])], panel k plotting vk,
    a threshold drawn as a dashed grey line; curves whose index is in dashed are drawn dashed."""
    PW, PH, L, T = 380, 260, 60, 40
    # Legend: as many columns as the longest label allows (~6.2 px a character at font-size 11).
    col_w = max(300, int(max(len(lab) for lab, _ in curves) * 6.2) + 40)
    cols = max(1, (980 - L) // col_w)
    W, H = 980, max(420, T + PH + 48 + ((len(curves) + cols - 1) // cols) * 16)
    steps = [s for _, c in curves for s, _, _ in c]
    x0, x1 = min(steps), max(steps)
    if x1 == x0:
        x1 = x0 + 1
    o = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">' % (W, H),
         '<rect width="100%" height="100%" fill="white"/>']

    def panel(px, title, lo, hi, idx, ticks, tick_label, threshold=None):
        o.append('<text x="%d" y="%d" font-size="13">%s</text>' % (px, T - 15, title))
        o.append('<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#888"/>' % (px, T, PW, PH))
        for t in ticks:
            y = T + PH - (t - lo) / (hi - lo) * PH
            o.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#eee"/>' % (px, px + PW, y, y))
            o.append('<text x="%d" y="%.1f" text-anchor="end">%s</text>' % (px - 4, y + 4, tick_label(t)))
        if threshold is not None:
            y = T + PH - (threshold - lo) / (hi - lo) * PH
            o.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#888" stroke-dasharray="6,4"/>' % (
                px, px + PW, y, y))
        for s in step_ticks(x0, x1):
            x = px + (s - x0) / (x1 - x0) * PW
            o.append('<text x="%.1f" y="%d" text-anchor="middle">%d</text>' % (x, T + PH + 14, round(s)))
        o.append('<text x="%d" y="%d" text-anchor="middle">training step</text>' % (px + PW // 2, T + PH + 30))
        for i, (lab, c) in enumerate(curves):
            pts = [(px + (s - x0) / (x1 - x0) * PW, T + PH - (v[idx] - lo) / (hi - lo) * PH)
                   for s, *v in c if v[idx] is not None]
            if pts:
                o.append('<polyline fill="none" stroke="%s" stroke-width="%s"%s points="%s"/>' % (
                    COLORS[i % len(COLORS)], "2.5" if i == 0 else "1.5",
                    ' stroke-dasharray="5,3"' if i in dashed else "", " ".join("%.1f,%.1f" % p for p in pts)))

    for k, (title, lo, hi, ticks, tick_label, *threshold) in enumerate(panels):
        panel(L + k * (PW + 80), title, lo, hi, k, ticks, tick_label, *threshold)
    ly = T + PH + 48
    for i, (lab, _) in enumerate(curves):
        x = L + (i % cols) * col_w
        y = ly + (i // cols) * 16
        o.append('<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="%s" stroke-width="2"%s/>' % (
            x, x + 20, y - 4, y - 4, COLORS[i % len(COLORS)], ' stroke-dasharray="5,3"' if i in dashed else ""))
        o.append('<text x="%d" y="%d">%s</text>' % (x + 26, y, lab.replace("&", "&amp;").replace("<", "&lt;")))
    o.append("</svg>\n")
    return "\n".join(o)


# ---- main ----------------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ablate", default=os.path.join(REPO, "build", "ablate"), help="the ablate binary")
    ap.add_argument("--no-report", action="store_true", help="do not run `ablate sweep report`; use results/ as is")
    ap.add_argument("--set", action="append", default=[], help="passed to `sweep report` (must equal `sweep run --set`)")
    ap.add_argument("--natural-set", action="append", default=[],
                    help="passed to `sweep report` for the natural tier and the scan only (e.g. device=cuda and "
                         "train.precision=bf16 for runs from natural/gpu_sweeps.sh)")
    ap.add_argument("--runs-root", default=None, help="runs in DIR/<sweep>/ (default: <sweep dir>/runs/<sweep>)")
    ap.add_argument("--out-dir", default=HERE, help="where RESULTS.md and results/ go (default: this directory)")
    ap.add_argument("--restore", action="store_true",
                    help="only unpack the committed run records into the runs directories (before `sweep run` "
                         "or share_points.py in a new checkout), then exit")
    a = ap.parse_args()
    if a.restore:
        results = os.path.join(os.path.abspath(a.out_dir), "results")
        n = sum(restore_records(sweep_name(f), results, tier_runs_dir(a, sweep_name(f), f))
                for _, _, axes in TIERS for f in axes.values())
        n += sum(restore_records(name, results, scan_runs_dir(name, f)) for name, f in SCANS)
        print("make_results: %d run record(s) restored" % n)
        return
    out_dir = os.path.abspath(a.out_dir)
    results_dir = os.path.join(out_dir, "results")
    os.makedirs(results_dir, exist_ok=True)

    lines = ["# Decoupling ablations: results (issue 10)", "",
             "Generated by `python3 %s/make_results.py` from the sweep reports; do not edit by hand." % REL, "",
             "The paper's numbers (PAPER.md §4) are from 7B models; ours are directions at small scale.", ""]
    if not a.no_report and os.path.exists(a.ablate):
        ABLATE[0] = a.ablate
    tier_data = []
    for tier, desc, axes in TIERS:
        sweeps = {}
        for axis, fname in axes.items():
            name = sweep_name(fname)
            sweeps[axis] = report_and_load(a, name, fname, tier_runs_dir(a, name, fname), results_dir,
                                           a.set + (a.natural_set if tier == "natural" else []))
        tier_data.append((tier, desc, axes, Data(sweeps, TIER_PARAMS[tier])))

    scan_pts = {name: report_and_load(a, name, fname, scan_runs_dir(name, fname), results_dir, a.natural_set)
                for name, fname in SCANS}

    lines += ["## Verdict rule", "",
              "Each prediction is split into tests; each test compares a variant with its sweep's baseline "
              "over the seeds both have (points of one seed share data order and, with `init_from_seed`, the "
              "initial weights, so differences are **paired by seed**: d_s = variant_s − baseline_s, mean d "
              "and s.e. = sd(d)/√n), and a test clears **k s.e.**, k being Student's t 0.975 quantile with n − 1 "
              "degrees of freedom (a two-sided 95 %% interval: k = %.1f at n 2, %.2f at n 3, %.2f at n 8; a flat 2 s.e. "
              "would be a %.0f %% interval at n 2 and %.0f %% at n 3). Spike magnitudes are compared as log10 (the ratio is shown). The numbers "
              "are those of the **last in-training probe** (`train.probe.every`; compact probe on `probe.train_sequences` = 16 sequences of the tier's T tokens: 64 synthetic, 256 natural) and the last validation loss. "
              "\"sink\" is the largest per-layer Sink^0.3 (issue 10's measure) unless a test names sink mass."
              % (t_crit(2), t_crit(3), t_crit(8), 100 * t_coverage(2, 2), 100 * t_coverage(2, 3)), "",
              "- direction (↓/↑): **reproduced in direction** when mean d has the paper's sign and |mean d| > k s.e.; "
              "**not reproduced** when it has the opposite sign beyond k s.e.; **inconclusive** otherwise.",
              "- sink stays (≈): reproduced when mean d − k s.e. > −%g × the baseline mean (the sink is not halved); "
              "not reproduced when mean d + k s.e. < −%g × the baseline mean; inconclusive otherwise, and when "
              "the baseline has no sink (mean < %g)." % (SINK_STAYS, SINK_STAYS, SINK_ABSENT),
              "- untestable: a test that a variant keeps (≈) or removes (↓) the baseline's sink cannot be read "
              "when the baseline has none (its max per-layer Sink^0.3 mean + k s.e. < %g over ≥ 2 finished "
              "seeds: the natural tier, P1): it reads inconclusive, with or without the variant's seeds, and the "
              "prediction's verdict rests on its other tests and says how many were untestable; a prediction "
              "whose every test is such reads inconclusive (untestable). Tests that a sink appears (↑, present, "
              "trend) stay readable." % SINK_ABSENT,
              "- trend (↗, P7): per seed present in every point, the least-squares slope of the metric (log10 for "
              "spike magnitudes) on log2 head_dim; reproduced when the mean slope has the paper's sign beyond k s.e. "
              "over seeds, not reproduced when the opposite sign is, inconclusive otherwise.",
              "- present: reproduced when mean − k s.e. ≥ the threshold (top-1/median %g in some block that carries "
              "the spike, i.e. whose top-1 is at least %g × the largest activation — or, for the synthetic sweeps, "
              "whose records did not keep the per-block ratios, the ratio at the block of the largest activation, a "
              "lower bound, so that there 'not reproduced' becomes inconclusive —; max per-layer Sink^0.3 %g; "
              "issue 10 §1(b)); not reproduced when mean + k s.e. < the threshold." % (SPIKE_PRESENT, SPIKE_BLOCK_SHARE, SINK_PRESENT),
              "- P10 (val loss ≈): reproduced when |mean d| + k s.e. ≤ %g %% of the baseline's val loss for a variant; "
              "not reproduced when |mean d| − k s.e. exceeds it." % (LOSS_MARGIN * 100),
              "- a prediction's verdict: all tests reproduced → reproduced in direction; some reproduced and some "
              "not → partly reproduced; none reproduced and some not → not reproduced; else inconclusive. "
              "**not run yet** when none of its tests has data yet (no report, or no finished seed of a variant it reads); \"(partial data)\" when some tests have no "
              "data yet or a variant they read has seeds still to train; "
              "\"(k of n tests reproduced)\" (untestable tests not counted) beside any verdict but a full reproduction.",
              "- fewer than 2 paired seeds: inconclusive.",
              "- controls (%s): comparisons that are no prediction of the paper get no verdict and do not count in "
              "one; each is given as its paired effect with the 95 %% interval mean d ± k s.e. (a ratio for spike "
              "magnitudes)." % ", ".join("%s's %s" % (p["id"], p["controls_are"])
                                         for p in predictions(TIER_PARAMS["synthetic"]) if p.get("controls")),
              "- only finished points count (a point's `done`): the numbers of one that is running or was "
              "stopped before its last step come from an earlier probe than its sweep's finished seeds, so the "
              "tables' `seeds` column counts finished seeds and the tests leave the others out (the scale scan's "
              "tables and the sweep reports show them, with their state).",
              "- nor, in the natural tier, do finished seeds that did not learn: a seed whose last val loss is "
              "less than %g %% below its first evaluation describes a failed run, not its variant; the `seeds` column and the tests' "
              "evidence name it, a test left with no seed reads inconclusive, and the prediction lists each such "
              "seed with its first and last val loss (the points.csv and curves.csv files keep its figures)."
              % (LEARN_MIN_DROP * 100), ""]

    finished = {share_points.hash_of(p["id"]) for name, _ in SCANS for p in (scan_pts[name] or [])
                if p["state"] == "done" and p.get("id")}
    finished |= {share_points.hash_of(p["id"]) for tier, _, _, data in tier_data if tier == "natural"
                 for pts in data.sweeps.values() for p in (pts or []) if p["state"] == "done" and p.get("id")}
    for tier, desc, axes, data in tier_data:
        cost = distinct_runs(a.ablate, axes.values(), finished) if tier == "natural" else None
        render_tier(tier, desc, axes, data, lines, cost)

    render_scan(scan_pts[SCAN[0]], scan_pts[FIRST_SCAN[0]], scan_pts[LONG_SCAN[0]], lines)

    for tier, desc, axes, data in tier_data:
        stem = "emergence" if tier == "synthetic" else tier + "-emergence"
        svg = emergence(data, results_dir, out_dir, stem)
        lines += ["## Emergence curves (%s tier)" % tier, ""]
        if svg:
            lines += ["Spike magnitude and the largest per-layer Sink^0.3 over training (in-training probes, mean "
                      "over seeds) for the baseline and one variant per axis: [%s](%s), data in "
                      "[results/%s.csv](results/%s.csv)." % (os.path.basename(svg), svg, stem, stem), "",
                      "![%s](%s)" % (stem, svg), ""]
        else:
            lines += ["not run yet (no probe records)." if tier != "natural" else
                      "The natural sweeps: not run yet (no probe records).", ""]
        if tier == "natural":
            svg = scan_emergence([(scan_pts[SCAN[0]], SCAN_LABELS, False), (scan_pts[LONG_SCAN[0]], LONG_LABELS, True)],
                                 results_dir, out_dir, "natural-scan-emergence")
            if svg:
                lines += ["The scale scan's in-training probes (T 256, 16 sequences; dashed: the leads at 4,000 "
                          "steps), against the thresholds of \"both present\" (dashed grey): the largest per-block "
                          "top-1/median and the largest head α₁ (a layer's Sink^0.3 counts its heads above 0.3): "
                          "[%s](%s), data in [results/%s/curves.csv](results/%s/curves.csv) and "
                          "[results/%s/curves.csv](results/%s/curves.csv)." % (
                              os.path.basename(svg), svg, SCAN[0], SCAN[0], LONG_SCAN[0], LONG_SCAN[0]), "",
                          "![scale scan](%s)" % svg, ""]

    lines += ["## Per-sweep reports", "",
              "| sweep | points | report |", "|---|---|---|"]
    for tier, desc, axes, data in tier_data:
        for axis, fname in axes.items():
            name = sweep_name(fname)
            pts = data.sweeps.get(axis)
            if pts is None:
                lines.append("| %s/%s | - | not run yet |" % (tier, name))
            else:
                done = sum(1 for p in pts if p["state"] == "done")
                lines.append("| %s/%s | %d/%d done | [html](results/%s/report.html), [csv](results/%s/report.csv), "
                             "[json](results/%s/report.json), [points](results/%s/points.csv), "
                             "[curves](results/%s/curves.csv) |" % (tier, name, done, len(pts), name, name, name, name, name))
    lines.append("")

    lines += ["## Regenerate", "",
              "From the repository root (each sweep resumes; finished points are skipped). The synthetic-tier "
              "runs were trained by builds from before the fused CPU kernels (8797ac3, docs/performance.md; their "
              "run.json says c4360ef: until d8219d3 the recorded commit was the one CMake was configured at); "
              "`ABLATE_FUSED_CPU=0` makes a later build train them bit for bit as that one did (checked: gates/none "
              "seed 0, 300 steps: every loss and probe identical; checked again with denormals flushed to zero, "
              "the default since bd57ae3). With the kernels on, a run differs in the last "
              "bits from the start, and the spike's growth amplifies that (same seed at step 300: spike 5,055 "
              "against 1,993), so all points of a sweep must come from one build or the pairing by seed is lost. "
              "The intra-op thread count changes a run's bits as well (docs/training.md, 'Bit-identical runs': "
              "the sink-free softmax seed 0 ends at spike 10,882 with 2 threads and 24,111 with 1, fused kernels "
              "on both). The sink-free sweep was re-run in sessions 25-26 (for the row-share sink) with the "
              "kernels on, the default, and 2 threads per point, one point at a time on 2 cores: its line below "
              "says so; run.json records `cpu_threads` and `fused_cpu_kernels` since 0fc5966. "
              "The natural tier's runs use a build's defaults (fused kernels on), under the same rule: one build per "
              "sweep (on a GPU host, `natural/gpu_sweeps.sh SLOTS <sweep files>` instead, and this script then "
              "needs `--natural-set device=cuda --natural-set train.precision=bf16`).",
              "", "```sh",
              "python3 %s/make_results.py --restore   # a new checkout: run directories from the committed records" % REL]
    for tier, desc, axes in TIERS:
        if tier == "natural":
            lines += ["%s/natural/prepare.sh   # natural tier: tokenizer and shards from ../shared/corpora" % REL,
                      "build/ablate sweep run %s/%s --slots 2   # the scale scan" % (REL, SCAN[1]),
                      "build/ablate sweep run %s/%s --slots 2   # its first pass (optional)" % (REL, FIRST_SCAN[1]),
                      "build/ablate sweep run %s/%s   # its leads at 4,000 steps" % (REL, LONG_SCAN[1]),
                      "python3 %s/natural/cpu_queue.py --until HH:MM [--fit]   # on a CPU host: the "
                      "natural-*.yaml points below, two at a time, in the order that gives verdicts soonest (resumes; "
                      "--fit starts only points estimated to end by then; --dry-run lists it)" % REL]
        for axis, fname in axes.items():
            env, args = TRAINED_WITH.get((tier, axis), TRAINED_WITH[tier])
            lines.append("%sbuild/ablate sweep run %s/%s %s" % (env, REL, fname, args))
    lines += ["python3 %s/share_points.py   # optional: reuse the baseline points sweeps share" % REL]
    lines += ["python3 %s/make_results.py   # runs `ablate sweep report` per sweep, then writes this file" % REL,
              "```", "",
              "`make_results.py` runs, per sweep with a runs directory, `build/ablate sweep report "
              "<sweep>.yaml --out results/<sweep>/report.html --csv results/<sweep>/report.csv --json "
              "results/<sweep>/report.json`; with `--no-report` it uses the committed results/ alone.", ""]
    with open(os.path.join(out_dir, "RESULTS.md"), "w") as f:
        f.write("\n".join(lines))
    print("wrote " + os.path.join(out_dir, "RESULTS.md"))


if __name__ == "__main__":
    main()
