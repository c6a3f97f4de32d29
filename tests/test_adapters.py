import pytest
import torch
import torchdiffeq
import torchsde

import diffsolve as ds
from diffsolve.adapters import BrownianPath, ProbabilityFlowODE, ReverseBrownian, ReverseSDE, uniform_grid


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


# --- the Brownian path a seed names (adapters/brownian.py) ---


def _walk(path, grid):
    """W at every point of `grid`, queried in order, as a (len(grid), B, D) tensor."""
    return torch.stack([path.value(float(s)) for s in grid])


def test_brownian_path_has_the_law_of_brownian_motion():
    # Increments over a grid that is not dyadic (its points fall inside the tree's cells): each has
    # variance ds (a chi-square mean of 40 000 squares: sd 0.7 %, bound 5 sd) and consecutive ones are
    # uncorrelated (sd 1/200, bound 5 sd).
    s_end, n = 0.999, 1000
    path = BrownianPath((20_000, 2), seed=3, s_end=s_end)
    grid = torch.linspace(0.0, s_end, n + 1, dtype=torch.float64)
    inc = _walk(path, grid).diff(dim=0).flatten(1)
    ratio = inc.square().mean(dim=1) / (s_end / n)
    assert (ratio - 1).abs().max() < 5 * (2 / inc.shape[1]) ** 0.5, ratio
    corr = (inc[1:] * inc[:-1]).mean(dim=1) / (s_end / n)
    assert corr.abs().max() < 5 / inc.shape[1] ** 0.5
    # W(s) at a point strictly inside a cell has variance s (bridge law between the cell's ends)
    w = BrownianPath((40_000, 1), seed=4, s_end=s_end).value(0.3337)
    assert abs(float(w.var()) / 0.3337 - 1) < 5 * (2 / 40_000) ** 0.5


def test_brownian_path_is_the_same_at_every_step_count():
    # The points k/10 of S are reached by a 10-step and a 1000-step grid (and by a logSNR-like
    # unequal one that contains them): W agrees there up to the rounding of the query times.
    s_end = 0.999
    coarse = _walk(
        BrownianPath((64, 3), seed=1, s_end=s_end), torch.linspace(0, s_end, 11, dtype=torch.float64)
    )
    fine = _walk(
        BrownianPath((64, 3), seed=1, s_end=s_end), torch.linspace(0, s_end, 1001, dtype=torch.float64)
    )
    torch.testing.assert_close(fine[::100], coarse, rtol=0, atol=1e-6)
    other = _walk(
        BrownianPath((64, 3), seed=2, s_end=s_end), torch.linspace(0, s_end, 11, dtype=torch.float64)
    )
    assert (other[-1] - coarse[-1]).abs().mean() > 0.1  # another seed is another path


def test_brownian_path_of_a_sample_depends_on_its_global_index_only():
    s_end = 0.5
    small = BrownianPath((8, 2), seed=9, s_end=s_end)
    big = BrownianPath((16, 2), seed=9, s_end=s_end)
    for s in (0.1, 0.25, 0.4999):
        assert torch.equal(small.value(s), big.value(s)[:8])
    # a shard that starts inside one normal stream and ends in the next
    whole = BrownianPath((70_000, 2), seed=9, s_end=s_end)
    shard = BrownianPath((5_000, 2), seed=9, s_end=s_end, row_start=63_000)
    assert torch.equal(whole.value(0.3)[63_000:68_000], shard.value(0.3))


def test_noise_removal_drops_exactly_the_last_increment(ring, vp):
    # Euler–Maruyama with and without noise removal share every step but the last, whose noise
    # g(t_{N-1}) dW is what separates them.
    score = ring.score_fn(vp)
    x_T = vp.prior_sample((128, 2), generator=torch.Generator().manual_seed(0)).double()
    plain = ds.sample(score, vp, x_T=x_T, solver="sde:euler", steps=20, seed=5, noise_removal=False)
    mean = ds.sample(score, vp, x_T=x_T, solver="sde:euler", steps=20, seed=5)
    grid = uniform_grid(vp.T, 1e-3, 20)
    dw = ReverseBrownian(x_T, vp, 1e-3, 5).increment(float(grid[-2]), float(grid[-1]))
    g = float(vp.g2(grid[-2])) ** 0.5
    torch.testing.assert_close(plain.samples - mean.samples, g * dw, rtol=0, atol=1e-12)
