"""Property-based tests (hypothesis): shapes, dtypes, time ranges and seeds drawn at random, each
checked against an answer that does not come from the code under test: closed-form marginals,
scipy's normal densities, a stationary probability-flow ODE, the uniform density's bits/dim.

The examples are derandomised (tests/conftest.py), so CI runs the same cases every time."""

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from scipy.special import logsumexp
from scipy.stats import norm

import diffsolve as ds

SDES = st.sampled_from(["vp", "subvp", "ve"])
DTYPES = st.sampled_from([torch.float32, torch.float64])
EVENT_SHAPES = st.lists(st.integers(1, 3), min_size=1, max_size=3).map(tuple)
SEEDS = st.integers(0, 2**63 - 1)
BAD_SEEDS = st.one_of(
    st.integers(max_value=-1),
    st.integers(min_value=2**63),
    st.floats(allow_nan=True),
    st.booleans(),
    st.text(),
)


def _sde(kind: str, a: float, b: float) -> ds.SDE:
    lo, hi = min(a, b), max(a, b) + 1e-3
    return {"vp": ds.VPSDE, "subvp": ds.SubVPSDE, "ve": ds.VESDE}[kind](lo, hi)


@given(
    kind=SDES, a=st.floats(1e-3, 5.0), b=st.floats(1e-3, 30.0), t=st.lists(st.floats(0.0, 1.0), min_size=2)
)
def test_sde_marginals_are_the_closed_forms(kind, a, b, t):
    sde = _sde(kind, a, b)
    t = torch.tensor(sorted(t), dtype=torch.float64)
    alpha, sigma = sde.marginal(t)
    assert torch.isfinite(alpha).all() and torch.isfinite(sigma).all()
    p = sde.params()
    if kind == "ve":
        # sigma(t)^2 = sigma_min^2 ((sigma_max/sigma_min)^(2t) - 1): the variance of its own SDE from 0
        smin, smax = p["sigma_min"], p["sigma_max"]
        expected = smin * torch.sqrt(torch.expm1(2 * t * math.log(smax / smin)))
        torch.testing.assert_close(alpha, torch.ones_like(t))
        torch.testing.assert_close(sigma, expected, rtol=1e-10, atol=1e-12)
    else:
        bmin, bmax = p["beta_min"], p["beta_max"]
        log_alpha = -0.25 * t**2 * (bmax - bmin) - 0.5 * t * bmin
        torch.testing.assert_close(alpha, torch.exp(log_alpha), rtol=1e-10, atol=1e-12)
        var = -torch.expm1(2 * log_alpha)
        expected = torch.sqrt(var) if kind == "vp" else var  # sub-VP: sigma = 1 - alpha^2
        torch.testing.assert_close(sigma, expected, rtol=1e-8, atol=1e-12)
    assert bool((sigma[1:] >= sigma[:-1]).all())  # noise only grows


@given(
    kind=SDES, t=st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=1.0 + 1e-9), st.just(float("nan")))
)
def test_sde_times_outside_0_T_are_refused(kind, t):
    with pytest.raises(ValueError, match=r"t must lie in \[0, T\]"):
        _sde(kind, 0.1, 1.0).marginal(torch.tensor([t], dtype=torch.float64))


@given(kind=SDES, bad=st.sampled_from([0.0, -1.0, math.inf, -math.inf, math.nan]), which=st.integers(0, 1))
def test_sde_parameters_must_be_positive_and_finite(kind, bad, which):
    cls = {"vp": ds.VPSDE, "subvp": ds.SubVPSDE, "ve": ds.VESDE}[kind]
    args = [0.1, 5.0]
    args[which] = bad
    with pytest.raises(ValueError, match="must be"):
        cls(*args)


@st.composite
def mixtures(draw):
    k, d = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    weights = draw(st.lists(st.floats(0.05, 1.0), min_size=k, max_size=k))
    means = draw(st.lists(st.floats(-5, 5), min_size=k * d, max_size=k * d))
    stds = draw(st.lists(st.floats(0.1, 2.0), min_size=k * d, max_size=k * d))
    return np.array(weights), np.array(means).reshape(k, d), np.array(stds).reshape(k, d)


@given(params=mixtures(), seed=st.integers(0, 2**31 - 1), dtype=DTYPES)
def test_mixture_log_density_is_scipys(params, seed, dtype):
    w, mu, s = params
    gm = ds.GaussianMixture(w, mu, s)
    x = gm.sample(5, seed=seed, dtype=dtype)
    assert x.shape == (5, mu.shape[1]) and x.dtype == dtype
    xn = x.double().numpy()
    per = norm.logpdf(xn[:, None, :], mu[None], s[None]).sum(-1) + np.log(w / w.sum())[None]
    np.testing.assert_allclose(
        gm.log_prob(x.double()).numpy(), logsumexp(per, axis=1), rtol=1e-10, atol=1e-10
    )


@given(params=mixtures(), t=st.floats(0.0, 1.0), seed=st.integers(0, 2**31 - 1))
def test_mixture_score_is_the_gradient_of_its_log_density(params, t, seed):
    gm, sde = ds.GaussianMixture(*params), ds.VPSDE()
    x = gm.marginal(t, sde).sample(4, seed=seed).requires_grad_(True)
    (grad,) = torch.autograd.grad(gm.log_prob_t(x, t, sde).sum(), x)
    torch.testing.assert_close(gm.score_t(x.detach(), t, sde), grad, rtol=1e-8, atol=1e-8)


