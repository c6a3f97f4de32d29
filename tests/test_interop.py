"""k-diffusion / EDM denoisers as scores, against a mixture's posterior mean written out here."""

import math

import pytest
import torch

import diffsolve as ds
from diffsolve import metrics
from diffsolve.interop import from_denoiser

RING = ds.GaussianMixture.ring2d()


def posterior_mean(x, sigma):
    """E[x0 | x0 + sigma n] for the ring's isotropic components: sum_k r_k (m_k + s_k^2/(s_k^2 + sigma^2)(x - m_k))."""
    w, m, s = RING.weights, RING.means, RING.stds  # (K,), (K, D), (K, D), float64
    dtype, x, sigma = x.dtype, x.double(), sigma.double()
    var = s[None] ** 2 + sigma[:, None, None] ** 2  # (B, K, D)
    diff = x[:, None, :] - m[None]
    logp = torch.log(w)[None] - 0.5 * (diff**2 / var + torch.log(2 * math.pi * var)).sum(-1)
    r = torch.softmax(logp, dim=1)
    comp = m[None] + s[None] ** 2 / var * diff
    return (r[..., None] * comp).sum(1).to(dtype)


def test_a_denoiser_becomes_the_exact_score_on_the_edm_sde():
    score = from_denoiser(posterior_mean)
    sigma = torch.tensor([0.01, 0.3, 1.0, 5.0, 80.0], dtype=torch.float64).repeat_interleave(20)
    x = RING.sample(100, seed=0) + sigma[:, None] * torch.randn(100, 2, dtype=torch.float64)
    torch.testing.assert_close(score(x, sigma), RING.score_fn(score.sde)(x, sigma), rtol=1e-9, atol=1e-9)
    out = ds.sample(score, score.sde, 3000, event_shape=(2,), solver="edm_heun", steps=40, eps=0.002, seed=0)
    gap = metrics.log_prob_gap(out.samples, RING, 0.002, score.sde)
    assert abs(gap.value) < 0.05 + 3 * gap.se, gap


def test_edm_preconditioning_wraps_a_raw_network():
    # The raw network that EDM's preconditioning turns into the exact denoiser, inverted here.
    sd = 0.5

    def raw(x_in, c_noise):
        sigma = torch.exp(4 * c_noise)
        x = x_in * (sigma**2 + sd**2).sqrt()[:, None]
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = sigma * sd / (sigma**2 + sd**2).sqrt()
        return (posterior_mean(x, sigma) - c_skip[:, None] * x) / c_out[:, None]

    plain, wrapped = from_denoiser(posterior_mean), from_denoiser(raw, sigma_data=sd)
    sigma = torch.linspace(0.01, 50, 30, dtype=torch.float64)
    x = RING.sample(30, seed=1) + sigma[:, None] * torch.randn(30, 2, dtype=torch.float64)
    torch.testing.assert_close(wrapped(x, sigma), plain(x, sigma), rtol=1e-9, atol=1e-9)


def test_from_denoiser_refuses_bad_arguments():
    with pytest.raises(TypeError, match="denoiser must be callable"):
        from_denoiser("net")
    with pytest.raises(ValueError, match="sigma_data must be"):
        from_denoiser(posterior_mean, sigma_data=0.0)


@pytest.mark.parametrize(
    "make, words",
    [
        (
            lambda D: from_denoiser(lambda x, s: D(x, s)[:1]),
            r"the denoiser D\(x, sigma\) returned shape \(1, 2\)",
        ),
        (
            lambda D: from_denoiser(lambda x, s: D(x, s).sum()),
            r"the denoiser D\(x, sigma\) returned shape \(\)",
        ),
        (
            lambda D: from_denoiser(lambda x, s: D(x, s)[:1], sigma_data=0.5),
            r"the network net\(c_in x, c_noise\)",
        ),
    ],
)
def test_a_denoiser_returning_the_wrong_shape_is_refused_not_broadcast(make, words):
    # Issue: from_denoiser(lambda x, s: D(x, s)[:1]) broadcast one row over the batch (spread 0.002 vs 0.40).
    edm = ds.EDMSDE()

    def D(x, s):
        return x / (1 + s[:, None] ** 2)

    with pytest.raises(ValueError, match=words):
        ds.sample(make(D), edm, 16, event_shape=(2,), solver="edm_heun", steps=4, eps=0.002, seed=0)


def test_a_score_model_whose_network_returns_one_row_is_refused():
    class OneRow(torch.nn.Module):
        def forward(self, x, t):
            return x[:1]

    with pytest.raises(
        ValueError, match=r"the network net\(x, t\) of this ScoreModel \('eps'\) returned shape \(1, 2\)"
    ):
        ds.sample(
            ds.ScoreModel(OneRow(), ds.VPSDE(), "eps"), ds.VPSDE(), 8, event_shape=(2,), solver="ddim", seed=0
        )
