#!/usr/bin/env python3
"""Trains the natural tier's sweeps on a CPU host in the order that gives verdicts soonest.

The natural sweeps (natural/natural-*.yaml) are 102 distinct runs of ~1 h each on this project's
2-core CPU hosts (two of which, natural-norm-type's DyT seeds 1 and 2, are never trained: SKIP
below), far more than a session, so they are trained a few at a time over many sessions
and the order matters. This script keeps that order in one place (ORDER below, with the reason for
each place) and trains the points that are not finished, one `ablate sweep run SWEEP --only I` per
point, LANES points at a time with THREADS threads each (two lanes of one thread train ~15 % more
tokens per second in all than one lane of two threads on a 2-core host: 1.2-1.3 k tokens/s each
against 2.0-2.3 k on the AVX2 AMD EPYC hosts, 2.5-2.6 k each against 4.5 k on the AVX-512 Xeon;
on an AVX-512 AMD EPYC two lanes ran 1.7-2.3 k each, median 2.2 k, ~62 min per point of 8.2 M
tokens, one lane not measured there; the runs' `tokens_per_s`, kept in
../results/<sweep>/records/<point>/metrics.jsonl.gz).

- A point whose resolved configuration another sweep also plans (the shared baseline, sandwich
  norm in both norm sweeps, ...) is trained once: points are keyed by their id's hash suffix, and
  after every finished point `share_points.py` copies it to the other sweeps.
- A point stopped earlier resumes from its last checkpoint (`sweep run` does that).
- `--until HH:MM` (or SIGTERM / Ctrl-C) stops every running point with SIGTERM: the trainer
  finishes its step and writes a checkpoint, so the next call resumes it. No new point starts
  after the stop time. `--last-start HH:MM` only keeps new points from starting (a point takes
  50-110 min, depending on the host: one started too close to a session's end stops unfinished,
  and its checkpoint lasts only as long as the host's run directories).
- `--fit` (with `--until`) starts a point only if it is estimated to end by then, and otherwise the
  first later point of the queue that is (a stopped point near its end, a faster variant); nothing
  when none is. For hosts whose run directories do not outlast the session, where a point stopped
  unfinished is lost. The estimate: the steps left x 4,096 tokens / the point's rate, plus 10 % for
  evaluation and probes; the point's rate is this host's (--rate, else the median `tokens_per_s`
  of the points finished here, else of the runs training here so far, each over its variant's
  ratio below, else of the points finished on other hosts with this processor's label, else 1,250)
  times its variant's
  rate relative to the other runs on the processors it ran on (4 x 128 heads: 0.63; a variant not
  trained anywhere yet counts as 1). The ratios are rough (+-20 %: a processor's runs trained
  beside different loads), so leave a margin in --until.
- `--first SWEEP[:PREFIX]` (repeatable) trains the points of SWEEP whose run id starts with PREFIX
  before the rest, without changing ORDER: to finish one prediction's seeds sooner.

    python3 experiments/decoupling/natural/cpu_queue.py --dry-run      # the queue, its state, minutes per point
    python3 experiments/decoupling/natural/cpu_queue.py [--lanes 2] [--threads 1] [--until 08:05]
                                                        [--last-start 07:10] [--fit]
                                                        [--first natural-dyt:type=dyt]

The log (one line per start and end) is runs/cpu_queue.log beside the run directories; each
point's own output is in its run directory (stdout.log, train.log).
"""
import argparse
import collections
import concurrent.futures
import datetime
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DECOUPLING = os.path.dirname(HERE)
ROOT = os.path.dirname(os.path.dirname(DECOUPLING))
sys.path.insert(0, DECOUPLING)
import share_points  # noqa: E402

