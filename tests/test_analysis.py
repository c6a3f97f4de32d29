"""Measured convergence orders against theory, with the exact score of ring2d under VP (eps = 1e-3)."""

import pytest
import torch

import diffsolve as ds
from diffsolve import analysis
from diffsolve.analysis import convergence_order

# (solver, kind, steps, paths): calibration only; the theory is the registry's (`Solver.order` for
# "ode", `strong_order` for "strong"). The step counts are the asymptotic range found by
# benchmarks/convergence_orders.py; ±0.15 is the bar. Strong errors are heavy-tailed (a few
# paths switch components), so SRK needs 8000 paths.
CASES = [
    ("ode:euler", "ode", [32, 64, 128, 256], 500),
    ("ode:midpoint", "ode", [32, 64, 128, 256], 500),
    ("ode:heun2", "ode", [32, 64, 128, 256], 500),
    # heun3 is still pre-asymptotic at 32 steps: on seed 1 the successive slopes from 32 were 2.69,
    # 2.86, 2.93 (fit 2.83), so its range starts at 64.
    ("ode:heun3", "ode", [64, 128, 256, 512], 500),
    ("ode:rk4", "ode", [32, 64, 128, 256], 500),
    ("sde:euler", "strong", [32, 64, 128, 256], 2000),
    ("sde:srk", "strong", [16, 32, 64, 128], 8000),
]
ABOVE = {"sde:srk": 2.0}
"""Where the measured slope may lie above the theory: SRA1's strong order 1.5 is a lower bound; its drift
error is O(h^2), and where that dominates the slope lies between 1.5 and 2. With sample's keyed prior draws
seed 0 measured 1.69 over 16..128 (1.68 with 16000 paths) and 1.85 over 32..256; before, 1.51, 1.63."""


def theory(solver: str, kind: str) -> float:
    info = ds.get_solver(solver)
    return {"ode": info.order, "strong": info.strong_order, "weak": info.weak_order}[kind]


# torchsde's Stratonovich methods and Milstein, on the same Brownian path as the sde:euler reference:
# with additive noise the Itô and Stratonovich SDEs coincide and each has strong order 1.
STRATONOVICH_CASES = [
    ("sde:milstein", "strong", [32, 64, 128, 256], 2000),
    ("sde:heun", "strong", [32, 64, 128, 256], 2000),
    ("sde:midpoint", "strong", [32, 64, 128, 256], 2000),
    ("sde:euler_heun", "strong", [32, 64, 128, 256], 2000),
]


