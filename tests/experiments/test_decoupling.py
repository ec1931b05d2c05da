"""The decoupling experiments' scripts (experiments/decoupling): the verdict rule of make_results.py,
which RESULTS.md's verdicts rest on, and the CPU order of natural/cpu_queue.py.

Run by CTest (`experiments`) with the project's Python; ABLATE_BIN names the built binary (the
queue's test reads the natural sweeps' plans with it, which needs no data).
"""
import datetime
import json
import math
import os
import statistics
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DECOUPLING = os.path.join(ROOT, "experiments", "decoupling")
sys.path.insert(0, DECOUPLING)
sys.path.insert(0, os.path.join(DECOUPLING, "natural"))

import make_results as mr  # noqa: E402
import share_points  # noqa: E402


def pts(values, metric="spike_magnitude", state="done"):
    """Points of one variant: seed -> value."""
    return [{"seed": str(s), "state": state, metric: v} for s, v in values.items()]


class Paired(unittest.TestCase):
    def test_mean_and_standard_error_of_the_paired_differences(self):
        d, se, n = mr.paired({"0": 1.0, "1": 2.0, "2": 3.0}, {"0": 2.0, "1": 4.0, "2": 6.0})
        self.assertEqual(n, 3)
        self.assertAlmostEqual(d, 2.0)
        self.assertAlmostEqual(se, 1.0 / 3 ** 0.5)  # differences 1, 2, 3: sd 1

    def test_only_seeds_both_have_are_paired(self):
        d, se, n = mr.paired({"0": 1.0, "1": 1.0}, {"1": 3.0, "2": 9.0})
        self.assertEqual((n, se), (1, None))
        self.assertAlmostEqual(d, 2.0)

    def test_log_pairs_ratios(self):
        d, _, n = mr.paired({"0": 100.0, "1": 1000.0}, {"0": 10.0, "1": 100.0}, log=True)
        self.assertEqual(n, 2)
        self.assertAlmostEqual(d, -1.0)


def t_cdf(x, df):
    """P(T <= x) for Student's t with df degrees of freedom, x >= 0 (mr.t_coverage is P(|T| < x),
    checked against the closed forms in test_interval_coverage)."""
    return 0.5 + mr.t_coverage(x, df + 1, steps=4000) / 2


class Controls(unittest.TestCase):
    def test_a_control_gives_the_effect_and_its_t_interval(self):
        ref = pts({"0": 100.0, "1": 100.0, "2": 100.0})
        var = pts({"0": 10.0, "1": 100.0, "2": 1000.0})  # log10 ratios -1, 0, +1: mean 0, s.e. 1/sqrt(3)
        txt = mr.control_effect("spike_magnitude", ref, var)
        hi = 10 ** (4.3027 / 3 ** 0.5)
        self.assertIn("x1, 95 %% interval x%.3g to x%.3g" % (1 / hi, hi), txt)
        self.assertIn("s.e. 0.577, n 3", txt)
        diff = mr.control_effect("sink_mass", pts({"0": 0.1, "1": 0.2}, "sink_mass"),
                                 pts({"0": 0.2, "1": 0.4}, "sink_mass"))
        self.assertIn("diff +0.15, 95 %% interval %+.4g to %+.4g" % (0.15 - 12.7062 * 0.05, 0.15 + 12.7062 * 0.05), diff)
        self.assertEqual(mr.control_effect("spike_magnitude", ref, pts({"0": 5.0})), "1 paired seed(s)")
        self.assertEqual(mr.control_effect("spike_magnitude", None, var), "sweep not run (no report)")
        self.assertEqual(mr.control_effect("spike_magnitude", ref, pts({"0": None})),  # not finished: no value
                         "no finished seed of the variant yet")


class Critical(unittest.TestCase):
    def test_t_quantiles(self):
        # the table (n 2..31) and the expansion beyond it are Student's t 0.975 quantiles with n - 1 df
        for n in list(range(2, 33)) + [41, 61, 121]:
            k = mr.t_crit(n)  # to its 4 decimals: the exact quantile lies within 0.00006 of it
            self.assertLess(t_cdf(k - 6e-5, n - 1), 0.975, "n %d" % n)
            self.assertGreater(t_cdf(k + 6e-5, n - 1), 0.975, "n %d" % n)
        self.assertEqual((mr.t_crit(2), mr.t_crit(3), mr.t_crit(8)), (12.7062, 4.3027, 2.3646))
        with self.assertRaises(ValueError):
            mr.t_crit(1)

    def test_interval_coverage(self):
        # closed forms of P(|T| < k): 2/pi atan(k) at 1 df, k / sqrt(k^2 + 2) at 2 df; t_crit's quantiles cover 95 %
        for k in (0.5, 2.0, 12.706):
            self.assertAlmostEqual(mr.t_coverage(k, 2), 2 / math.pi * math.atan(k), places=5)
            self.assertAlmostEqual(mr.t_coverage(k, 3), k / math.sqrt(k * k + 2), places=5)
        for n in (2, 3, 5, 8, 20):
            self.assertAlmostEqual(mr.t_coverage(mr.t_crit(n), n), 0.95, places=3)
        self.assertEqual(round(100 * mr.t_coverage(2, 2)), 70)  # RESULTS.md's "a flat 2 s.e." figures
        self.assertEqual(round(100 * mr.t_coverage(2, 3)), 82)

    def test_every_prediction_with_controls_names_them(self):
        # the verdict rule's list of controls is built from these names
        for tier in mr.TIER_PARAMS:
            preds = mr.predictions(mr.TIER_PARAMS[tier])
            with_controls = [p["id"] for p in preds if p.get("controls")]
            self.assertEqual(with_controls, ["P4", "P8b", "P11", "P14"], tier)
            for p in preds:
                self.assertEqual(bool(p.get("controls_are")), bool(p.get("controls")), p["id"])

    def test_few_seeds_need_a_larger_effect(self):
        # log10 differences +0.9, +1.3, +0.5: mean 0.9, s.e. 0.231, 3.9 s.e. from 0 -- beyond a flat
        # 2 s.e. but within t's 4.30 at n 3; five seeds of the same spread clear t's 2.78 at n 5
        base = pts({0: 10, 1: 10, 2: 10})
        var = pts({0: 10 ** 1.9, 1: 10 ** 2.3, 2: 10 ** 1.5})
        v, ev = mr.run_test("up", "spike_magnitude", base, var)
        self.assertEqual(v, "inconclusive", ev)
        self.assertTrue(ev.endswith("within 4.3 s.e."), ev)
        base5 = pts({s: 10 for s in range(5)})
        var5 = pts({0: 10 ** 1.9, 1: 10 ** 2.3, 2: 10 ** 1.5, 3: 10 ** 2.3, 4: 10 ** 1.5})
        v, ev = mr.run_test("up", "spike_magnitude", base5, var5)
        self.assertEqual(v, "reproduced in direction", ev)
        self.assertTrue(ev.endswith("beyond 2.78 s.e."), ev)