# (sweep file under natural/, id prefix of the points, why they come here). Points of a variant
# run seed 0, 1, 2 in a row, so that each variant reaches the paired seeds a verdict needs before
# the next one starts. The scale scan found no sink at this scale (RESULTS.md), so the variants
# whose predictions have a spike test come first; those with only sink tests come last (their
# tests read "inconclusive" while the baseline has no sink, unless a variant makes one).
ORDER = [
    ("natural-norm-placement", "placement=pre_", "the baseline every sweep compares with (P1)"),
    ("natural-norm-placement", "placement=sandwich_", "P3: spike down a lot"),
    ("natural-norm-placement", "placement=post_", "P12: the spike moves before the norm"),
    ("natural-weight-decay", "weight_decay=0.1_", "P11: spike up without weight decay"),
    ("natural-norm-type", "placement=sandwich_type=rmsnorm_qk_norm=true_", "P4: spike down a lot"),
    ("natural-ffn-type", "type=gelu_", "P6: spike smaller without the gated FFN"),
    ("natural-ffn-type", "type=linear_", "P6"),
    ("natural-ffn-type", "type=none_", "P6"),
    # One variant of each prediction still without data (P7, P13, P14, P8), then their other variants:
    # every prediction gets its first verdict sooner than if P7's five head shapes went first.
    ("natural-head-dim", "n_heads=4_head_dim=16_", "P7: spike grows with head_dim"),
    ("natural-sink-free", "variant=sigmoid_sigmoid_bias=m5.5_", "P13: no massive activations"),
    ("natural-sink-free", "variant=kv_bias_", "P14: kv bias removes spikes"),
    ("natural-gates", "kind=conditional_granularity=elementwise_", "P8: spike down too"),
    ("natural-head-dim", "n_heads=4_head_dim=128_", "P7"),
    ("natural-gates", "kind=conditional_granularity=headwise_", "P8"),
    ("natural-sink-free", "variant=sigmoid_sigmoid_bias=0.0_", "P13"),
    ("natural-head-dim", "n_heads=4_head_dim=32_", "P7 (trend)"),
    ("natural-head-dim", "n_heads=16_head_dim=16_", "P7 (fixed width)"),
    ("natural-head-dim", "n_heads=2_head_dim=128_", "P7 (fixed width)"),
    ("natural-sink-free", "variant=k_bias_", "P14 (sink tests only)"),
    ("natural-norm-type", "placement=pre_type=rmsnorm_qk_norm=true_", "P4's control (QK-norm alone)"),
    # P5: DyT at the alpha0 natural-dyt.yaml chose by short checks (after the other spike tests:
    # the tier's first DyT point did not learn).
    ("natural-dyt", "type=dyt_", "P5: spike down"),
]
# Points the queue never trains: natural-norm-type's DyT at the paper's alpha0 0.5, whose seed 0
# did not learn at this scale (RESULTS.md, P5); natural-dyt.yaml replaces it.
SKIP = [("natural-norm-type", "placement=pre_type=dyt_", "alpha0 0.5 did not learn; natural-dyt.yaml replaces it")]
# Then every other point of these sweeps, in their files' order (sink tests only, or controls).
SWEEPS = ["natural-norm-placement", "natural-weight-decay", "natural-norm-type", "natural-ffn-type",
          "natural-head-dim", "natural-sink-free", "natural-gates", "natural-loss-window", "natural-dyt"]
# The scale scan's sweeps: finished_hashes reads them too (their centre is the baseline's seed 0).
SCANS = [s for s in ("scan", "scan-long", "scale-scan") if os.path.exists(os.path.join(HERE, s + ".yaml"))]
TOKENS_PER_STEP = 16 * 256  # natural/base.yaml: 16 sequences of 256 tokens


def last_step(run_dir):
    """The newest checkpoint's step (0 without one)."""
    try:
        steps = [int(m.group(1)) for n in os.listdir(os.path.join(run_dir, "checkpoints"))
                 if (m := re.fullmatch(r"step_(\d+)", n))]
    except FileNotFoundError:
        return 0
    return max(steps, default=0)


