"""sample() against the closed-form marginal of ring2d under VP (docs/architecture.md, "How sample quality is judged")."""

import math

import pytest
import torch
import torchdiffeq

import diffsolve as ds
from diffsolve import metrics
from diffsolve.adapters import ProbabilityFlowODE

EPS = 1e-3
N = 20_000


@pytest.fixture(scope="module")
def sw_null(problem):
    """Sliced-W2 between independent exact sets of size N at eps, over 10 pairs: (mean, std)."""
    gm, sde, _ = problem
    exact = gm.marginal(EPS, sde)
    return metrics.null_distribution(
        lambda a, b: metrics.sliced_wasserstein(a, b),
        lambda seed: exact.sample(N, seed=1000 + seed),
        pairs=10,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "solver, kwargs", [("sde:euler", {"steps": 1000}), ("ode:dopri5", {"rtol": 1e-5, "atol": 1e-5})]
)
def test_sample_quality_against_exact_marginal(problem, sw_null, solver, kwargs):
    gm, sde, score = problem
    res = ds.sample(score, sde, N, solver=solver, seed=0, **kwargs)
    x = res.samples
    # (a) mean log p_eps: the bar, 0.02 nats plus 3 standard errors.
    gap = metrics.log_prob_gap(x, gm, EPS, sde)
    assert abs(gap.value) <= 0.02 + 3 * gap.se, gap
    # (b) component weights: within 0.01 in TV plus 3 SE.
    tv = metrics.weight_tv(x, gm, EPS, sde)
    assert tv.value <= 0.01 + 3 * tv.se, tv
    # (c) sliced W2 to an exact set, read against the exact-vs-exact distribution: mean + 3 std.
    sw = metrics.sliced_wasserstein(x, gm.marginal(EPS, sde).sample(N, seed=99))
    assert sw <= sw_null.value + 3 * sw_null.se, (sw, sw_null)


@pytest.mark.slow
def test_dopri5_path_error_against_tight_float64_solve(problem):
    gm, sde, score = problem
    x_T = sde.prior_sample((2000, 2), generator=torch.Generator().manual_seed(3))
    res = ds.sample(score, sde, x_T=x_T, solver="ode:dopri5", rtol=1e-5, atol=1e-5)
    ref = ds.sample(score, sde, x_T=x_T.double(), solver="ode:dopri5", rtol=1e-10, atol=1e-10)
    # The bar: 1e-3 RMS at rtol = atol = 1e-5 (measured: about 6e-4).
    assert metrics.path_error(res.samples, ref.samples) <= 1e-3


@pytest.mark.slow
def test_pf_ode_round_trip_float64(problem):
    gm, sde, score = problem
    x_eps = gm.marginal(EPS, sde).sample(1000, seed=5)
    ode = ProbabilityFlowODE(score, sde, eps=EPS)
    opts = ode.odeint_options()
    up = torchdiffeq.odeint(
        ode,
        x_eps,
        torch.tensor([EPS, 1.0], dtype=torch.float64),
        method="dopri5",
        rtol=1e-9,
        atol=1e-9,
        options=opts,
    )[-1]
    back = torchdiffeq.odeint(
        ode,
        up,
        torch.tensor([1.0, EPS], dtype=torch.float64),
        method="dopri5",
        rtol=1e-9,
        atol=1e-9,
        options=opts,
    )[-1]
    # The bar: x_eps -> x_T -> x_eps within 1e-5 at rtol = atol = 1e-9.
    assert (back - x_eps).abs().max().item() <= 1e-5