class Tests(unittest.TestCase):
    def test_direction(self):
        base = pts({0: 1000, 1: 1200, 2: 800})
        down = pts({0: 100, 1: 130, 2: 75})
        self.assertEqual(mr.run_test("down", "spike_magnitude", base, down)[0], "reproduced in direction")
        self.assertEqual(mr.run_test("up", "spike_magnitude", base, down)[0], "not reproduced")
        noisy = pts({0: 2000, 1: 600, 2: 900})
        self.assertEqual(mr.run_test("down", "spike_magnitude", base, noisy)[0], "inconclusive")

    def test_fewer_than_two_paired_seeds_is_inconclusive(self):
        v, ev = mr.run_test("down", "spike_magnitude", pts({0: 1000}), pts({0: 1}))
        self.assertEqual(v, "inconclusive")
        self.assertIn("1 paired seed", ev)

    def test_a_sink_cannot_stay_where_the_baseline_has_none(self):
        base = pts({0: 0.0, 1: 0.0, 2: 0.0}, "sink_eps_max")
        var = pts({0: 0.0, 1: 0.25, 2: 0.0}, "sink_eps_max")
        v, ev = mr.run_test("stays", "sink_eps_max", base, var)
        self.assertEqual(v, "inconclusive")
        self.assertIn("no sink", ev)

    def test_a_sink_test_against_a_baseline_without_one_is_untestable(self):
        base = pts({0: 0.0, 1: 0.0, 2: 0.0}, "sink_eps_max")
        # read without the variant's seeds, for "down" and "stays" alike
        for kind in ("down", "stays"):
            v, ev = mr.run_test(kind, "sink_eps_max", base, [])
            self.assertEqual(v, "inconclusive")
            self.assertIn("none is needed: the baseline has no sink", ev)
            self.assertTrue(mr.baseline_without_sink(kind, "sink_eps_max", base))
        # with them, the difference is shown and the verdict still inconclusive
        v, ev = mr.run_test("down", "sink_eps_max", base, pts({0: 0.0, 1: 0.0, 2: 0.0}, "sink_eps_max"))
        self.assertEqual(v, "inconclusive")
        self.assertIn("diff +0", ev)
        # with one paired seed the missing sink is the reason given first
        v, ev = mr.run_test("down", "sink_eps_max", base, pts({0: 0.0}, "sink_eps_max"))
        self.assertEqual(v, "inconclusive")
        self.assertTrue(ev.startswith("the baseline has no sink to remove"), ev)
        self.assertIn("1 paired seed", ev)
        # a sink can still appear: "up" stays readable; so does any test of a baseline with a sink
        self.assertIsNone(mr.baseline_without_sink("up", "sink_eps_max", base))
        self.assertEqual(mr.run_test("up", "sink_eps_max", base, [])[0], "not run yet")
        self.assertIsNone(mr.baseline_without_sink("down", "sink_eps_max", pts({0: 0.4, 1: 0.0, 2: 0.3}, "sink_eps_max")))
        # one seed is not enough to call the baseline sink-free, nor is a spike metric a sink test
        self.assertIsNone(mr.baseline_without_sink("down", "sink_eps_max", pts({0: 0.0}, "sink_eps_max")))
        self.assertIsNone(mr.baseline_without_sink("down", "spike_magnitude", pts({0: 1.0, 1: 2.0})))

    def test_a_variant_metric_reads_the_variant_only(self):
        # P13: the sigmoid variant's row-share Sink^0.3 against the softmax baseline's raw one
        base = pts({0: 0.5, 1: 0.5, 2: 0.5}, "sink_eps_max")
        raw = pts({0: 1.0, 1: 1.0, 2: 1.0}, "sink_eps_max")
        share = [dict(p, sink_eps_share_max=0.0) for p in raw]
        self.assertEqual(mr.run_test("down", "sink_eps_max", base, share, "sink_eps_share_max")[0],
                         "reproduced in direction")
        self.assertEqual(mr.run_test("down", "sink_eps_max", base, share)[0], "not reproduced")
        # finished seeds probed before the probe recorded the variant's measure: said so, not "not run"
        v, ev = mr.run_test("down", "sink_eps_max", base, raw, "sink_eps_share_max")
        self.assertEqual(v, "inconclusive")
        self.assertIn("3 finished seed(s) were probed before the probe recorded sink_eps_share_max", ev)
        v, ev = mr.run_test("down", "sink_eps_max", pts({0: 0.0, 1: 0.0, 2: 0.0}, "sink_eps_max"), raw,
                            "sink_eps_share_max")
        self.assertIn("; and the baseline has no sink to remove", ev)
        # some seeds with the share, one without: the one left out is named in the evidence
        mixed = share[:2] + raw[2:]
        v, ev = mr.run_test("down", "sink_eps_max", base, mixed, "sink_eps_share_max")
        self.assertIn("n 2; baseline mean 0.5; 1 more finished seed(s) probed before the probe recorded "
                      "sink_eps_share_max", ev)

    def test_probe_numbers_read_the_row_share(self):
        n = mr.probe_numbers({"sink": {"sink_eps_per_layer": [1.0, 0.5], "sink_eps_share_per_layer": [0.0, 0.5]}})
        self.assertEqual((n["sink_eps_max"], n["sink_eps_share_max"]), (1.0, 0.5))
        self.assertIsNone(mr.probe_numbers({"sink": {"sink_eps_per_layer": [1.0]}})["sink_eps_share_max"])

    def test_stays_and_halved(self):
        base = pts({0: 0.5, 1: 0.5, 2: 0.5}, "sink_eps_max")
        self.assertEqual(mr.run_test("stays", "sink_eps_max", base, pts({0: 0.5, 1: 0.45, 2: 0.55}, "sink_eps_max"))[0],
                         "reproduced in direction")
        self.assertEqual(mr.run_test("stays", "sink_eps_max", base, pts({0: 0.0, 1: 0.05, 2: 0.0}, "sink_eps_max"))[0],
                         "not reproduced")

    def test_present_against_the_threshold(self):
        self.assertEqual(mr.run_test("present", "sink_eps_max", None, pts({0: 0.5, 1: 0.5, 2: 0.4}, "sink_eps_max"))[0],
                         "reproduced in direction")
        self.assertEqual(mr.run_test("present", "sink_eps_max", None, pts({0: 0.0, 1: 0.0}, "sink_eps_max"))[0],
                         "not reproduced")
        self.assertEqual(mr.run_test("present", "sink_eps_max", None, pts({0: 0.5}, "sink_eps_max"))[0], "inconclusive")

    def test_a_lower_bound_below_the_spike_threshold_is_not_a_refutation(self):
        # Records without per-block ratios: block_ratio is the ratio at the block of the largest
        # activation, a lower bound of the per-block ratio the threshold is about.
        var = [{"seed": str(s), "state": "done", "block_ratio": 40.0, "ratio_block_max": None} for s in range(3)]
        self.assertEqual(mr.run_test("present", "block_ratio", None, var)[0], "inconclusive")
        for p in var:
            p["ratio_block_max"] = 40.0
        self.assertEqual(mr.run_test("present", "block_ratio", None, var)[0], "not reproduced")

    def test_trend(self):
        series = [(x, pts({0: 10 ** (1 + x), 1: 10 ** (1.2 + x), 2: 10 ** (0.9 + 1.1 * x)})) for x in (3, 4, 5)]
        self.assertEqual(mr.run_trend("trend_up", "spike_magnitude", series)[0], "reproduced in direction")
        self.assertEqual(mr.run_trend("trend_down", "spike_magnitude", series)[0], "not reproduced")
        # a point with no finished seed: no data yet, not an inconclusive test
        v, ev = mr.run_trend("trend_up", "spike_magnitude", series[:2] + [(5, pts({0: None}))])
        self.assertEqual((v, ev), ("not run yet", "no finished seed yet in 1 of the 3 points"))
        # every point has a seed, but not the same one: fewer than 2 seeds in every point
        v, ev = mr.run_trend("trend_up", "spike_magnitude", series[:2] + [(5, pts({7: 1.0}))])
        self.assertEqual((v, ev), ("inconclusive", "0 seed(s) in every point"))

    def test_combine(self):
        r, n, i, nr = "reproduced in direction", "not reproduced", "inconclusive", "not run yet"
        self.assertEqual(mr.combine([r, r]), r)
        self.assertEqual(mr.combine([r, n]), "partly reproduced (1 of 2 tests reproduced)")
        self.assertEqual(mr.combine([n, i]), "not reproduced (0 of 2 tests reproduced)")
        self.assertEqual(mr.combine([r, nr]), r + " (partial data)")
        self.assertEqual(mr.combine([nr, nr]), nr)
        # Every test has data, but a variant they read has seeds still to train.
        self.assertEqual(mr.combine([r, i], short=True), "inconclusive (1 of 2 tests reproduced) (partial data)")
        self.assertEqual(mr.combine([nr, nr], short=True), nr)
        # Untestable tests count for neither side; a prediction with only such tests is inconclusive.
        u = mr.UNTESTABLE
        self.assertEqual(mr.combine([r, u]), r + " (1 sink test untestable: the baseline has no sink)")
        self.assertEqual(mr.combine([r, n, u, u]),
                         "partly reproduced (1 of 2 tests reproduced) (2 sink tests untestable: the baseline has no sink)")
        self.assertEqual(mr.combine([u, u]), "inconclusive (untestable: the baseline has no sink)")
        self.assertEqual(mr.combine([nr, u]), nr + " (1 sink test untestable: the baseline has no sink)")


