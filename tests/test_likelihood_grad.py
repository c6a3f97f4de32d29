"""Gradients through `log_likelihood`: with respect to the data and to a network's parameters, by
back-propagating through the solver and by torchdiffeq's adjoint, against central finite differences
in float64."""

import pytest
import torch

import diffsolve as ds
from diffsolve import checkpoint
from diffsolve.nn import ScoreMLP

VP = ds.VPSDE()
RING = ds.GaussianMixture.ring2d()


def _net_model():
    torch.manual_seed(0)
    return ds.ScoreModel(ScoreMLP(2, width=16, depth=1).double(), VP, "eps")


def _nll(score, x, **kw):
    return -ds.log_likelihood(score, VP, x, solver="rk4", steps=12, **kw).log_prob.sum()


def test_no_graph_unless_asked(tmp_path):
    x = RING.sample(3, seed=0)
    assert ds.log_likelihood(RING.score_fn(VP), VP, x).log_prob.grad_fn is None
    model = _net_model()
    with torch.no_grad():
        assert ds.log_likelihood(model, VP, x).log_prob.grad_fn is None
    assert ds.log_likelihood(model, VP, x).log_prob.grad_fn is not None  # parameters require grad
    # a loaded checkpoint is frozen: evaluating it never builds a graph by accident
    checkpoint.save(tmp_path / "ck", ds.ScoreModel(ScoreMLP(2, width=16, depth=1), VP, "eps"))
    loaded = checkpoint.load(tmp_path / "ck")
    assert not any(p.requires_grad for p in loaded.parameters())
    assert ds.log_likelihood(loaded, VP, x.float()).log_prob.grad_fn is None


@pytest.mark.parametrize("divergence", ["exact", "hutchinson"])
def test_gradient_with_respect_to_the_data_matches_finite_differences(divergence):
    score = RING.score_fn(VP)
    x = RING.sample(3, seed=1).requires_grad_(True)
    kw = dict(divergence=divergence, probes=2, seed=3)
    (grad,) = torch.autograd.grad(_nll(score, x, **kw), x)
    fd = torch.zeros_like(x)
    h = 1e-5
    with torch.no_grad():
        for i in range(x.shape[0]):
            for j in range(x.shape[1]):
                e = torch.zeros_like(x)
                e[i, j] = h
                fd[i, j] = (_nll(score, x + e, **kw) - _nll(score, x - e, **kw)) / (2 * h)
    # central differences: O(h^2) = 1e-10 truncation, round-off ~1e-16 / 1e-5 per unit of value
    torch.testing.assert_close(grad, fd, rtol=1e-6, atol=1e-7)


def test_gradient_with_respect_to_network_parameters_matches_finite_differences():
    model = _net_model()
    x = RING.sample(4, seed=2)
    params = [model.net.inp.weight if hasattr(model.net, "inp") else next(model.net.parameters())]
    grads = torch.autograd.grad(_nll(model, x), params)
    p = params[0]
    h = 1e-6
    with torch.no_grad():
        for idx in [(0, 0), (1, 1), (3, 0)] if p.dim() == 2 else [(0,), (1,), (2,)]:
            old = p[idx].item()
            p[idx] = old + h
            up = _nll(model, x)
            p[idx] = old - h
            down = _nll(model, x)
            p[idx] = old
            fd = (up - down) / (2 * h)
            torch.testing.assert_close(grads[0][idx], fd, rtol=1e-5, atol=1e-8)


def test_adjoint_and_direct_gradients_agree():
    torch.manual_seed(0)
    model = ds.ScoreModel(ScoreMLP(2, width=8, depth=1).double(), VP, "eps")
    x = RING.sample(2, seed=5).requires_grad_(True)
    params = list(model.parameters())
    kw = dict(solver="dopri5", rtol=1e-7, atol=1e-7)
    direct = torch.autograd.grad(-ds.log_likelihood(model, VP, x, **kw).log_prob.sum(), [x, *params])
    adj = torch.autograd.grad(
        -ds.log_likelihood(model, VP, x, adjoint=True, **kw).log_prob.sum(), [x, *params]
    )
    # Two discretisations of the same derivative (the adjoint re-integrates a larger state backwards
    # under its own error control): they agree to the solver's tolerance, relative to the gradient.
    d, a = torch.cat([g.flatten() for g in direct]), torch.cat([g.flatten() for g in adj])
    assert float((d - a).norm() / d.norm()) < 1e-4


def test_a_few_steps_of_maximum_likelihood_lower_the_nll():
    # Likelihood training (Song et al. 2021b): minimise the exact NLL of data through the solve.
    model = _net_model()
    x = RING.sample(64, seed=7)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(5):
        loss = -ds.log_likelihood(model, VP, x, solver="rk4", steps=8).log_prob.mean()
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        last = -ds.log_likelihood(model, VP, x, solver="rk4", steps=8).log_prob.mean().item()
    assert last < first - 0.05, (first, last)