def sweep_status(ablate, sweep):
    """{id: (state, step)} from `ablate sweep status` (running, done, failed, pending)."""
    out = subprocess.run([ablate, "sweep", "status", os.path.join(HERE, sweep + ".yaml")], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    st = {}
    for line in out.splitlines():
        m = re.match(r"^\d+\s+(\S+)\s+(\S+)\s+(\d+)/\d+", line)
        if m:
            st[m.group(1)] = (m.group(2), int(m.group(3)))
    return st


def state_label(state, step, finished):
    """--dry-run's state column: a point `sweep status` calls pending but that has a checkpoint
    was stopped unfinished, and the next call resumes it from that step."""
    if finished:
        return "done"
    if state == "pending":
        return "stopped %d" % step if step > 0 else "pending"
    return "%s %d" % (state, step)


def target_steps(ablate, sweep):
    out = share_points.plan_text(ablate, "natural/" + sweep)
    return {line.split()[1]: int(line.split()[-1]) for line in out.splitlines() if re.match(r"^\d+\s+\S+", line)}


def build_queue(ablate):
    """[(sweep, index, id, run_dir, target step, why)], each distinct configuration once."""
    share_points.plan_all(ablate, ["natural/" + s for s in SWEEPS + SCANS])
    plans = {s: share_points.planned(ablate, "natural/" + s) for s in SWEEPS}
    targets = {s: target_steps(ablate, s) for s in SWEEPS}
    seen, queue = set(), []
    for sweep, prefix, _ in SKIP:  # never queued
        seen.update(share_points.hash_of(pid) for pid, _ in plans[sweep] if pid.startswith(prefix))

    def add(sweep, prefix, why):
        for i, (pid, d) in enumerate(plans[sweep]):
            if prefix is not None and not pid.startswith(prefix):
                continue
            h = share_points.hash_of(pid)
            if h in seen:
                continue
            seen.add(h)
            queue.append((sweep, i, pid, d, targets[sweep][pid], why))

    for sweep, prefix, why in ORDER:
        if not any(pid.startswith(prefix) for pid, _ in plans[sweep]):
            sys.exit(f"cpu_queue: {sweep}.yaml plans no point whose id starts with {prefix!r} (ORDER is stale)")
        add(sweep, prefix, why)
    for sweep in SWEEPS:
        add(sweep, None, "sink tests only, or a control")
    return queue


def put_first(queue, specs):
    """The queue with the points that --first names (SWEEP or SWEEP:PREFIX of the run id) ahead of the
    rest, in the order of the specs; every other point keeps its place. ValueError names a spec that
    matches no queued point."""
    matches = [spec.partition(":")[::2] for spec in specs]  # (sweep, prefix)

    def names(match, q):
        return q[0] == match[0] and q[2].startswith(match[1])

    for spec, (sweep, prefix) in zip(specs, matches):
        if sweep not in SWEEPS:
            raise ValueError(f"--first {spec}: no sweep {sweep!r} (one of: {', '.join(SWEEPS)})")
        if not any(names((sweep, prefix), q) for q in queue):
            raise ValueError(f"--first {spec}: no queued point of {sweep} has a run id starting with {prefix!r}")
    return sorted(queue, key=lambda q: next((k for k, m in enumerate(matches) if names(m, q)), len(matches)))


def finished_hashes(ablate):
    """Hash suffixes of every finished natural point (any sweep, the scans included)."""
    done = set()
    for s in SWEEPS + SCANS:
        for pid, d in share_points.planned(ablate, "natural/" + s):
            if os.path.exists(os.path.join(d, "done")):
                done.add(share_points.hash_of(pid))
    return done


def variant_of(pid):
    """A run id without its seed and hash ("n_heads=4_head_dim=128_seed=2_830df7b4" -> "n_heads=4_head_dim=128"):
    the seeds of one variant train at the same speed."""
    return re.sub(r"_?seed=\d+_[0-9a-f]+$", "", pid)


# One run as scan_runs reads it.
Run = collections.namedtuple("Run", "time cpu sweep variant finished rates here")


def scan_runs(runs_dir, skip_steps=50):
    """[Run(start time, cpu label, sweep, variant, finished, training rates past skip_steps, trained here)] of
    the distinct runs under runs_dir (runs/<sweep>/<id>) whose run.json names their processor. "Trained
    here": the run has its trainer's train.log, which a record restored by make_results.py (from
    whichever host trained it) lacks. A run whose id's hash suffix an earlier one has (a copy made by
    share_points.py, or restored by make_results.py without its `shared_from` file: the baseline is
    in ten sweeps) is left out: its rates are that run's. The sweeps are read in the queue's order
    (SWEEPS), then the rest, so a run is keyed by the sweep the queue names it by."""
    out, seen = [], set()
    sweeps = sorted(os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []
    for sweep in [s for s in SWEEPS if s in sweeps] + [s for s in sweeps if s not in SWEEPS]:
        sd = os.path.join(runs_dir, sweep)
        for point in sorted(os.listdir(sd)) if os.path.isdir(sd) else []:
            d = os.path.join(sd, point)
            prov = share_points.provenance(d)
            if not (prov.get("cpu") and prov.get("time")) or point.rsplit("_", 1)[-1] in seen:
                continue
            seen.add(point.rsplit("_", 1)[-1])
            try:
                rates = share_points.train_rates(share_points.read_jsonl(os.path.join(d, "metrics.jsonl")), skip_steps)
            except OSError:
                rates = []
            out.append(Run(str(prov["time"]), str(prov["cpu"]), sweep, variant_of(point),
                           os.path.exists(os.path.join(d, "done")), rates, os.path.exists(os.path.join(d, "train.log"))))
    return out


def host_cpu(runs):
    """This host's processor label: that of the newest run trained here, else (a fresh host, before its
    first point has started) of the newest record, whichever host trained it."""
    here = [r for r in runs if r.here]
    return max(here or runs).cpu if runs else None


def median_rate(runs, ratios):
    """The median `tokens_per_s` over the runs' logging intervals, each divided by its variant's relative
    rate (relative_rates: so the figure is the processor's median lane whichever variants it trained);
    None when they have none."""
    xs = [x / ratios.get((r.sweep, r.variant), 1.0) for r in runs for x in r.rates]
    return statistics.median(xs) if xs else None


def measured_rate(runs_dir, skip_steps=50, runs=None):
    """(tokens/s, cpu label, points, trained here) for the estimates: median_rate over the steps past
    `skip_steps` of the finished points on this host's processor (host_cpu) trained here, else of
    those restored from records of other hosts with the same processor label (hosts of one label can
    differ: the records of 'Intel Xeon (amx)' hosts had a median of 1.9 k tokens/s a lane, the one of
    session 29 trained at 3.0 k).
    None when no run there records a cpu label or none of that processor has finished.
    `runs`: scan_runs(runs_dir, skip_steps), if read."""
    runs = scan_runs(runs_dir, skip_steps) if runs is None else runs
    cpu = host_cpu(runs)
    ratios = relative_rates(runs)
    for here in (True, False):
        mine = [r for r in runs if r.cpu == cpu and r.finished and r.rates and r.here == here]
        if mine:
            return median_rate(mine, ratios), cpu, len(mine), here
    return None


def relative_rates(runs):
    """{(sweep, variant): its tokens/s over its processor's median}, from scan_runs' records: each
    variant's median rate on a processor divided by that processor's median over all its runs
    (finished or not), then the median over the processors it ran on. A head_dim 128 point trains at
    ~0.6-0.8 of the baseline's rate, so one rate for every point misjudges how long it takes. The runs
    trained here count as a processor of their own (hosts of one label differ in speed)."""
    by_cpu = {}
    for r in runs:
        if r.rates:
            by_cpu.setdefault((r.cpu, r.here), {}).setdefault((r.sweep, r.variant), []).extend(r.rates)
    ratios = {}
    for variants in by_cpu.values():
        cpu_median = statistics.median([x for r in variants.values() for x in r])
        for key, r in variants.items():
            ratios.setdefault(key, []).append(statistics.median(r) / cpu_median)
    return {key: statistics.median(r) for key, r in ratios.items()}


def point_rate(host_rate, ratios, sweep, pid):
    """The tokens/s a point is expected to train at on this host (1 x the host's rate for a variant not
    measured anywhere)."""
    return max(host_rate * ratios.get((sweep, variant_of(pid)), 1.0), 1.0)


# Evaluation, probes and checkpoints add to the training steps' time (tokens_per_s times only the
# steps): a natural point took 78.7 min where 8.2 M tokens at its measured 1.8 k tokens/s are 75.8
# (cpu_queue.log, session 23); --fit allows 10 %.
OVERHEAD = 1.10


def host_rate(runs_dir, given=None):
    """(tokens/s of one lane on this host, where it comes from, scan_runs' records): `given` (--rate), else
    the median of the points finished here (measured_rate), else of the runs training here so far (a
    fresh host's first points, past their warm-up), else of the points finished on other hosts with
    this processor's label, else 1,250 (the slowest 2-core host seen, AVX2 AMD EPYC)."""
    runs = scan_runs(runs_dir)
    if given is not None:
        return given, "--rate", runs
    m = measured_rate(runs_dir, runs=runs)
    if m and m[3]:
        return m[0], "the median of %d point(s) finished here (%s)" % (m[2], m[1]), runs
    cpu, ratios = host_cpu(runs), relative_rates(runs)
    now = median_rate([r for r in runs if r.here and not r.finished], ratios)
    if now:
        return now, "the median so far of the runs training here (%s)" % cpu, runs
    if m:
        return m[0], "the median of %d point(s) finished on other %s hosts" % (m[2], m[1]), runs
    if runs:
        return 1250.0, "no rate measured yet on %s: a default" % cpu, runs
    return 1250.0, "no run here records its processor: a default", runs


def minutes_left(rate, ratios, sweep, pid, steps):
    """Wall minutes to train `steps` more steps of a point, evaluation and probes included (OVERHEAD)."""
    return steps * TOKENS_PER_STEP / point_rate(rate, ratios, sweep, pid) / 60 * OVERHEAD


def first_fit(minutes, now, deadline):
    """The index of the first point (in queue order) whose estimated minutes end by `deadline`; None when none does."""
    return next((k for k, m in enumerate(minutes) if now + datetime.timedelta(minutes=m) <= deadline), None)


def clock_time(hhmm, now):
    """HH:MM as the next such time after `now` (today, or tomorrow if already past); None if malformed."""
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", hhmm)
    if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        return None
    t = now.replace(hour=int(m.group(1)), minute=int(m.group(2)), second=0, microsecond=0)
    return t if t > now else t + datetime.timedelta(days=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ablate", default=os.path.join(ROOT, "build", "ablate"))
    ap.add_argument("--lanes", type=int, default=2, help="points trained at once (default 2)")
    ap.add_argument("--threads", type=int, default=1, help="threads per point (OMP_NUM_THREADS, default 1)")
    ap.add_argument("--until", help="HH:MM (today, or tomorrow if already past): stop the running points then")
    ap.add_argument("--last-start", metavar="HH:MM",
                    help="start no point after this time; running ones go on (to --until, or to their end): "
                         "so that a point that cannot finish before a session ends does not start")
    ap.add_argument("--max-points", type=int, default=0, help="start at most this many points (0: all)")
    ap.add_argument("--rate", type=float,
                    help="tokens/s of this processor's median lane, for the estimates of --dry-run and --fit (default: "
                         "the median of the points finished on this host's processor, from their metrics.jsonl; "
                         "else of its unfinished runs; 1250 when there are none); each variant's rate is this times "
                         "its rate relative to the others on the processors it ran on")
    ap.add_argument("--fit", action="store_true",
                    help="with --until: start only points that the estimate says end before it, taking a later "
                         "point of the queue that fits when the next does not (for hosts whose run directories "
                         "do not outlast the session, where a point stopped unfinished is lost)")
    ap.add_argument("--first", action="append", default=[], metavar="SWEEP[:PREFIX]",
                    help="train these points before the rest of the queue (their run ids start with PREFIX; "
                         "repeatable, in the order given): to finish one prediction's seeds sooner")
    ap.add_argument("--dry-run", action="store_true", help="print the queue and its state; train nothing")
    a = ap.parse_args()
    if not os.path.exists(a.ablate):
        ap.error(f"--ablate {a.ablate}: no such binary (scripts/build.sh ablate)")
    if a.lanes < 1 or a.threads < 1:
        ap.error("--lanes and --threads must be at least 1")
    if a.rate is not None and not a.rate > 0:
        ap.error(f"--rate {a.rate:g}: expected tokens/s above 0")
    now = datetime.datetime.now()
    deadline = last_start = None
    if a.until:
        deadline = clock_time(a.until, now)
        if deadline is None:
            ap.error(f"--until {a.until}: expected HH:MM")
    if a.last_start:
        last_start = clock_time(a.last_start, now)
        if last_start is None:
            ap.error(f"--last-start {a.last_start}: expected HH:MM")
        if deadline and last_start > deadline:
            ap.error(f"--last-start {a.last_start} is after --until {a.until}")
    if a.fit and not deadline:
        ap.error("--fit: needs --until (the time the points must end by)")

    # shared points first (a dry run only counts them: finished_hashes matches by hash)
    share_points.share(a.ablate, share_points.tier_sweeps(natural_only=True), dry_run=a.dry_run, out=lambda _: None)
    queue = build_queue(a.ablate)
    try:
        queue = put_first(queue, a.first)
    except ValueError as e:
        ap.error(str(e))
    done = finished_hashes(a.ablate)
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as ex:
        status = dict(zip(SWEEPS, ex.map(lambda s: sweep_status(a.ablate, s), SWEEPS)))
    todo = [q for q in queue if share_points.hash_of(q[2]) not in done]
    runs_dir = os.path.join(HERE, "runs")
    if a.dry_run:
        rate, source, runs = host_rate(runs_dir, a.rate)
        ratios = relative_rates(runs)
        left = minutes = 0
        for sweep, i, pid, d, target, why in queue:
            state, step = status[sweep].get(pid, ("pending", 0))
            if share_points.hash_of(pid) in done:
                step = target
            state = state_label(state, step, share_points.hash_of(pid) in done)
            left += target - step
            mins = minutes_left(rate, ratios, sweep, pid, target - step)
            minutes += mins
            print("%-12s %-24s %3d  %-58s %s%s" % (state, sweep, i, pid, why,
                                                   "  (~%.0f min)" % mins if step < target else ""))
        print("%d distinct points, %d finished, %d to train: %.1f M tokens, ~%.0f h with %d lane(s) at %.0f tokens/s "
              "each (%s; each variant at its measured rate relative to the others)"
              % (len(queue), len(queue) - len(todo), len(todo), left * TOKENS_PER_STEP / 1e6, minutes / 60 / a.lanes,
                 a.lanes, rate, source))
        return

    # A point another process is training (an earlier queue, a `sweep run` by hand) is left to it.
    busy = [q for q in todo if status[q[0]].get(q[2], ("",))[0] == "running"]
    todo = [q for q in todo if q not in busy]
    log_path = os.path.join(runs_dir, "cpu_queue.log")
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    lock = threading.Lock()
    stop = threading.Event()
    share_lock = threading.Lock()
    running = {}  # lane -> Popen
    stopped = []  # ids of the points a stop left unfinished
    started = [0]
    late = [False]

    def log(msg):
        line = "%s %s" % (datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"), msg)
        print(line, flush=True)
        with open(log_path, "a") as f:
            f.write(line + "\n")

    def stop_all(why):
        # Once: a trainer that gets a second signal more than a second after the first exits at
        # once, without its checkpoint.
        if stop.is_set():
            return
        log("stop: " + why)
        with lock:
            stop.set()
            procs = list(running.values())
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)  # the sweep and its trainer: it checkpoints
            except ProcessLookupError:
                pass

    def next_item():
        with lock:
            if stop.is_set() or not todo or (a.max_points and started[0] >= a.max_points):
                return None
            if last_start and datetime.datetime.now() >= last_start:
                if not late[0]:
                    late[0] = True
                    log("queue: --last-start %s passed; no further point starts" % a.last_start)
                return None
            k = 0
            if a.fit:
                rate, _, runs = host_rate(runs_dir, a.rate)
                ratios = relative_rates(runs)
                mins = [minutes_left(rate, ratios, sweep, pid, target - last_step(d))
                        for sweep, _, pid, d, target, _ in todo]
                k = first_fit(mins, datetime.datetime.now(), deadline)
                if k is None:
                    if todo:
                        log("queue: no queued point would end before --until %s (the next, %s %d, takes ~%.0f min): "
                            "this lane stops (--fit; another lane re-estimates when its point ends)"
                            % (a.until, todo[0][0], todo[0][1], mins[0]))
                    return None
                if k > 0:
                    log("queue: %d point(s) ahead of %s %d would end after --until %s (the first takes ~%.0f min): "
                        "they wait (--fit)" % (k, todo[k][0], todo[k][1], a.until, mins[0]))
            started[0] += 1
            return todo.pop(k)

    def lane(n):
        env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
        while (item := next_item()) is not None:
            sweep, i, pid, d, target, why = item
            # Another process may have taken or finished it since the queue was read (a second
            # queue, a `sweep run` by hand): its lock would keep this lane waiting for nothing.
            state = sweep_status(a.ablate, sweep).get(pid, ("pending", 0))[0]
            if state in ("running", "done"):
                log("lane %d: skip %s %d %s (%s elsewhere)" % (n, sweep, i, pid, state))
                continue
            log("lane %d: start %s %d %s (%s)" % (n, sweep, i, pid, why))
            with lock:  # started and registered at once, so that a stop cannot miss it
                if stop.is_set():
                    break
                p = subprocess.Popen(["nice", "-n", "10", a.ablate, "--log-level", "warn", "sweep", "run",
                                      os.path.join(HERE, sweep + ".yaml"), "--only", str(i)], cwd=ROOT, env=env,
                                     start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
                running[n] = p
            err = p.communicate()[1]
            # After a stop the trainer (same process group) is still writing its checkpoint.
            while True:
                try:
                    os.killpg(p.pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.5)
            with lock:
                running.pop(n, None)
            tail = err.strip().splitlines()[-1] if err.strip() else ""
            if stop.is_set() and p.returncode != 0:
                log("lane %d: stopped %s %d at step %d/%d (its checkpoint; the next call resumes it)"
                    % (n, sweep, i, last_step(d), target))
                with lock:
                    stopped.append(pid)
                break
            log("lane %d: end %s %d rc=%d at step %d/%d%s" % (n, sweep, i, p.returncode, last_step(d), target,
                                                               (": " + tail) if tail else ""))
            if p.returncode == 0:
                with share_lock:  # both lanes may finish at once: one copies, the other then finds it there
                    try:
                        share_points.share(a.ablate, share_points.tier_sweeps(natural_only=True), out=lambda _: None)
                    except (Exception, SystemExit) as e:  # the lane goes on; the next call shares again
                        log("lane %d: share_points failed: %s" % (n, e))
            elif not stop.is_set():
                log("lane %d: %s %d failed; the lane goes on with the next point" % (n, sweep, i))

    signal.signal(signal.SIGTERM, lambda *_: stop_all("SIGTERM"))
    signal.signal(signal.SIGINT, lambda *_: stop_all("interrupted"))
    log("queue: %d points to train (%d running elsewhere, left to it), %d lane(s) x %d thread(s)%s" % (
        len(todo), len(busy), a.lanes, a.threads,
        (", until %s" % deadline.strftime("%Y-%m-%d %H:%M") if deadline else "")
        + (", no start after %s" % last_start.strftime("%Y-%m-%d %H:%M") if last_start else "")))
    lanes = [threading.Thread(target=lane, args=(n,), daemon=True) for n in range(a.lanes)]
    for t in lanes:
        t.start()
    while any(t.is_alive() for t in lanes):
        if deadline and datetime.datetime.now() >= deadline:
            stop_all("--until %s reached" % a.until)
        time.sleep(1)
    # Counted again from the run directories: the lanes took the stopped and failed points off `todo`.
    done = finished_hashes(a.ablate)
    left = [q for q in queue if share_points.hash_of(q[2]) not in done]
    log("queue: %d points left (%d of them stopped unfinished: the next call resumes them)" % (len(left), len(stopped)))


if __name__ == "__main__":
    main()
