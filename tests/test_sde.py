import math

import pytest
import torch
import torchdiffeq

import diffsolve as ds


def test_marginal_matches_moment_odes(any_sde):
    # Independent of the closed forms: for dx = f(t) x dt + g(t) dW started at x0, the mean m and
    # variance v obey m' = f m, v' = 2 f v + g^2. Integrate them at tight tolerance in float64.
    sde = any_sde
    t_eval = torch.tensor([0.0, 0.05, 0.3, 0.7, 1.0], dtype=torch.float64)

    def rhs(t, y):
        t = t.clamp(0.0, sde.T)  # dopri8's initial-step probe may look past T
        f = sde.drift(torch.ones(1, dtype=torch.float64), t)[0]
        g2 = sde.diffusion(t) ** 2
        return torch.stack([f * y[0], 2 * f * y[1] + g2])

    # step_t makes steps land on the output times: dopri8's dense output is less accurate than its steps.
    sol = torchdiffeq.odeint(
        rhs,
        torch.tensor([1.0, 0.0], dtype=torch.float64),
        t_eval,
        rtol=1e-11,
        atol=1e-13,
        method="dopri8",
        options={"step_t": t_eval},
    )
    alpha, sigma = sde.marginal(t_eval)
    # rtol 1e-11 on the moment ODEs: 1e-8 leaves three orders of margin.
    torch.testing.assert_close(alpha, sol[:, 0], rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(sigma**2, sol[:, 1], rtol=1e-8, atol=1e-10)


@pytest.mark.slow
def test_marginal_matches_monte_carlo_simulation(any_sde):
    # Simulate the forward SDE itself with Euler–Maruyama from x0 = 2 and compare the empirical mean
    # and std at t with alpha_t x0 and sigma_t.
    sde = any_sde
    n, steps, x0 = 100_000, 2000, 2.0
    gen = torch.Generator().manual_seed(1)
    x = torch.full((n, 1), x0, dtype=torch.float64)
    checkpoints = {200: 0.1, 1000: 0.5, 2000: 1.0}
    dt = 1.0 / steps
    for k in range(steps):
        t = torch.tensor(k * dt, dtype=torch.float64)
        x = (
            x
            + sde.drift(x, t) * dt
            + sde.diffusion(t) * math.sqrt(dt) * torch.randn(x.shape, generator=gen, dtype=x.dtype)
        )
        if k + 1 in checkpoints:
            t_k = torch.tensor(checkpoints[k + 1], dtype=torch.float64)
            alpha, sigma = (v.item() for v in sde.marginal(t_k))
            mean_se, std_se = sigma / math.sqrt(n), sigma / math.sqrt(2 * n)
            # 4 standard errors of the Monte-Carlo estimate, plus Euler–Maruyama's weak bias: at
            # dt = 5e-4 its relative error in the moments is about (int f^2) dt / 2 <= 8.4e-3 for VP
            # (int beta^2/4 = 33.5) and (log g^2)' dt / 2 = 4.3e-3 for VE; 1e-2 covers both.
            assert abs(x.mean().item() - alpha * x0) <= 4 * mean_se + 1e-2 * max(alpha * x0, sigma)
            assert abs(x.std().item() - sigma) <= 4 * std_se + 1e-2 * sigma


def test_closed_forms(vp):
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    alpha, sigma = vp.marginal(t)
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones_like(t))
    _, sigma_sub = ds.SubVPSDE().marginal(t[1:])
    assert bool((sigma_sub < sigma[1:]).all())
    ve = ds.VESDE(sigma_min=0.01, sigma_max=50.0)
    _, s_ve = ve.marginal(torch.tensor(1.0, dtype=torch.float64))
    # VE is exact for its own SDE: variance sigma_max^2 - sigma_min^2, not sigma_max^2.
    assert s_ve.item() == pytest.approx(math.sqrt(50.0**2 - 0.01**2), rel=1e-12)