@pytest.mark.slow
def test_euler_maruyama_strong_order_one_on_one_path(problem):
    # One seed, one Brownian path at every resolution: errors against the 4096-step solve shrink
    # about 2x per doubling (strong order 1 for additive noise). If the resolutions saw different
    # paths, the error would not shrink at all. The strong error is the mean distance E|X - X_h|:
    # the RMS shows order 1/2 here because of mode changes (see metrics.path_error).
    gm, sde, score = problem
    x_T = sde.prior_sample((2000, 2), dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ref = ds.sample(score, sde, x_T=x_T, solver="sde:euler", steps=4096, seed=11).samples
    steps = [32, 64, 128, 256]
    errs = [
        metrics.path_error(
            ds.sample(score, sde, x_T=x_T, solver="sde:euler", steps=k, seed=11).samples, ref, p=1
        )
        for k in steps
    ]
    slope = (
        -torch.linalg.lstsq(
            torch.tensor([[math.log(k), 1.0] for k in steps], dtype=torch.float64),
            torch.tensor([math.log(e) for e in errs], dtype=torch.float64)[:, None],
        )
        .solution[0, 0]
        .item()
    )
    ratios = [a / b for a, b in zip(errs, errs[1:], strict=False)]
    # Theory says order 1; +-0.15 as the numerical-analysis issue asks of measured orders. Measured:
    # 0.302, 0.165, 0.079, 0.040 (ratios 1.83, 2.09, 2.00).
    assert 0.85 <= slope <= 1.15, (errs, slope)
    assert all(1.6 <= r <= 2.5 for r in ratios), ratios


def test_seeded_runs_are_bit_reproducible(problem):
    gm, sde, score = problem
    for solver in ("sde:euler", "sde:srk", "pc"):
        a = ds.sample(score, sde, 128, solver=solver, steps=20, seed=4)
        b = ds.sample(score, sde, 128, solver=solver, steps=20, seed=4)
        c = ds.sample(score, sde, 128, solver=solver, steps=20, seed=5)
        assert torch.equal(a.samples, b.samples) and torch.equal(a.x_T, b.x_T)
        assert not torch.equal(a.samples, c.samples)


@pytest.mark.filterwarnings("ignore:ode.explicit_adams is unstable")
def test_every_registered_solver_runs(problem):
    gm, sde, score = problem
    for info in ds.solvers():
        kwargs = {} if info.adaptive else {"steps": 8}
        res = ds.sample(score, sde, 64, solver=info.name, seed=0, **kwargs)
        assert res.samples.shape == (64, 2) and res.nfe > 0
        assert res.settings["solver"] == info.name
        assert bool(torch.isfinite(res.samples).all()), info.name


def test_nfe_accounting(problem):
    gm, sde, score = problem
    assert ds.sample(score, sde, 16, solver="sde:euler", steps=10, seed=0).nfe == 10
    assert ds.sample(score, sde, 16, solver="ode:rk4", steps=10).nfe == 40
    assert ds.sample(score, sde, 16, solver="ode:heun2", steps=10).nfe == 20
    assert ds.sample(score, sde, 16, solver="pc", steps=10, corrector_steps=2, seed=0).nfe == 30
    assert ds.sample(score, sde, 16, solver="ode:euler", steps=10, denoise=True).nfe == 11


def test_trajectory_and_settings(problem):
    gm, sde, score = problem
    res = ds.sample(score, sde, 16, solver="sde:euler", steps=10, seed=0, return_trajectory=True)
    assert res.trajectory.shape == (11, 16, 2) and res.times.shape == (11,)
    assert res.times[0].item() == 1.0 and res.times[-1].item() == pytest.approx(EPS)
    torch.testing.assert_close(res.trajectory[-1], res.samples)
    torch.testing.assert_close(res.trajectory[0], res.x_T)
    s = res.settings
    assert (s["solver"], s["steps"], s["eps"], s["seed"], s["dtype"]) == ("sde:euler", 10, EPS, 0, "float32")
    res = ds.sample(score, sde, 16, solver="ode:dopri5", return_trajectory=True)
    assert res.trajectory.shape == (101, 16, 2)
    assert res.settings["rtol"] == res.settings["atol"] == 1e-5
    assert res.samples.grad_fn is None


def test_denoise_is_tweedie_posterior_mean(problem):
    # With the exact score Tweedie's formula gives E[x0 | x_eps] exactly; for ring2d this is a
    # responsibility-weighted shrinkage towards each component mean, computed here by hand.
    gm, sde, score = problem
    res = ds.sample(score, sde, 64, solver="ode:euler", steps=5, denoise=True, dtype=torch.float64, seed=0)
    raw = ds.sample(score, sde, 64, solver="ode:euler", steps=5, dtype=torch.float64, seed=0).samples
    alpha, sigma = (v.item() for v in sde.marginal(torch.tensor(EPS, dtype=torch.float64)))
    r = gm.responsibilities(raw, EPS, sde)
    s2 = gm.stds**2
    post = (alpha * s2 * raw[:, None, :] + sigma**2 * gm.means[None]) / (alpha**2 * s2 + sigma**2)
    torch.testing.assert_close(res.samples, (r[..., None] * post).sum(1))


def test_float64_end_to_end(problem):
    gm, sde, score = problem
    for solver in ("sde:euler", "ode:rk4", "pc", "ode:dopri5"):
        kwargs = {} if solver == "ode:dopri5" else {"steps": 5}
        res = ds.sample(score, sde, 8, solver=solver, dtype=torch.float64, seed=0, **kwargs)
        assert res.samples.dtype == torch.float64


@pytest.mark.parametrize("solver", ["sde:euler", "sde:srk", "ode:rk4", "ode:dopri5", "pc"])
def test_image_shaped_events(solver):
    # Data N(0, 0.5^2 I) in 16 dimensions, laid out as (1, 4, 4) images: p_eps is N(0, v I) with
    # v = alpha^2 0.25 + sigma^2, so the per-pixel variance of 4000 samples is known.
    sde = ds.VPSDE()
    gm = ds.GaussianMixture([1.0], torch.zeros(1, 16), 0.5)
    x_T = sde.prior_sample((3000, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    # Powers of two: the Brownian tree is then queried at its own nodes (cheap).
    kwargs = {} if solver == "ode:dopri5" else {"steps": 128 if solver.startswith("ode") else 512}
    res = ds.sample(gm.score_fn(sde), sde, x_T=x_T, solver=solver, seed=0, **kwargs)
    assert res.samples.shape == (3000, 1, 4, 4)
    alpha, sigma = sde.marginal(torch.tensor(EPS, dtype=torch.float64))
    v = (alpha**2 * 0.25 + sigma**2).item()
    if solver == "pc":
        # Song et al.'s Langevin step is delta = 2 (snr |xi| / |s|)^2 ~ 2 snr^2 v for this Gaussian, and
        # unadjusted Langevin's stationary variance is then v / (1 - delta / 2v) = v / (1 - snr^2).
        v = v / (1 - 0.16**2)
    # The variance estimate over 48000 values has relative SE sqrt(2/48000) = 0.65%; 3% allows
    # 4 SE plus the solvers' discretisation error at these budgets (measured: up to 1.2%).
    assert res.samples.var().item() == pytest.approx(v, rel=0.03)


def test_explicit_adams_warns(problem):
    gm, sde, score = problem
    with pytest.warns(UserWarning, match="explicit_adams is unstable"):
        ds.sample(score, sde, 8, solver="ode:explicit_adams", steps=4)