class FinishedOnly(unittest.TestCase):
    """A point stopped before its last step (a session's end) must not enter the tables or tests."""

    def sweep(self):
        tp = mr.TIER_PARAMS["natural"]
        base = mr.base_for(tp)["norm-placement"]
        sand = {"model.norm.placement": "sandwich"}
        out = []
        for s, (b, v, state) in enumerate([(600.0, 80.0, "done"), (500.0, 70.0, "done"), (550.0, 900.0, "failed")]):
            for vars_, val, st in ((base, b, "done"), (sand, v, state)):
                out.append({"vars": vars_, "seed": str(s), "state": st, "spike_magnitude": val, "val_loss": 4.0,
                            "sink_eps_max": 0.0, "curve": [{"step": 250}]})
        return mr.Data({"norm-placement": out}, tp)

    def test_the_stopped_seed_is_left_out(self):
        data = self.sweep()
        var = data.select(mr.V("norm-placement", placement="sandwich"))
        self.assertEqual([p["spike_magnitude"] for p in var], [80.0, 70.0, None])
        self.assertEqual(var[2]["curve"], [{"step": 250}])  # its curve stays for the emergence plot
        v, ev = mr.run_test("down", "spike_magnitude", data.select(("norm-placement", {"model.norm.placement": "pre"})),
                            var)
        self.assertIn("n 2", ev)
        self.assertEqual(v, "reproduced in direction")
        self.assertIn("| 2/3 |", mr.row_for(data, mr.V("norm-placement", placement="sandwich")))