@pytest.mark.slow
@pytest.mark.parametrize("solver, kind, steps, n", STRATONOVICH_CASES, ids=[c[0] for c in STRATONOVICH_CASES])
@pytest.mark.parametrize("seed", [0, 1])
def test_stated_strong_orders_of_the_other_torchsde_methods(problem, solver, kind, steps, n, seed):
    gm, sde, score = problem
    res = convergence_order(score, sde, solver, steps=steps, kind=kind, n=n, seed=seed, bootstrap=100)
    order = theory(solver, kind)
    # theory must lie in the bootstrap interval widened by the issue's ±0.15 bar
    assert res.order_ci[0] - 0.15 <= order <= res.order_ci[1] + 0.15, res.to_markdown()
    assert abs(res.order - order) <= 0.15, res.to_markdown()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("solver, kind, steps, n", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_measured_order_matches_theory(problem, solver, kind, steps, n, seed):
    gm, sde, score = problem
    res = convergence_order(score, sde, solver, steps=steps, kind=kind, n=n, seed=seed, bootstrap=100)
    lo = theory(solver, kind)
    hi = ABOVE.get(solver, lo)
    # Theory, not the estimate, is what must meet the bootstrap interval widened by the ±0.15 bar.
    assert res.order_ci[0] - 0.15 <= hi and lo <= res.order_ci[1] + 0.15, res.to_markdown()
    assert lo - 0.15 <= res.order <= hi + 0.15, res.to_markdown()
    assert res.errors == sorted(res.errors, reverse=True)


@pytest.mark.slow
def test_euler_maruyama_weak_order_one(problem):
    gm, sde, score = problem
    res = convergence_order(
        score,
        sde,
        "sde:euler",
        steps=[16, 32, 64, 128],
        kind="weak",
        reference=gm,
        n=100_000,
        seed=0,
        bootstrap=50,
    )
    assert abs(res.order - theory("sde:euler", "weak")) <= 0.15, res.to_markdown()
    assert len(res.used) == 4


def test_result_table_and_fields(problem):
    gm, sde, score = problem
    res = convergence_order(score, sde, "ddim", steps=[16, 32, 64], kind="ode", n=100, bootstrap=20)
    assert res.nfe == [16, 32, 64] and len(res.step_sizes) == 3 and res.used == [0, 1, 2]
    assert res.step_sizes[0] == pytest.approx((1 - 1e-3) / 16)
    md = res.to_markdown()
    assert "fitted order" in md and "dopri8" in md


def test_bad_input_before_any_work(problem):
    gm, sde, _ = problem

    def never(x, t):
        raise AssertionError("a solve started")

    never.event_shape = (2,)
    with pytest.raises(ValueError, match="at least three step counts"):
        convergence_order(never, sde, "sde:euler", steps=[16, 32])
    with pytest.raises(ValueError, match="strictly increasing"):
        convergence_order(never, sde, "sde:euler", steps=[16, 64, 32])
    with pytest.raises(ValueError, match="deterministic: it has no strong error"):
        convergence_order(never, sde, "ode:rk4", steps=[16, 32, 64], kind="strong")
    with pytest.raises(ValueError, match="stochastic: use kind='strong' or 'weak'"):
        convergence_order(never, sde, "sde:euler", steps=[16, 32, 64], kind="ode")
    with pytest.raises(ValueError, match="adaptive"):
        convergence_order(never, sde, "ode:dopri5", steps=[16, 32, 64], kind="ode")
    with pytest.raises(ValueError, match="kind must be one of"):
        convergence_order(never, sde, "sde:euler", steps=[16, 32, 64], kind="global")
    with pytest.raises(ValueError, match=r"test_fn must map \(B, \*event\) to shape \(B,\)"):
        convergence_order(
            never, sde, "sde:euler", steps=[16, 32, 64], kind="weak", test_fn=lambda x: x, exact_value=1.0
        )
    with pytest.raises(ValueError, match="needs E\\[test_fn\\]"):
        convergence_order(never, sde, "sde:euler", steps=[16, 32, 64], kind="weak")


def test_exact_second_moment_against_monte_carlo(problem):
    from diffsolve.analysis.convergence import _exact_second_moment, second_moment

    gm, sde, _ = problem
    x = gm.marginal(0.3, sde).sample(400_000, seed=1)
    mc = second_moment(x)
    assert _exact_second_moment(gm, 0.3, sde) == pytest.approx(
        float(mc.mean()), abs=4 * float(mc.std()) / 400_000**0.5
    )
    assert torch.is_tensor(mc)


def test_step_diagnostics_record_every_step(problem):
    gm, sde, score = problem
    d = analysis.step_diagnostics(score, sde, rtol=1e-4, atol=1e-4, n=100)
    t0 = [t for t, _ in d.accepted]
    # accepted steps tile [eps, T] from T downwards
    assert t0[0] == pytest.approx(1.0) and t0 == sorted(t0, reverse=True)
    assert sum(h for _, h in d.accepted) == pytest.approx(1.0 - 1e-3, rel=1e-6)
    # dopri5: 6 evaluations per attempt after the first (FSAL), plus the initial-step probes
    attempts = len(d.accepted) + len(d.rejected)
    assert 6 * attempts <= d.nfe <= 6 * attempts + 2
    per = d.attempts_per_unit_time([1e-3, 0.5, 1.0])
    assert len(per) == 2 and all(v > 0 for v in per)
    assert sum(p * w for p, w in zip(per, [0.499, 0.5], strict=True)) == pytest.approx(attempts)
    nfe = d.nfe_per_unit_time([1e-3, 0.5, 1.0])
    assert sum(p * w for p, w in zip(nfe, [0.499, 0.5], strict=True)) == pytest.approx(d.nfe)
    with pytest.raises(ValueError, match="adaptive torchdiffeq method"):
        analysis.step_diagnostics(score, sde, solver="rk4")


def test_jacobian_spectrum_of_a_gaussian_is_known(vp):
    """For p_0 = N(0, s^2 I) the PF drift is linear: -(beta/2)(1 - 1/(alpha^2 s^2 + sigma^2)) x... in closed form."""
    s = 0.5
    g = ds.GaussianMixture([1.0], [[0.0, 0.0]], s)
    sp = analysis.jacobian_spectrum(g.score_fn(vp), vp, n=4, points=5)
    alpha, sigma = vp.marginal(sp.times)
    beta = vp.beta(sp.times)
    want = -0.5 * beta * (1 - 1 / (alpha**2 * s**2 + sigma**2))
    assert torch.allclose(sp.max_real, want, rtol=1e-8) and torch.allclose(sp.min_real, want, rtol=1e-8)
    assert torch.allclose(sp.spectral_radius, want.abs(), rtol=1e-8)


def test_truncation_and_tolerance_tables(problem):
    gm, sde, score = problem
    x = gm.sample(50, seed=0)
    exact_prior = lambda z: gm.log_prob_t(z, 1.0, sde)  # noqa: E731  (no prior mismatch: pure solver error)
    rows = analysis.nll_vs_eps(
        score, sde, x, [1e-2, 1e-4], mixture=gm, rtol=1e-8, atol=1e-8, prior_log_prob=exact_prior
    )
    assert [r["eps"] for r in rows] == [1e-2, 1e-4] and all(r["error"] < 1e-5 for r in rows)
    wp = analysis.likelihood_work_precision(score, sde, gm.marginal(1e-5, sde).sample(30, seed=1), gm,
                                            adaptive=("dopri5",), tolerances=(1e-3, 1e-6), steps=(8, 32))  # fmt: skip
    errs = {(r["solver"], r["budget"]): r["error"] for r in wp}
    assert errs[("dopri5", 1e-6)] < errs[("dopri5", 1e-3)] and errs[("rk4", 32)] < errs[("rk4", 8)]
    se = analysis.sample_error_vs_eps(score, sde, gm, [0.1, 1e-3], n=2000)
    # stopping at eps = 0.1 leaves samples of p_0.1, measurably wider than the data
    assert se[0]["gap_to_data"] < -5 * se[0]["gap_to_data_se"]
    assert abs(se[1]["gap_to_p_eps"]) < 4 * se[1]["gap_to_p_eps_se"] + 0.02


def test_cli_convergence(tmp_path, capsys):
    from diffsolve.cli import main

    out = tmp_path / "conv"
    assert main(["convergence", "--solver", "ode:heun2", "--kind", "ode", "--steps", "16,32,64", "--n", "50",
                 "--out", str(out)]) == 0  # fmt: skip
    assert "fitted order" in capsys.readouterr().out
    assert (out / "convergence.md").exists() and (out / "convergence.png").stat().st_size > 1000
    assert main(["convergence", "--solver", "ode:rk4", "--kind", "strong", "--out", str(out)]) == 2
    assert "no strong error" in capsys.readouterr().err


def test_an_order_is_never_fitted_through_two_points(problem):
    # It fitted a line through the two step counts above the Monte-Carlo floor and printed a 95% interval
    # that excluded the true order. At 512 steps Euler-Maruyama's weak error (~0.002) is below 3 SE of
    # 2000 paths, so only 4 and 8 steps are usable: that is refused.
    gm, sde, score = problem
    with pytest.raises(ValueError, match="only 2 of the step counts .* an order needs three"):
        convergence_order(
            score, sde, "sde:euler", steps=[4, 8, 512], kind="weak", reference=gm, n=2000, seed=0
        )


def test_a_pre_asymptotic_fit_says_so(problem):
    # Issue: `diffsolve convergence --solver sde:euler --kind weak --steps 8,16,32` printed a confident
    # order (1.74, interval excluding the true 1). The fit now reports its local slopes, and when they still
    # change (here 1.68 then 1.10) the result is marked pre-asymptotic and its table says so.
    gm, sde, score = problem
    res = convergence_order(score, sde, "sde:euler", steps=[8, 16, 32], kind="weak", reference=gm, n=2000,
                            seed=0, bootstrap=50)  # fmt: skip
    assert len(res.local_orders) == 2 and not res.asymptotic
    assert "not in the asymptotic range" in res.to_markdown()
    ode = convergence_order(
        score, sde, "ode:rk4", steps=[32, 64, 128], kind="ode", n=200, seed=0, bootstrap=50
    )
    assert ode.asymptotic and "warning" not in ode.to_markdown()
