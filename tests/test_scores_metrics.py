import pytest
import torch

import diffsolve as ds
from diffsolve import metrics

# Data N(m, s0^2 I): x_t = alpha x0 + sigma z is Gaussian, and by Gaussian conditioning
#   E[x0 | x_t] = m + alpha s0^2 (x_t - alpha m) / v,   E[z | x_t] = sigma (x_t - alpha m) / v,
#   grad log p_t(x_t) = -(x_t - alpha m) / v,            v = alpha^2 s0^2 + sigma^2.
# Each "network" below outputs one of these posterior means, written from these formulas alone.
M, S0 = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64), 0.7


class _PosteriorMean(torch.nn.Module):
    def __init__(self, sde, kind):
        super().__init__()
        self.sde, self.kind = sde, kind

    def forward(self, x, t):
        alpha, sigma = (v[:, None] for v in self.sde.marginal(t))
        v = alpha**2 * S0**2 + sigma**2
        r = x - alpha * M
        x0, eps = M + alpha * S0**2 * r / v, sigma * r / v
        # v-prediction (Salimans & Ho 2022): v = alpha eps - sigma x0, of the posterior means
        return {"x0": x0, "eps": eps, "score": -r / v, "v": alpha * eps - sigma * x0}[self.kind]


@pytest.mark.parametrize("kind", ["eps", "x0", "score", "v"])
def test_score_model_turns_each_posterior_mean_into_the_gaussian_score(any_sde, kind):
    model = ds.ScoreModel(_PosteriorMean(any_sde, kind), any_sde, parameterization=kind)
    x = torch.randn(16, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = torch.rand(16, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 0.9 + 0.05
    alpha, sigma = (v[:, None] for v in any_sde.marginal(t))
    expected = -(x - alpha * M) / (alpha**2 * S0**2 + sigma**2)
    torch.testing.assert_close(model(x, t), expected)
    # ...which is also the analytic oracle's score for the one-component mixture.
    gm = ds.GaussianMixture([1.0], M[None], S0)
    torch.testing.assert_close(gm.score_t(x, t, any_sde), expected)


def test_sliced_wasserstein_of_a_shift_is_the_shift():
    x = torch.randn(1000, 1, dtype=torch.float64)
    # In 1-D every projection is +-1: W2 between x and x + c is exactly |c|.
    assert metrics.sliced_wasserstein(x, x + 0.7) == pytest.approx(0.7, rel=1e-12)
    y = torch.randn(5000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert metrics.sliced_wasserstein(y, y) == 0.0


def test_weights_and_gap_are_null_for_exact_samples(vp):
    gm = ds.GaussianMixture.ring2d()
    x = gm.marginal(1e-3, vp).sample(20_000, seed=3)
    tv = metrics.weight_tv(x, gm, 1e-3, vp)
    gap = metrics.log_prob_gap(x, gm, 1e-3, vp)
    # Exact samples: both are noise only, within 3 of their own standard errors (seeded, so fixed).
    assert tv.value <= 3 * tv.se
    assert abs(gap.value) <= 3 * gap.se
    # A sample with one mode missing is far off on both.
    far = x[gm.responsibilities(x, 1e-3, vp).argmax(1) != 0]
    assert metrics.weight_tv(far, gm, 1e-3, vp).value > 0.1


def test_path_error():
    a = torch.zeros(4, 2)
    b = torch.tensor([[3.0, 4.0], [0, 0], [0, 0], [0, 0]])
    assert metrics.path_error(a, b) == pytest.approx(2.5)  # sqrt(25 / 4)
    assert metrics.path_error(a, b, p=1) == pytest.approx(1.25)