class DidNotLearn(unittest.TestCase):
    """A finished seed whose val loss hardly fell (the natural tier's DyT seed 0) is left out of the
    tables and tests, and the report says which seed and why."""

    def test_the_rule(self):
        self.assertEqual(mr.stalled([(2000, 6.969), (250, 7.014)]), ((250, 7.014), (2000, 6.969)))
        self.assertIsNone(mr.stalled([(250, 5.30), (2000, 4.24)]))  # the baseline: 20 % down
        self.assertIsNone(mr.stalled([(2000, 6.9)]))  # one evaluation says nothing
        self.assertIsNone(mr.stalled(None))

    def sweep(self, stalled_seeds):
        tp = mr.TIER_PARAMS["natural"]
        base = mr.base_for(tp)["norm-placement"]
        sand = {"model.norm.placement": "sandwich"}
        out = []
        for s, (b, v) in enumerate([(600.0, 80.0), (500.0, 70.0), (550.0, 900.0)]):
            for vars_, val in ((base, b), (sand, v)):
                evals = [(250, 7.0), (2000, 6.95 if vars_ is sand and s in stalled_seeds else 4.2)]
                out.append({"sweep": "natural-norm-placement", "id": "%s%d" % (vars_["model.norm.placement"], s),
                            "vars": vars_, "seed": str(s), "state": "done", "spike_magnitude": val,
                            "val_loss": evals[-1][1], "sink_eps_max": 0.0, "curve": [],
                            "stalled": mr.stalled(evals)})
        return mr.Data({"norm-placement": out}, tp)

    def test_a_seed_that_did_not_learn_is_left_out(self):
        data = self.sweep({2})
        sel = mr.V("norm-placement", placement="sandwich")
        var = data.select(sel)
        self.assertEqual([p["spike_magnitude"] for p in var], [80.0, 70.0, None])
        base = ("norm-placement", mr.base_for(mr.TIER_PARAMS["natural"])["norm-placement"])
        test = ("spike", "down", "spike_magnitude", base, sel)
        v, ev = mr.run_test("down", "spike_magnitude", data.select(test[3]), var)
        self.assertEqual(v, "reproduced in direction")  # seed 2's 900 would have made it inconclusive
        failed = mr.stalled_seeds(data, mr.test_selections(test))
        self.assertEqual([n for n, _ in failed], ["norm-placement: sandwich seed 2"])
        lab, v2, ev2 = mr.leave_out_stalled(("spike", v, ev), failed)
        self.assertEqual(v2, v)
        self.assertIn("left out: norm-placement: sandwich seed 2 (did not learn)", ev2)
        self.assertIn("| 2/3 (1 did not learn) |", mr.row_for(data, sel))

    def test_a_variant_with_no_seed_that_learned_is_inconclusive(self):
        data = self.sweep({0, 1, 2})
        sel = mr.V("norm-placement", placement="sandwich")
        base = ("norm-placement", mr.base_for(mr.TIER_PARAMS["natural"])["norm-placement"])
        r = mr.run_test("down", "spike_magnitude", data.select(base), data.select(sel))
        self.assertEqual(r[0], "not run yet")
        failed = mr.stalled_seeds(data, [base, sel])
        self.assertEqual(len(failed), 3)
        self.assertEqual(mr.leave_out_stalled(("spike",) + r, failed)[1], "inconclusive")


class Untestable(unittest.TestCase):
    """The natural tier's baseline has no sink: P8b (sink tests only) gets its verdict without its
    variants' seeds, and P8's verdict waits only for its spike tests."""

    def render(self, gate_sink):
        tp = mr.TIER_PARAMS["natural"]
        none = mr.base_for(tp)["gates"]
        static = {"model.attention.gate.kind": "static", "model.attention.gate.granularity": "headwise"}
        out = []
        for s in range(3):
            out.append({"sweep": "natural-gates", "id": "none%d" % s, "vars": none, "seed": str(s), "state": "done",
                        "spike_magnitude": 500.0, "val_loss": 4.2, "sink_eps_max": gate_sink, "curve": []})
            out.append({"sweep": "natural-gates", "id": "static%d" % s, "vars": static, "seed": str(s),
                        "state": "pending", "curve": []})
        lines = []
        mr.render_tier("natural", "test", {"gates": "natural/natural-gates.yaml"}, mr.Data({"gates": out}, tp), lines)
        return {l.split(" | ")[0][2:]: l.split("**")[1] for l in lines if l.startswith("| P8")}

    def test_sink_only_predictions_do_not_wait_for_their_variants(self):
        v = self.render(0.0)
        self.assertEqual(v["P8b"], "inconclusive (untestable: the baseline has no sink)")
        self.assertEqual(v["P8"], "not run yet (2 sink tests untestable: the baseline has no sink)")

    def test_with_a_sink_in_the_baseline_they_wait(self):
        v = self.render(0.4)
        self.assertEqual(v["P8b"], "not run yet")
        self.assertEqual(v["P8"], "not run yet")