def _stationary(x, t):
    """Data N(0, I) under the VP SDE stays N(0, I): the score is -x and the PF-ODE drift is zero."""
    return -x


@given(n=st.integers(1, 9), event=EVENT_SHAPES, dtype=DTYPES, seed=SEEDS, steps=st.integers(1, 6),
       solver=st.sampled_from(["ode:euler", "ode:rk4", "ode:midpoint"]))  # fmt: skip
def test_sample_keeps_shape_dtype_and_the_stationary_solution(n, event, dtype, seed, steps, solver):
    x_T = torch.randn(n, *event, generator=torch.Generator().manual_seed(seed % 2**32), dtype=dtype)
    out = ds.sample(_stationary, ds.VPSDE(), x_T=x_T, solver=solver, steps=steps)
    assert out.samples.shape == (n, *event) and out.samples.dtype == dtype
    # the drift f x - g^2/2 (-x) = (-beta/2 + beta/2) x vanishes: the solve returns its start, to round-off
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(out.samples, x_T, rtol=tol, atol=tol)
    drawn = ds.sample(
        _stationary, ds.VPSDE(), n, event_shape=event, dtype=dtype, seed=seed, solver=solver, steps=1
    )
    assert drawn.samples.shape == (n, *event) and drawn.samples.dtype == dtype


@given(
    n=st.integers(1, 6), event=EVENT_SHAPES, seed=SEEDS, solver=st.sampled_from(["ddim", "sde:euler", "pc"])
)
def test_a_seed_gives_the_same_samples_every_time(n, event, seed, solver):
    kw = dict(event_shape=event, seed=seed, solver=solver, steps=3)
    a = ds.sample(_stationary, ds.VPSDE(), n, **kw).samples
    b = ds.sample(_stationary, ds.VPSDE(), n, **kw).samples
    assert torch.equal(a, b) and bool(torch.isfinite(a).all())


@given(seed=BAD_SEEDS)
def test_bad_seeds_are_refused_everywhere(seed):
    x = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="seed must be a non-negative integer below 2\\^63"):
        ds.sample(_stationary, ds.VPSDE(), 2, event_shape=(2,), seed=seed, solver="ddim", steps=2)
    with pytest.raises(ValueError, match="seed must be a non-negative integer below 2\\^63"):
        ds.log_likelihood(_stationary, ds.VPSDE(), x, divergence="hutchinson", seed=seed)


@given(eps=st.one_of(st.floats(max_value=0.0), st.floats(min_value=1.0), st.just(float("nan"))))
def test_final_times_outside_0_T_are_refused(eps):
    with pytest.raises(ValueError, match="eps must"):
        ds.sample(_stationary, ds.VPSDE(), 2, event_shape=(2,), eps=eps, solver="ddim", steps=2)
    with pytest.raises(ValueError, match="eps must"):
        ds.log_likelihood(_stationary, ds.VPSDE(), torch.zeros(2, 2), eps=eps)


@given(b=st.integers(1, 5), event=EVENT_SHAPES, dtype=DTYPES, seed=st.integers(0, 2**31 - 1),
       eps=st.floats(1e-4, 0.5), divergence=st.sampled_from(["exact", "hutchinson"]))  # fmt: skip
def test_log_likelihood_of_the_stationary_gaussian_is_its_density(b, event, dtype, seed, eps, divergence):
    x = torch.randn(b, *event, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    res = ds.log_likelihood(_stationary, ds.VPSDE(), x, eps=eps, divergence=divergence, seed=seed)
    assert res.log_prob.shape == (b,) and res.log_prob.dtype == dtype
    d = math.prod(event)
    exact = -0.5 * x.double().flatten(1).square().sum(1) - 0.5 * d * math.log(2 * math.pi)
    # zero divergence and a state that does not move: only round-off separates the two
    torch.testing.assert_close(
        res.log_prob.double(), exact, rtol=1e-5 if dtype == torch.float32 else 1e-10, atol=1e-5
    )


@given(d=st.integers(1, 3072), bins=st.integers(2, 1024), scale=st.floats(0.01, 100.0), b=st.integers(1, 8))
def test_bits_per_dim_of_the_uniform_density_is_log2_bins(d, bins, scale, b):
    # Uniform dequantised data on a cube of width `scale`: density scale^-D, and every one of the
    # bins^D cells has probability bins^-D, so exactly log2(bins) bits per dimension.
    log_prob = torch.full((b,), -d * math.log(scale), dtype=torch.float64)
    torch.testing.assert_close(ds.bits_per_dim(log_prob, d, bins=bins, scale=scale),
                               torch.full((b,), math.log2(bins), dtype=torch.float64))  # fmt: skip


@given(bad=st.sampled_from([float("nan"), float("inf"), -float("inf")]))
def test_bits_per_dim_refuses_non_finite_log_densities(bad):
    with pytest.raises(ValueError, match="log_prob must be finite"):
        ds.bits_per_dim(torch.tensor([0.0, bad]), 2)


@given(shape=st.lists(st.integers(0, 3), min_size=0, max_size=3).map(tuple))
def test_inputs_without_a_batch_of_points_are_refused(shape):
    assume(len(shape) < 2 or math.prod(shape) == 0)
    with pytest.raises(ValueError, match="x must"):
        ds.log_likelihood(_stationary, ds.VPSDE(), torch.zeros(shape))
