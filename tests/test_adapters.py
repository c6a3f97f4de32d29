import pytest
import torch
import torchdiffeq
import torchsde

import diffsolve as ds
from diffsolve.adapters import ProbabilityFlowODE, ReverseSDE


def _beta(t):
    return 0.1 + t * (20.0 - 0.1)


def test_reverse_sde_drift_matches_hand_formula(ring, vp):
    # By hand, for VP: in solver time s = T - t the drift is -(f - g^2 s) = beta/2 x + beta score.
    score = ring.score_fn(vp)
    rsde = ReverseSDE(score, vp, eps=1e-3)
    y = torch.randn(16, 2, dtype=torch.float64) * 3
    for s in (0.0, 0.25, 0.9):
        t = 1.0 - s
        expected = 0.5 * _beta(t) * y + _beta(t) * ring.score_t(y, t, vp)
        torch.testing.assert_close(rsde.f(torch.tensor(s, dtype=torch.float64), y), expected)
        v = torch.randn_like(y)
        torch.testing.assert_close(rsde.g_prod(torch.tensor(s), y, v), _beta(t) ** 0.5 * v)
    g = rsde.g(torch.tensor(0.5), y)
    assert g.shape == (16, 2, 2)
    torch.testing.assert_close(g[0], _beta(0.5) ** 0.5 * torch.eye(2, dtype=torch.float64))


def test_pf_ode_drift_matches_hand_formula(ring, vp):
    score = ring.score_fn(vp)
    ode = ProbabilityFlowODE(score, vp, eps=1e-3)
    x = torch.randn(16, 2, dtype=torch.float64) * 3
    for t in (1e-3, 0.4, 1.0):
        expected = -0.5 * _beta(t) * x - 0.5 * _beta(t) * ring.score_t(x, t, vp)
        torch.testing.assert_close(ode(torch.tensor(t, dtype=torch.float64), x), expected)
    assert ode.nfe == 3
    ode.reset()
    assert ode.nfe == 0


def test_event_shape_is_flattened_and_restored(vp):
    seen = []

    def score(x, t):
        seen.append(x.shape)
        return -x

    rsde = ReverseSDE(score, vp, eps=1e-3, event_shape=(1, 2, 3))
    y = torch.randn(4, 6)
    assert rsde.f(torch.tensor(0.1), y).shape == (4, 6)
    assert seen == [(4, 1, 2, 3)]
    ys = torchsde.sdeint(rsde, y, torch.tensor([0.0, rsde.s_end]), method="euler", dt=0.1)
    assert rsde.to_event(ys).shape == (2, 4, 1, 2, 3)


def test_sdeint_directly_equals_sample(ring, vp):
    # The recipe the docs show: torchsde.sdeint on ReverseSDE with its brownian_motion(seed). Our own
    # Euler–Maruyama loop (forward time, plain scheme) must be torchsde's euler on that path: equal up
    # to where the two query the path (torchsde steps by t + dt, ~1e-12 off the grid), 1e-7 here; an
    # increment from another path or another step would differ by ~0.1.
    score = ring.score_fn(vp)
    x_T = vp.prior_sample((256, 2), generator=torch.Generator().manual_seed(0)).double()
    res = ds.sample(score, vp, x_T=x_T, solver="sde:euler", steps=50, seed=7, noise_removal=False)
    rsde = ReverseSDE(score, vp, eps=1e-3)
    bm = rsde.brownian_motion(x_T, seed=7)
    ys = torchsde.sdeint(
        rsde,
        x_T,
        torch.tensor([0.0, rsde.s_end], dtype=torch.float64),
        bm=bm,
        method="euler",
        dt=rsde.s_end / 50 * (1 + 1e-12),
    )
    assert (ys[-1] - res.samples).abs().max() < 1e-7
    assert rsde.nfe == res.nfe == 50


def test_srk_uses_the_additive_scheme(ring, vp):
    # torchsde's diagonal SRK costs 10 drift evaluations per step, the additive SRA1 3, and our
    # one-entry cache answers SRA1's repeated evaluation at (t0, y0): 2 per step.
    score = ring.score_fn(vp)
    rsde = ReverseSDE(score, vp, eps=1e-3)
    x_T = torch.randn(32, 2)
    bm = rsde.brownian_motion(x_T, seed=0, levy_area_approximation="space-time")
    torchsde.sdeint(
        rsde,
        x_T,
        torch.tensor([0.0, rsde.s_end], dtype=torch.float64),
        bm=bm,
        method="srk",
        dt=rsde.s_end / 20 * (1 + 1e-12),
    )
    assert rsde.nfe == 2 * 20
    assert ds.sample(score, vp, 32, solver="sde:srk", steps=20, seed=0).nfe == 40


def _recording(score, times):
    def wrapped(x, t):
        times.append(t.min().item())
        times.append(t.max().item())
        return score(x, t)

    return wrapped


@pytest.mark.parametrize("eps", [1e-3, 1e-5])
def test_adaptive_ode_never_evaluates_outside_eps_T(ring, vp, eps):
    times = []
    eps32 = torch.tensor(eps, dtype=torch.float32).item()  # the score sees t in x's dtype (float32)
    score = _recording(ring.score_fn(vp), times)
    ds.sample(score, vp, 500, solver="ode:dopri5", eps=eps, seed=0, event_shape=(2,))
    assert min(times) >= eps32 and max(times) <= 1.0
    # And when a user calls torchdiffeq.odeint directly, without any options: the initial-step probe
    # and the last step's overshoot are clamped inside [eps, T].
    times.clear()
    calls = []

    def unchecked(x, t):
        calls.append(t[0].item())
        return ring.score_fn(vp)(x, t)

    ode = ProbabilityFlowODE(unchecked, vp, eps=eps)
    raw = []

    def probe(t, x):
        raw.append(t.item())
        return ode(t, x)

    x_T = torch.randn(500, 2)
    out = torchdiffeq.odeint(probe, x_T, torch.tensor([1.0, eps]), method="dopri5", rtol=1e-5, atol=1e-5)
    assert min(raw) < 0  # torchdiffeq did ask for t < 0 (its last step overshoots far past eps) ...
    assert min(calls) >= eps32 and max(calls) <= 1.0  # ... but the score never saw it
    assert bool(torch.isfinite(out).all())


def test_direct_odeint_with_options_matches_sample(ring, vp):
    score = ring.score_fn(vp)
    x_T = torch.randn(300, 2, dtype=torch.float64)
    ode = ProbabilityFlowODE(score, vp, eps=1e-3)
    direct = torchdiffeq.odeint(
        ode,
        x_T,
        torch.tensor([1.0, 1e-3], dtype=torch.float64),
        method="dopri5",
        rtol=1e-6,
        atol=1e-6,
        options=ode.odeint_options(),
    )[-1]
    res = ds.sample(score, vp, x_T=x_T, solver="ode:dopri5", rtol=1e-6, atol=1e-6)
    assert torch.equal(direct, res.samples)
    assert ode.nfe == res.nfe