class Processors(unittest.TestCase):
    """The natural tier names the processors its finished runs trained on, each distinct run once."""

    def test_distinct_finished_runs_by_processor(self):
        amd, xeon = "AMD EPYC (avx2)", "Intel Xeon (avx512_bf16)"
        sweeps = {
            "norm-placement": [
                {"id": "placement=pre_seed=0_aaaa", "state": "done", "cpu": amd, "tokens_per_s": [1000.0, 2000.0, 3000.0]},
                {"id": "placement=sandwich_seed=0_bbbb", "state": "done", "cpu": xeon, "tokens_per_s": [2500.0]},
                {"id": "placement=post_seed=0_cccc", "state": "running", "cpu": xeon, "tokens_per_s": [9000.0]},
                {"id": "placement=post_seed=1_dddd", "state": "done"},  # numbers from the CSVs: no run directory
            ],
            # the shared baseline copied into a second sweep: the same run
            "weight-decay": [{"id": "weight_decay=0.0_seed=0_aaaa", "state": "done", "cpu": amd,
                              "tokens_per_s": [1000.0, 2000.0, 3000.0]},
                             {"id": "weight_decay=0.1_seed=0_eeee", "state": "done", "cpu": None, "tokens_per_s": []}],
            "gates": None,
        }
        line = mr.processors(sweeps)
        self.assertIn("of the 3 finished runs", line)
        self.assertIn(amd + ": 1 (median 2.0 k tokens/s", line)
        self.assertIn(xeon + ": 1 (median 2.5 k tokens/s", line)
        self.assertIn("not recorded (started before run.json named the CPU): 1.", line)
        self.assertIn("different processors", line)
        self.assertEqual(mr.processors({"gates": None}), "")
        one = mr.processors({"norm-placement": sweeps["norm-placement"][:1]})
        self.assertIn(amd + ": 1", one)
        self.assertNotIn("different processors", one)


