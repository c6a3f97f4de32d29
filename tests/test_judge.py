"""The distribution judge (`diffsolve.judge`): p-values against scipy, calibration on exact sets,
and the failures the old criteria missed."""

import pytest
import torch
from scipy import stats

import diffsolve as ds
from diffsolve import judge as J
from diffsolve.compare import build_judge, compare
from diffsolve.comparison import ALPHA, criteria_met

VP = ds.VPSDE()
RING = ds.GaussianMixture.ring2d()
EPS = 1e-3


@pytest.mark.parametrize(
    "n, m, scale", [(50, 80, 1.0), (500, 2000, 1.1), (5000, 20000, 1.02), (300, 300, 1.3)]
)
def test_ks_two_sample_matches_scipy(n, m, scale):
    gen = torch.Generator().manual_seed(n + m)
    x = torch.randn(n, generator=gen, dtype=torch.float64)
    y = torch.randn(m, generator=gen, dtype=torch.float64) * scale
    ours = J.ks_two_sample(x, y)
    ref = stats.ks_2samp(x.numpy(), y.numpy(), method="asymp")
    assert ours.statistic == pytest.approx(ref.statistic, abs=1e-12)
    # Stephens' corrected limit vs scipy's own asymptotic law: within 10% relative (or 1e-3 absolute)
    assert ours.p_value == pytest.approx(ref.pvalue, rel=0.1, abs=1e-3)


def test_ks_two_sample_tiny_p_values_are_not_rounded_to_zero():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(5000, generator=gen), torch.randn(20000, generator=gen) + 0.2
    ours, ref = J.ks_two_sample(x, y), stats.ks_2samp(x.numpy(), y.numpy(), method="asymp")
    assert 0 < ours.p_value < 1e-20
    assert abs(torch.tensor(ours.p_value).log10() - torch.tensor(ref.pvalue).log10()) < 0.5  # within 3x


@pytest.mark.parametrize("k, n, p", [(0, 5000, 0.002), (3, 5000, 0.002), (10, 5000, 0.002), (25, 5000, 0.002),
                                     (60, 100, 0.5), (2500, 5000, 0.5), (7, 20, 0.3)])  # fmt: skip
def test_binomial_test_matches_scipy(k, n, p):
    for alternative in ("two-sided", "greater", "less"):
        ref = stats.binomtest(k, n, p, alternative=alternative).pvalue
        assert J.binomial_test(k, n, p, alternative=alternative) == pytest.approx(ref, rel=1e-6, abs=1e-300)


def test_bad_arguments_are_refused_with_their_names():
    with pytest.raises(ValueError, match="k must be"):
        J.binomial_test(11, 10, 0.5)
    with pytest.raises(ValueError, match="p must"):
        J.binomial_test(1, 10, 1.0)
    with pytest.raises(ValueError, match="x must be a 1-D"):
        J.ks_two_sample(torch.zeros(3, 2), torch.zeros(4))
    with pytest.raises(ValueError, match="k must be odd"):
        J.c2st(torch.randn(100, 2), torch.randn(100, 2), k=4)
    with pytest.raises(ValueError, match="same event size"):
        J.c2st(torch.randn(100, 2), torch.randn(100, 3))
    with pytest.raises(ValueError, match="q must"):
        J.tail_mass(torch.randn(10, 2), J.ExactLogDensity(RING, EPS, VP, n=1000), q=0.0)


def test_the_tests_accept_exact_sets_at_their_level():
    # 40 exact pairs of 1000 points: p-values of a calibrated test are uniform (or larger: conservative),
    # so P(p < 0.05) <= 0.05; 40 draws put at most 6 below 0.05 unless the level is broken (P = 0.014).
    peps = RING.marginal(EPS, VP)
    ref = J.ExactLogDensity(RING, EPS, VP, n=50_000, seed=1)
    small = {"ks": 0, "tail": 0, "c2st": 0}
    for i in range(40):
        x = peps.sample(1000, seed=100 + i, dtype=torch.float32)
        y = peps.sample(1000, seed=500 + i, dtype=torch.float32)
        small["ks"] += J.log_prob_ks(x, ref).p_value < 0.05
        small["tail"] += J.tail_mass(x, ref, q=0.01).p_value < 0.05
        small["c2st"] += J.c2st(x, y, seed=i).p_value < 0.05
    assert all(v <= 6 for v in small.values()), small