def test_no_cancellation_at_small_t(vp):
    # sigma_t^2 = 1 - alpha_t^2 ~ beta_min t for small t; computing 1 - alpha^2 directly in float32
    # would return 0 at t = 1e-8.
    t = torch.tensor(1e-8, dtype=torch.float32)
    _, sigma = vp.marginal(t)
    assert sigma.dtype == torch.float32
    assert sigma.item() == pytest.approx(math.sqrt(0.1 * 1e-8), rel=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_time_formats_and_dtypes(any_sde, dtype):
    x = torch.randn(5, 3, dtype=dtype)
    for t in (0.3, torch.tensor(0.3, dtype=dtype), torch.full((5,), 0.3, dtype=dtype)):
        d = any_sde.drift(x, t)
        assert d.shape == x.shape and d.dtype == dtype
    a, s = any_sde.marginal(torch.full((5,), 0.3, dtype=dtype))
    assert a.shape == (5,) and a.dtype == dtype and s.dtype == dtype
    assert any_sde.diffusion(torch.tensor(0.3, dtype=dtype)).dtype == dtype
    xt = any_sde.perturb(x, 0.3, torch.zeros_like(x))
    torch.testing.assert_close(xt, any_sde.marginal(torch.tensor(0.3, dtype=dtype))[0] * x)


def test_prior(any_sde):
    gen = torch.Generator().manual_seed(0)
    z = any_sde.prior_sample((4000, 3), dtype=torch.float64, generator=gen)
    # std of a 12000-draw sample std is ~0.65%: 3% is > 4 SE.
    assert z.std().item() == pytest.approx(any_sde.prior_std, rel=0.03)
    ref = torch.distributions.Normal(0.0, any_sde.prior_std).log_prob(z).sum(1)
    torch.testing.assert_close(any_sde.prior_log_prob(z), ref)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_time_outside_range_is_refused(vp, bad):
    with pytest.raises(ValueError, match=r"t must lie in \[0, T\]"):
        vp.marginal(bad)
    with pytest.raises(ValueError, match="t must lie"):
        vp.drift(torch.zeros(2, 2), torch.tensor([0.5, bad]))


def test_bad_parameters():
    with pytest.raises(ValueError, match="beta_min"):
        ds.VPSDE(beta_min=-1.0)
    with pytest.raises(ValueError, match="sigma_max must be > sigma_min"):
        ds.VESDE(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match=r"t has shape \(3,\)"):
        ds.VPSDE().drift(torch.zeros(2, 2), torch.full((3,), 0.5))


SCHEDULES = [ds.CosineVPSDE(), ds.DiscreteVPSDE(), ds.EDMSDE()]


@pytest.mark.parametrize("sde", SCHEDULES, ids=lambda s: type(s).__name__)
def test_the_ecosystem_schedules_match_their_moment_odes(sde):
    # As for the SDEs above: m' = f m, v' = 2 f v + g^2 integrated at tight tolerance. The discrete
    # schedule's f is piecewise constant: it is integrated cell by cell, each cell with the f and g^2
    # of its interior (a stage at a cell's right end would otherwise see the next cell's f).
    T = sde.T
    t_eval = torch.tensor([0.0, 0.05 * T, 0.3 * T, 0.7 * T, T], dtype=torch.float64)
    if isinstance(sde, ds.DiscreteVPSDE):
        pieces = torch.linspace(0.0, 1.0, sde.N + 1, dtype=torch.float64)
    else:
        pieces = torch.tensor([0.0, T], dtype=torch.float64)
    y = torch.tensor([1.0, 0.0], dtype=torch.float64)
    at = {0.0: y}
    for a, b in zip(pieces[:-1], pieces[1:], strict=True):
        mid = 0.5 * (a + b)

        def rhs(t, y, mid=mid):
            u = mid if isinstance(sde, ds.DiscreteVPSDE) else t.clamp(0.0, T)
            f = sde.drift(torch.ones(1, dtype=torch.float64), u)[0]
            return torch.stack([f * y[0], 2 * f * y[1] + sde.g2(u)])

        inside = t_eval[(t_eval > a) & (t_eval <= b)]
        ts = torch.cat([a.reshape(1), inside, b.reshape(1)]).unique()
        sol = torchdiffeq.odeint(rhs, y, ts, rtol=1e-11, atol=1e-13, method="dopri5", options={"step_t": ts})
        for t, v in zip(ts.tolist(), sol, strict=True):
            at[t] = v
        y = sol[-1]
    expected = torch.stack([at[t] for t in t_eval.tolist()])
    alpha, sigma = sde.marginal(t_eval)
    torch.testing.assert_close(alpha, expected[:, 0], rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(sigma**2, expected[:, 1], rtol=1e-8, atol=1e-10)


def test_the_discrete_schedule_is_ddpm_at_its_timesteps():
    # The independent answer: DDPM's alphas_cumprod = prod(1 - beta) at every timestep n.
    sde = ds.DiscreteVPSDE()
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    alphas_cumprod = torch.cumprod(1 - betas, 0)
    n = torch.arange(1000)
    alpha, sigma = sde.marginal(sde.time_of(n))
    torch.testing.assert_close(alpha**2, alphas_cumprod, rtol=1e-12, atol=0)
    torch.testing.assert_close(sigma**2, 1 - alphas_cumprod, rtol=1e-10, atol=0)
    torch.testing.assert_close(sde.timestep(sde.time_of(n)), n.double())


def test_the_cosine_schedule_is_nichol_and_dhariwals():
    # alpha_bar(t) = f(t)/f(0), f(t) = cos^2(pi/2 (t + s)/(1 + s)), written out here.
    sde = ds.CosineVPSDE()
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)

    def f(u):
        return torch.cos(0.5 * math.pi * (u + 0.008) / 1.008) ** 2

    alpha, _ = sde.marginal(t)
    torch.testing.assert_close(alpha**2, f(t) / f(torch.zeros(1, dtype=torch.float64)), rtol=1e-12, atol=0)


def test_edm_time_is_the_noise_level_and_sampling_works_on_it():
    sde = ds.EDMSDE()
    t = torch.tensor([0.002, 1.0, 80.0], dtype=torch.float64)
    alpha, sigma = sde.marginal(t)
    assert torch.equal(alpha, torch.ones(3, dtype=torch.float64)) and torch.equal(sigma, t)
    # an exact-score sampler on EDM's time: the analytic mixture's samples at sigma = 0.002
    ring = ds.GaussianMixture.ring2d()
    out = ds.sample(ring.score_fn(sde), sde, 4000, solver="edm_heun", steps=40, eps=0.002, seed=0)
    from diffsolve import metrics

    gap = metrics.log_prob_gap(out.samples, ring, 0.002, sde)
    assert abs(gap.value) < 0.05 + 3 * gap.se, gap


def test_schedule_parameters_are_checked():
    with pytest.raises(ValueError, match="T must be in"):
        ds.CosineVPSDE(T=1.0)
    with pytest.raises(ValueError, match="betas must be"):
        ds.DiscreteVPSDE([0.1, 1.5])
    with pytest.raises(ValueError, match="sigma_max"):
        ds.EDMSDE(sigma_max=-1.0)


@pytest.mark.parametrize("sde", SCHEDULES, ids=lambda s: type(s).__name__)
def test_a_model_on_each_schedule_round_trips_through_a_checkpoint(sde, tmp_path):
    from diffsolve import checkpoint
    from diffsolve.nn import ScoreMLP

    torch.manual_seed(0)
    model = ds.ScoreModel(ScoreMLP(dim=2, width=16, depth=1), sde, "eps")
    checkpoint.save(tmp_path / "ckpt", model)
    loaded = checkpoint.load(tmp_path / "ckpt")
    x, t = torch.randn(4, 2), torch.full((4,), 0.5 * sde.T)
    assert loaded.sde == sde
    with torch.no_grad():
        assert torch.equal(loaded(x, t), model(x, t))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_time_of_the_discrete_schedule_is_the_tensor_paths_to_the_bit(dtype):
    # One time on the CPU takes a Python-float path (every grid solver's call); it must give the very
    # numbers of the tensor path, at the knots, between them and at both ends.
    sde = ds.DiscreteVPSDE()
    t = torch.cat(
        [torch.rand(500, dtype=torch.float64) * sde.T, torch.tensor([0.0, 1e-3, 0.5, 999 / 1000, 1.0])]
    )
    t = t.to(dtype)
    log_alpha, sigma = sde.log_alpha_sigma(t)  # many times: the tensor path
    for i in range(len(t)):
        one = sde.log_alpha_sigma(t[i : i + 1])
        assert (
            one[0].dtype == dtype
            and torch.equal(one[0], log_alpha[i : i + 1])
            and torch.equal(one[1], sigma[i : i + 1])
        )