class QueueClock(unittest.TestCase):
    def test_clock_times_roll_over_to_tomorrow(self):
        import cpu_queue
        now = datetime.datetime(2026, 12, 2, 9, 30, 15)
        self.assertEqual(cpu_queue.clock_time("10:05", now), datetime.datetime(2026, 12, 2, 10, 5))
        self.assertEqual(cpu_queue.clock_time("9:30", now), datetime.datetime(2026, 12, 3, 9, 30))
        self.assertEqual(cpu_queue.clock_time("00:00", now), datetime.datetime(2026, 12, 3, 0, 0))
        for bad in ("24:00", "9:60", "930", "9:5", ""):
            self.assertIsNone(cpu_queue.clock_time(bad, now), bad)

    def test_a_stopped_point_is_told_from_a_pending_one(self):
        import cpu_queue
        self.assertEqual(cpu_queue.state_label("pending", 0, False), "pending")
        self.assertEqual(cpu_queue.state_label("pending", 1801, False), "stopped 1801")
        self.assertEqual(cpu_queue.state_label("running", 640, False), "running 640")
        self.assertEqual(cpu_queue.state_label("failed", 12, False), "failed 12")
        self.assertEqual(cpu_queue.state_label("pending", 2000, True), "done")

    def test_a_bad_clock_flag_exits_2(self):
        import subprocess
        script = os.path.join(DECOUPLING, "natural", "cpu_queue.py")
        for args, message in ((["--last-start", "25:00"], "--last-start 25:00"), (["--until", "7pm"], "--until 7pm"),
                              (["--rate", "0"], "--rate 0"), (["--fit"], "--fit: needs --until")):
            r = subprocess.run([sys.executable, script, "--ablate", sys.executable] + args,
                               capture_output=True, text=True)
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn(message, r.stderr)
            self.assertNotIn("Traceback", r.stderr)

    def test_the_estimate_rate_is_measured_on_the_newest_runs_processor(self):
        import cpu_queue

        def run(tmp, name, cpu, time, rates, done=True, here=False):
            d = os.path.join(tmp, "sweep", name)
            os.makedirs(d)
            if here:  # trained in this directory: the trainer's log, which a restored record lacks
                open(os.path.join(d, "train.log"), "w").close()
            with open(os.path.join(d, "run.json"), "w") as f:
                json.dump({"provenance": {"cpu": cpu, "time": time} if cpu else {"time": time}}, f)
            with open(os.path.join(d, "metrics.jsonl"), "w") as f:
                for step, r in rates:
                    f.write(json.dumps({"step": step, "tokens_per_s": r}) + "\n")
                f.write('{"step": 100, "probe": {}}\nnot json\n')
            if done:
                open(os.path.join(d, "done"), "w").close()

        with tempfile.TemporaryDirectory() as tmp:
            self.assertIsNone(cpu_queue.measured_rate(os.path.join(tmp, "missing")))
            run(tmp, "v_seed=0_00000001", None, "2026-11-01T00:00:00Z", [(60, 9000.0)])
            self.assertIsNone(cpu_queue.measured_rate(tmp))
            run(tmp, "v_seed=0_00000002", "AMD EPYC (avx2)", "2026-11-02T00:00:00Z", [(60, 1200.0), (70, 1300.0)])
            run(tmp, "v_seed=0_00000003", "Intel Xeon (amx)", "2026-12-01T00:00:00Z", [(10, 50.0), (60, 1800.0), (70, 2000.0)])
            run(tmp, "v_seed=1_00000004", "Intel Xeon (amx)", "2026-12-02T00:00:00Z", [(60, 1900.0)])
            run(tmp, "v_seed=2_00000005", "Intel Xeon (amx)", "2026-12-03T00:00:00Z", [(60, 100.0)], done=False)
            # the newest run (xeon3, still running) names the processor; only finished points count,
            # and the first 50 steps (warm-up) do not
            self.assertEqual(cpu_queue.measured_rate(tmp), (1900.0, "Intel Xeon (amx)", 2, False))
            run(tmp, "v_seed=1_00000006", "AMD EPYC (avx2)", "2026-12-04T00:00:00Z", [(60, 1000.0)])
            self.assertEqual(cpu_queue.measured_rate(tmp), (1200.0, "AMD EPYC (avx2)", 2, False))
            # a run with an earlier one's hash (a copy made by share_points.py, in another sweep) is that
            # run's measurement, not another one
            d = os.path.join(tmp, "other-sweep", "w_seed=1_00000006")
            os.makedirs(os.path.dirname(d))
            os.rename(os.path.join(tmp, "sweep", "v_seed=1_00000006"), d)
            run(tmp, "v_seed=1_00000006", "AMD EPYC (avx2)", "2026-12-04T01:00:00Z", [(60, 1000.0)])
            self.assertEqual(cpu_queue.measured_rate(tmp), (1200.0, "AMD EPYC (avx2)", 2, False))
            self.assertEqual(len(cpu_queue.scan_runs(tmp)), 5)
            # runs trained here (not restored from records) name this host's processor even when a record
            # is newer, and their finished points alone give its rate: hosts of one label differ
            run(tmp, "v_seed=3_00000007", "Intel Xeon (amx)", "2026-11-30T00:00:00Z", [(60, 3000.0)], here=True)
            ratio = cpu_queue.relative_rates(cpu_queue.scan_runs(tmp))[("sweep", "v")]  # its median over processors
            self.assertEqual(cpu_queue.measured_rate(tmp), (3000.0 / ratio, "Intel Xeon (amx)", 1, True))

    def test_each_variant_is_estimated_at_its_rate_relative_to_the_others(self):
        import cpu_queue
        self.assertEqual(cpu_queue.variant_of("n_heads=4_head_dim=128_seed=2_830df7b4"), "n_heads=4_head_dim=128")
        self.assertEqual(cpu_queue.variant_of("seed=0_027dd4d2"), "")
        # Run(time, cpu, sweep, variant, finished, rates, here): on the Xeon the wide heads train at half the
        # processor's median, on the EPYC at 0.6 of it: the median ratio over processors is 0.55
        runs = [cpu_queue.Run("t1", "xeon", "hd", "base", True, [2000.0, 2000.0], False),
                cpu_queue.Run("t2", "xeon", "hd", "wide", True, [1000.0], False),
                cpu_queue.Run("t3", "xeon", "hd", "narrow", False, [3000.0], False),
                cpu_queue.Run("t4", "epyc", "hd", "base", True, [1000.0], False),
                cpu_queue.Run("t5", "epyc", "hd", "wide", True, [600.0], False),
                cpu_queue.Run("t6", "epyc", "hd", "other", True, [1400.0], False)]
        ratios = cpu_queue.relative_rates(runs)
        self.assertAlmostEqual(ratios[("hd", "wide")], (1000 / 2000 + 600 / 1000) / 2)
        self.assertAlmostEqual(ratios[("hd", "narrow")], 1.5)
        # runs trained here (`here` True) are a processor of their own, though their label is the Xeon's:
        # there "wide" runs at 0.8 of this host's median, and the other processors' ratios are as before
        here = cpu_queue.relative_rates(runs + [cpu_queue.Run("t7", "xeon", "hd", "base", True, [3000.0], True),
                                                cpu_queue.Run("t8", "xeon", "hd", "wide", False, [2400.0], True)])
        self.assertAlmostEqual(here[("hd", "wide")], statistics.median([0.5, 0.6, 2400 / 2700]))
        self.assertAlmostEqual(here[("hd", "narrow")], 1.5)
        self.assertAlmostEqual(cpu_queue.point_rate(2400.0, ratios, "hd", "wide_seed=1_abcdef12"), 2400 * 0.55)
        self.assertEqual(cpu_queue.point_rate(2400.0, ratios, "hd", "unseen_seed=0_abcdef12"), 2400.0)
        self.assertEqual(cpu_queue.point_rate(2400.0, ratios, "other-sweep", "wide_seed=0_abcdef12"), 2400.0)
        # 2,000 steps of 4,096 tokens at 2,400 tokens/s: 56.9 min, 10 % more for evaluation and probes
        self.assertAlmostEqual(cpu_queue.minutes_left(2400.0, {}, "hd", "x_seed=0_abcdef12", 2000),
                               2000 * 4096 / 2400 / 60 * 1.10)

    def test_fit_takes_the_first_point_that_ends_in_time(self):
        import cpu_queue
        now = datetime.datetime(2026, 12, 3, 23, 0)
        end = datetime.datetime(2026, 12, 4, 0, 20)
        self.assertEqual(cpu_queue.first_fit([60.0, 94.0], now, end), 0)
        self.assertEqual(cpu_queue.first_fit([94.0, 81.0, 80.0, 10.0], now, end), 2)
        self.assertIsNone(cpu_queue.first_fit([94.0, 81.0], now, end))
        self.assertIsNone(cpu_queue.first_fit([], now, end))

    def test_the_host_rate_falls_back_to_unfinished_runs_then_a_default(self):
        import cpu_queue
        with tempfile.TemporaryDirectory() as tmp:
            rate, source, runs = cpu_queue.host_rate(tmp)
            self.assertEqual((rate, runs), (1250.0, []))
            self.assertEqual(cpu_queue.host_rate(tmp, 999.0)[:2], (999.0, "--rate"))

            def run(name, rates, done, here, time="2026-12-03T22:00:00Z"):
                d = os.path.join(tmp, "sweep", name)
                os.makedirs(d)
                with open(os.path.join(d, "run.json"), "w") as f:
                    json.dump({"provenance": {"cpu": "Xeon", "time": time}}, f)
                with open(os.path.join(d, "metrics.jsonl"), "w") as f:
                    f.write("".join(json.dumps({"step": s, "tokens_per_s": r}) + "\n" for s, r in rates))
                for fn, want in (("done", done), ("train.log", here)):
                    if want:
                        open(os.path.join(d, fn), "w").close()

            # a record restored from another host with this processor's label, not finished: no rate
            run("a_seed=0_abcdef12", ((50, 10.0), (100, 1500.0)), False, False)
            self.assertEqual(cpu_queue.host_rate(tmp)[:2], (1250.0, "no rate measured yet on Xeon: a default"))
            # finished there: its rate, until a run here has passed its warm-up
            run("a_seed=1_abcdef13", ((100, 1800.0), (150, 1900.0)), True, False)
            self.assertEqual(cpu_queue.host_rate(tmp)[:2], (1850.0, "the median of 1 point(s) finished on other Xeon hosts"))
            run("b_seed=0_abcdef14", ((50, 10.0), (100, 2400.0), (150, 2500.0), (200, 2450.0)), False, True,
                "2026-12-01T00:00:00Z")
            rate, source, runs = cpu_queue.host_rate(tmp)
            self.assertEqual((rate, source), (2450.0 / cpu_queue.relative_rates(runs)[("sweep", "b")],
                                              "the median so far of the runs training here (Xeon)"))
            self.assertEqual([r[2:5] + (r[6],) for r in runs],
                             [("sweep", "a", False, False), ("sweep", "a", True, False), ("sweep", "b", False, True)])


