"""Conditional scores and classifier-free guidance against the labelled mixture's closed forms."""

import pytest
import torch

import diffsolve as ds
from diffsolve import metrics

SDE = ds.VPSDE()
# Six components in two classes: class 0 on the left, class 1 on the right, overlapping in the middle.
MIX = ds.GaussianMixture(
    [0.2, 0.15, 0.15, 0.2, 0.15, 0.15],
    [[-3.0, 0.0], [-1.5, 1.5], [-1.5, -1.5], [3.0, 0.0], [1.5, 1.5], [1.5, -1.5]],
    [[0.4, 0.4]] * 6,
)
LAB = ds.LabeledMixture(MIX, [0, 0, 0, 1, 1, 1])


def _log_density(gm, x, t):
    return gm.log_prob_t(x, t, SDE)


@pytest.mark.parametrize("w", [0.0, 1.0, 4.0])
def test_the_guided_score_is_the_gradient_of_the_guided_log_density(w):
    # Independent: autograd of (1 + w) log p_t(x | y) - w log p_t(x), from the closed-form densities.
    x = MIX.marginal(0.4, SDE).sample(50, seed=0).requires_grad_(True)
    y = torch.randint(0, 2, (50,), generator=torch.Generator().manual_seed(1))
    t = 0.4
    cond = torch.stack(
        [_log_density(LAB.conditional(int(c)), x[i : i + 1], t)[0] for i, c in enumerate(y.tolist())]
    )
    target = (1 + w) * cond - w * _log_density(MIX, x, t)
    (grad,) = torch.autograd.grad(target.sum(), x)
    score = LAB.score_fn(SDE)
    g = ds.guided(ds.Conditional(score, y), ds.Conditional(score, None), w)
    got = g(x.detach(), torch.full((50,), t, dtype=torch.float64))
    torch.testing.assert_close(got, grad, rtol=1e-10, atol=1e-10)


def test_conditional_sampling_without_guidance_samples_the_class():
    # w = 0: exact samples of p(x | y = 1); the mean log p_eps(x | y) gap against exact draws.
    score = LAB.score_fn(SDE)
    g = ds.guided(ds.Conditional(score, 1), ds.Conditional(score, None), 0.0)
    out = ds.sample(g, SDE, 3000, event_shape=(2,), solver="dpm_solver++2m", steps=40, seed=0)
    gap = metrics.log_prob_gap(out.samples, LAB.conditional(1), 1e-3, SDE)
    assert abs(gap.value) < 0.03 + 3 * gap.se, gap
    assert float((out.samples[:, 0] > 0).double().mean()) > 0.99  # the right-hand class


def test_guidance_sharpens_the_class_and_costs_two_evaluations_per_call():
    score = LAB.score_fn(SDE)
    calls = {"n": 0}

    def counted(x, t, y=None):
        calls["n"] += 1
        return score(x, t, y)

    g = ds.guided(ds.Conditional(counted, 1), ds.Conditional(counted, None), 3.0)
    out = ds.sample(g, SDE, 2000, event_shape=(2,), solver="dpm_solver++2m", steps=40, seed=0)
    assert calls["n"] == 2 * out.nfe and g.evaluations_per_call == 2
    # guided samples sit deeper in class 1 than conditional ones: higher log p(y = 1 | x)
    plain = ds.sample(
        ds.Conditional(score, 1), SDE, 2000, event_shape=(2,), solver="dpm_solver++2m", steps=40, seed=0
    ).samples
    p1 = LAB.class_probs()[1]

    def log_posterior(x):
        return torch.log(p1) + _log_density(LAB.conditional(1), x, 1e-3) - _log_density(MIX, x, 1e-3)

    assert float(log_posterior(out.samples).mean()) > float(log_posterior(plain).mean())


def test_guidance_refuses_bad_arguments():
    score = LAB.score_fn(SDE)
    with pytest.raises(ValueError, match="w must be"):
        ds.guided(ds.Conditional(score, 0), ds.Conditional(score, None), -1.0)
    with pytest.raises(TypeError, match="y must be"):
        ds.Conditional(score, 0.5)
    with pytest.raises(ValueError, match="labels"):
        ds.LabeledMixture(MIX, [0, 1])
    with pytest.raises(ValueError, match="need the whole batch"):
        ds.Conditional(score, torch.tensor([0, 1, 1]))(torch.zeros(5, 2), torch.full((5,), 0.5))
