import pytest
import torch
from torch import distributions as D

import diffsolve as ds


def _torch_mixture(gm, mean_scale=1.0, var_add=0.0):
    """The same mixture built from torch.distributions: an independent implementation."""
    comps = D.Independent(D.Normal(mean_scale * gm.means, (mean_scale**2 * gm.stds**2 + var_add).sqrt()), 1)
    return D.MixtureSameFamily(D.Categorical(probs=gm.weights), comps)


def test_log_prob_matches_torch_distributions():
    gm = ds.GaussianMixture.random(dim=5, k=4, seed=3)
    x = torch.randn(100, 5, dtype=torch.float64) * 3
    torch.testing.assert_close(gm.log_prob(x), _torch_mixture(gm).log_prob(x))


def test_log_prob_t_matches_torch_distributions(any_sde):
    gm = ds.GaussianMixture.random(dim=3, k=5, seed=1)
    x = torch.randn(64, 3, dtype=torch.float64) * 2
    for t in (1e-4, 0.2, 0.9):
        alpha, sigma = any_sde.marginal(torch.tensor(t, dtype=torch.float64))
        ref = _torch_mixture(gm, alpha.item(), sigma.item() ** 2).log_prob(x)
        torch.testing.assert_close(gm.log_prob_t(x, t, any_sde), ref)


def test_score_is_gradient_of_log_prob_t(any_sde):
    gm = ds.GaussianMixture.random(dim=4, k=3, seed=2)
    x = (torch.randn(32, 4, dtype=torch.float64) * 2).requires_grad_(True)
    t = torch.rand(32, dtype=torch.float64) * 0.99 + 0.005
    (grad,) = torch.autograd.grad(gm.log_prob_t(x, t, any_sde).sum(), x)
    torch.testing.assert_close(gm.score_fn(any_sde)(x.detach(), t), grad)


def test_sample_moments():
    gm = ds.GaussianMixture.random(dim=2, k=3, seed=0)
    x = gm.sample(400_000, seed=0)
    w, mu, s = gm.weights, gm.means, gm.stds
    mean = (w[:, None] * mu).sum(0)
    second = (w[:, None] * (mu**2 + s**2)).sum(0)
    # SE of a mean over 4e5 draws of unit-scale data is ~0.005 (data std <= 5 here): 0.03 is > 5 SE.
    torch.testing.assert_close(x.mean(0), mean, atol=0.03, rtol=0)
    torch.testing.assert_close((x**2).mean(0), second, atol=0.3, rtol=0.02)


def test_marginal_mixture_agrees_with_log_prob_t(vp):
    gm = ds.GaussianMixture.ring2d()
    x = torch.randn(50, 2, dtype=torch.float64) * 4
    torch.testing.assert_close(gm.marginal(0.4, vp).log_prob(x), gm.log_prob_t(x, 0.4, vp))


def test_small_t_limit(vp):
    gm = ds.GaussianMixture.ring2d()
    x = gm.sample(100, seed=0)
    # |log p_t - log p_0| = O(t) for smooth p_0; at t = 1e-9 the change is ~1e-9 nats.
    torch.testing.assert_close(gm.log_prob_t(x, 1e-9, vp), gm.log_prob(x), atol=1e-6, rtol=0)


def test_dtype_follows_input(vp):
    gm = ds.GaussianMixture.ring2d()
    x = torch.randn(8, 2, dtype=torch.float32)
    t = torch.full((8,), 0.5, dtype=torch.float32)
    assert gm.score_fn(vp)(x, t).dtype == torch.float32
    assert gm.log_prob_t(x, t, vp).dtype == torch.float32
    x_img = torch.randn(8, 1, 2, 1)
    assert gm.score_fn(vp)(x_img, t).shape == x_img.shape


def test_ring2d_geometry():
    gm = ds.GaussianMixture.ring2d()
    assert gm.n_components == 8 and gm.dim == 2
    torch.testing.assert_close(gm.means.norm(dim=1), torch.full((8,), 4.0, dtype=torch.float64))
    torch.testing.assert_close(gm.stds, torch.full((8, 2), 0.3, dtype=torch.float64))


def test_bad_mixture_input():
    with pytest.raises(ValueError, match="means must have shape"):
        ds.GaussianMixture([0.5, 0.5], [[0.0, 0.0]], 1.0)
    with pytest.raises(ValueError, match="weights must be positive"):
        ds.GaussianMixture([1.0, -0.1], [[0.0], [1.0]], 1.0)
    with pytest.raises(ValueError, match="stds must be"):
        ds.GaussianMixture([1.0], [[0.0, 1.0]], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="2 values per sample"):
        ds.GaussianMixture.ring2d().log_prob(torch.zeros(4, 3))