class SharePoints(unittest.TestCase):
    def test_run_record_readers(self):
        # the readers make_results (throughput by processor) and cpu_queue (its estimate) share
        recs = [{"step": 50, "tokens_per_s": 900}, {"step": 100, "tokens_per_s": 1800.5},
                {"step": 150, "tokens_per_s": float("nan")}, {"step": 200, "tokens_per_s": True},
                {"step": 250, "split": "val", "loss": 4.0}, "not a record", {"step": 300, "tokens_per_s": 1700}]
        self.assertEqual(share_points.train_rates(recs), [900.0, 1800.5, 1700.0])
        self.assertEqual(share_points.train_rates(recs, skip_steps=50), [1800.5, 1700.0])
        with tempfile.TemporaryDirectory() as tmp:
            self.assertEqual(share_points.provenance(tmp), {})
            with open(os.path.join(tmp, "run.json"), "w") as f:
                f.write('{"provenance": "cut')
            self.assertEqual(share_points.provenance(tmp), {})
            with open(os.path.join(tmp, "run.json"), "w") as f:
                json.dump({"provenance": {"cpu": "Intel Xeon (amx)", "time": "2026-12-03T00:00:00Z"}}, f)
            self.assertEqual(share_points.provenance(tmp)["cpu"], "Intel Xeon (amx)")
            with open(os.path.join(tmp, "metrics.jsonl"), "w") as f:
                f.write('{"step": 50, "tokens_per_s": 1000}\n\n{"step": 100, "tokens_per_s": 12\n')
            self.assertEqual(share_points.read_jsonl(os.path.join(tmp, "metrics.jsonl")),
                             [{"step": 50, "tokens_per_s": 1000}])

    def test_a_shared_run_is_renamed_and_its_checkpoints_are_hard_links(self):
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "a", "x_seed=0_abcd1234")
            os.makedirs(os.path.join(src, "checkpoints", "step_00000010"))
            with open(os.path.join(src, "config.yaml"), "w") as f:
                f.write("name: x_seed=0_abcd1234\nseed: 0\n")
            with open(os.path.join(src, "done"), "w") as f:
                json.dump({"id": "x_seed=0_abcd1234", "step": 10}, f)
            with open(os.path.join(src, "checkpoints", "step_00000010", "model.pt"), "w") as f:
                f.write("weights")
            d = os.path.join(tmp, "b", "y_seed=0_abcd1234")
            os.makedirs(os.path.dirname(d))
            share_points.copy_run(src, d, "y_seed=0_abcd1234")
            with open(os.path.join(d, "config.yaml")) as f:
                self.assertEqual(f.read(), "name: y_seed=0_abcd1234\nseed: 0\n")
            with open(os.path.join(d, "done")) as f:
                self.assertEqual(json.load(f), {"id": "y_seed=0_abcd1234", "step": 10})
            self.assertTrue(os.path.samefile(os.path.join(src, "checkpoints", "step_00000010", "model.pt"),
                                             os.path.join(d, "checkpoints", "step_00000010", "model.pt")))
            self.assertFalse(os.path.exists(d + ".sharing"))
            with open(os.path.join(src, "config.yaml")) as f:  # the source is left as it was
                self.assertIn("name: x_seed=0_abcd1234", f.read())