def test_c2st_sees_a_shift_that_needs_no_density():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3000, 4, generator=gen)
    y = torch.randn(3000, 4, generator=gen)
    # a shift of half a standard deviation in one of four coordinates: held-out accuracy 0.56, p = 8e-12
    # (a kNN vote is a weak detector of a global shift: 0.3 sd gives p = 0.009 at this n)
    assert J.c2st(x + torch.tensor([0.5, 0, 0, 0]), y).p_value < 1e-6
    assert J.c2st(x, y).p_value > 1e-3


def test_the_judge_sees_what_the_mean_log_density_misses():
    # deis at 6 steps on ring2d: its mean log p_eps is right within noise (over-concentrated samples on
    # the modes and spilled ones between them cancel), but the law of log p_eps and the tail mass are not.
    x = ds.sample(RING.score_fn(VP), VP, 5000, solver="deis", steps=6, seed=0, eps=EPS).samples
    ref = J.ExactLogDensity(RING, EPS, VP)
    gap = ds.metrics.log_prob_gap(x, RING, EPS, VP, reference=ref)
    assert abs(gap.value) < 0.02 + 3 * gap.se  # the old criterion passes
    assert J.log_prob_ks(x, ref).p_value < 1e-20
    tail = J.tail_mass(x, ref)
    assert tail.statistic > 5 * 0.002 and tail.p_value < 1e-20


@pytest.mark.slow
def test_compare_rejects_deis_at_6_and_8_nfe_on_every_seed_and_accepts_a_converged_solve():
    score = RING.score_fn(VP)
    table = compare(
        score, VP, reference=RING, solvers=["deis"], budgets=[6, 8], seeds=[0, 1, 2], progress=False
    )
    assert all(not criteria_met(r, table.null) for r in table.rows)
    assert all(r["ks_logp_p"] < ALPHA or r["tail_mass_p"] < ALPHA for r in table.rows)
    # A converged PF-ODE solve (float64 dopri5 at 1e-8: path error ~1e-7) from the same draws passes.
    ok = compare(score, VP, reference=RING, solvers=["ode:dopri5"], budgets=[1e-8], seeds=[0], progress=False)
    assert criteria_met(ok.rows[0], ok.null), ok.rows[0]


@pytest.mark.slow
def test_the_battery_rejects_few_exact_sets():
    # The measured rate is 1% (benchmarks/judge_calibration.py, 200 sets per problem); here 25 exact
    # sets of n = 5000 on ring2d, through compare's own judge: at a rate of 1%, P(>= 3 rejections) = 0.002.
    judge = build_judge(RING, VP, eps=EPS, n=5000)
    null = judge.null
    peps = RING.marginal(EPS, VP)
    rejected = sum(not criteria_met(judge(peps.sample(5000, seed=30_000 + i, dtype=torch.float32), None), null)
                   for i in range(25))  # fmt: skip
    assert rejected <= 2


@pytest.mark.slow
def test_a_score_without_a_closed_form_is_judged_against_a_converged_solve_of_itself():
    # reference="converged": 2n points of float64 dopri5 at 1e-8 from x_T no row uses, judged by the
    # density-free metrics only. The exact mixture score stands in for a model (the mixture is not given).
    score = RING.score_fn(VP)
    table = compare(score, VP, reference="converged", event_shape=(2,), solvers=["ddim", "ode:dopri5"],
                    budgets={"ddim": [3], "ode:dopri5": [1e-6]}, n=2000, progress=False)  # fmt: skip
    rows = {r["solver"]: r for r in table.rows}
    assert "ks_logp" not in rows["ddim"] and "c2st_p" in rows["ddim"]
    assert not criteria_met(rows["ddim"], table.null)  # 3 DDIM steps are far off (C2ST p ~ 1e-100)
    assert criteria_met(rows["ode:dopri5"], table.null), rows["ode:dopri5"]
    with pytest.raises(ValueError, match="event_shape"):
        compare(lambda x, t: score(x, t), VP, reference="converged", solvers=["ddim"], budgets=[3], n=100)
