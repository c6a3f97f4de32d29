import pytest
import torch

import diffsolve as ds
from diffsolve import metrics


class _Oracle(torch.nn.Module):
    """A 'network' that outputs exactly what each parameterisation asks for, from the analytic mixture."""

    def __init__(self, gm, sde, kind):
        super().__init__()
        self.gm, self.sde, self.kind = gm, sde, kind

    def forward(self, x, t):
        s = self.gm.score_t(x, t, self.sde)
        alpha, sigma = self.sde.marginal(t)
        alpha, sigma = alpha[:, None], sigma[:, None]
        if self.kind == "score":
            return s
        if self.kind == "eps":
            return -sigma * s  # eps = -sigma * score
        return (x + sigma**2 * s) / alpha  # Tweedie: E[x0 | x_t]


@pytest.mark.parametrize("kind", ["eps", "x0", "score"])
def test_score_model_parameterisations_recover_the_score(any_sde, kind):
    gm = ds.GaussianMixture.random(dim=3, k=2, seed=0)
    model = ds.ScoreModel(_Oracle(gm, any_sde, kind), any_sde, parameterization=kind)
    x = torch.randn(16, 3, dtype=torch.float64)
    t = torch.rand(16, dtype=torch.float64) * 0.9 + 0.05
    torch.testing.assert_close(model(x, t), gm.score_t(x, t, any_sde))


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