@unittest.skipUnless(os.environ.get("ABLATE_BIN"), "ABLATE_BIN not set")
class CpuQueue(unittest.TestCase):
    def test_every_distinct_natural_point_is_queued_once_baseline_first(self):
        import cpu_queue
        queue = cpu_queue.build_queue(os.environ["ABLATE_BIN"])
        hashes = [share_points.hash_of(q[2]) for q in queue]
        self.assertEqual(len(hashes), len(set(hashes)))
        planned = {share_points.hash_of(pid) for s in cpu_queue.SWEEPS
                   for pid, _ in share_points.planned(os.environ["ABLATE_BIN"], "natural/" + s)}
        skipped = {share_points.hash_of(pid) for s, prefix, _ in cpu_queue.SKIP
                   for pid, _ in share_points.planned(os.environ["ABLATE_BIN"], "natural/" + s)
                   if pid.startswith(prefix)}
        self.assertEqual(len(skipped), 3)  # natural-norm-type's DyT at alpha0 0.5, every seed
        self.assertEqual(set(hashes), planned - skipped)
        self.assertTrue(any(q[0] == "natural-dyt" and q[2].startswith("type=dyt_") for q in queue))
        self.assertTrue(all(q[2].startswith("placement=pre_seed=") for q in queue[:3]))
        # a variant's seeds in a row
        self.assertEqual([q[2].split("_seed=")[1][0] for q in queue[3:6]], ["0", "1", "2"])
        # the spike-testable variants before the sink-only ones
        last_spike = max(i for i, q in enumerate(queue) if q[5].startswith("P8:"))
        first_gate_control = min(i for i, q in enumerate(queue) if q[2].startswith("kind=static"))
        self.assertLess(last_spike, first_gate_control)

    def test_first_moves_the_named_points_ahead_and_keeps_the_rest_in_order(self):
        import cpu_queue
        queue = cpu_queue.build_queue(os.environ["ABLATE_BIN"])
        moved = cpu_queue.put_first(queue, ["natural-dyt:type=dyt", "natural-ffn-type:type=gelu_seed=2"])
        self.assertEqual(sorted(moved), sorted(queue))
        self.assertEqual([(q[0], q[2].split("_seed=")[1][0]) for q in moved[:4]],
                         [("natural-dyt", "0"), ("natural-dyt", "1"), ("natural-dyt", "2"), ("natural-ffn-type", "2")])
        self.assertTrue(moved[3][2].startswith("type=gelu_seed=2_"))
        self.assertEqual(moved[4:], [q for q in queue if q not in moved[:4]])
        self.assertEqual(cpu_queue.put_first(queue, []), queue)
        for bad, why in (("natural-x", "no sweep 'natural-x'"), ("natural-dyt:zz", "starting with 'zz'")):
            with self.assertRaises(ValueError) as e:
                cpu_queue.put_first(queue, [bad])
            self.assertIn("--first " + bad + ": ", str(e.exception))
            self.assertIn(why, str(e.exception))


class RunCost(unittest.TestCase):
    """The Progress line's cost of the runs left: two at a time, the wall time is whole rounds of two."""

    def test_rounds_of_two(self):
        est = (2000, 2500.0, 60.0)  # steps, tokens/s, minutes a run
        self.assertIn("~3 run-hours (~2 h on a 2-core host training two at a time: 2 round(s) of two)",
                      mr.run_cost(est, 3)[1])
        self.assertIn("~4 run-hours (~2 h on a 2-core host training two at a time: 2 round(s) of two)",
                      mr.run_cost(est, 4)[1])
        self.assertIn("~1 run-hours (~1 h on a 2-core host training two at a time: 1 round(s) of two)",
                      mr.run_cost(est, 1)[1])
        self.assertIn("~3 run-hours (~2 h on a 2-core host", mr.run_cost(None, 3)[1])

    def test_done_line(self):
        """Once nothing is left to train, the line says so and names the points skipped, if any."""
        line = mr.tier_done((102, 100), 2)
        self.assertTrue(line.startswith("Done: the tier's sweeps are 102 distinct runs"), line)
        self.assertIn("100 of them finished", line)
        self.assertIn("the other 2, the norm-type sweep's DyT seeds 1 and 2", line)
        self.assertNotIn("the other", mr.tier_done((99, 99), 0))


class ScanProgress(unittest.TestCase):
    """A scan point left untrained on purpose says why while it has not started, and only then."""

    def test_left_points_say_why(self):
        labels = ["centre", "width 512 (8 x 64)", "depth 3"]
        centre = {"state": "done", "step": 2000, "fp_ratio_block_max": 120.0, "fp_sink_eps_max": 0.0}
        pts = [centre, {"state": "pending", "step": 0}, {"state": "pending", "step": 0}]
        done, both, todo = mr.scan_progress(pts, labels)
        self.assertEqual(([i for i, _ in done], both), ([0], []))  # a spike but no sink: not both
        self.assertEqual(todo[0], "width 512 (8 x 64) (not trained: %s)" % mr.SCAN_LEFT["width 512 (8 x 64)"])
        self.assertEqual(todo[1], "depth 3")  # no reason given for it: listed as it is
        pts[1] = {"state": "failed", "step": 350}  # started after all: its state is the news, not the reason
        self.assertEqual(mr.scan_progress(pts, labels)[2][0], "width 512 (8 x 64)")


if __name__ == "__main__":
    unittest.main()
