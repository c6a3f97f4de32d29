import pytest
import torch

import diffsolve as ds
from diffsolve.nn import ScoreMLP
from diffsolve.training import _TimeSampler, dsm_loss, train


def _model(width=64, seed=0):
    torch.manual_seed(seed)
    return ds.ScoreModel(ScoreMLP(2, width=width, depth=2), ds.VPSDE(), "eps")


def test_a_step_lowers_the_loss_on_a_fixed_batch():
    model = _model()
    gen = torch.Generator().manual_seed(0)
    x0 = ds.GaussianMixture.ring2d().sample(256, seed=0, dtype=torch.float32)
    t = torch.rand(256, generator=gen) * 0.99 + 0.01
    z = torch.randn(256, 2, generator=gen)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = dsm_loss(model, x0, t, z, "eps")
    for _ in range(5):
        opt.zero_grad()
        dsm_loss(model, x0, t, z, "eps").backward()
        opt.step()
    assert dsm_loss(model, x0, t, z, "eps").item() < before.item()


def _score_error(model, gm, sde):
    x = gm.marginal(0.5, sde).sample(2000, seed=1, dtype=torch.float32)
    t = torch.full((2000,), 0.5)
    with torch.no_grad():
        return (model(x, t) - gm.score_t(x, t, sde)).square().sum(1).mean().sqrt().item()


@pytest.mark.parametrize("weighting, importance", [("eps", False), ("likelihood", True)])
def test_a_few_hundred_steps_approach_the_analytic_score(weighting, importance):
    gm, model = ds.GaussianMixture.ring2d(), _model()
    data = gm.sample(20_000, seed=0, dtype=torch.float32)
    before = _score_error(model, gm, model.sde)
    res = train(
        model,
        data,
        steps=300,
        batch_size=256,
        weighting=weighting,
        importance_sampling=importance,
        progress=False,
        ema_decay=0.9,
    )
    after = _score_error(res.ema_model, gm, model.sde)
    # An untrained network is off by ~1.4 (the score's own scale at t = 0.5); 300 steps must at
    # least halve that (measured: 3000 steps reach 0.03).
    assert after < 0.5 * before, (before, after)
    assert len(res.losses) == 300 and res.steps == 300


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    data = ds.GaussianMixture.ring2d().sample(5000, seed=0, dtype=torch.float32)
    kw = dict(batch_size=64, progress=False, seed=3, checkpoint_every=10)
    full = train(_model(), data, steps=30, checkpoint_dir=tmp_path / "full", **kw)
    train(_model(), data, steps=10, checkpoint_dir=tmp_path / "cut", **kw)  # "interrupted" after 10 steps
    resumed = train(_model(seed=99), data, steps=30, checkpoint_dir=tmp_path / "cut", resume=True, **kw)
    assert resumed.losses == full.losses
    for a, b in zip(
        full.ema_model.state_dict().values(), resumed.ema_model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # The saved checkpoint is the EMA model, loadable as a score.
    loaded = ds.checkpoint.load(tmp_path / "cut")
    x, t = torch.randn(4, 2), torch.full((4,), 0.3)
    assert torch.equal(loaded(x, t), full.ema_model(x, t))


def test_importance_sampling_keeps_the_expectation():
    # E_U[(g^2/sigma^2) f(t)] by quadrature vs the importance-sampled Monte-Carlo mean of norm * f(t).
    sde, eps = ds.VPSDE(), 1e-3
    sampler = _TimeSampler(sde, eps, True, torch.float64)
    t = sampler(200_000, torch.Generator().manual_seed(0))
    assert float(t.min()) >= eps and float(t.max()) <= 1.0
    est = sampler.norm * t
    grid = torch.linspace(eps, 1.0, 200_001, dtype=torch.float64)
    exact = torch.trapezoid(sde._g2(grid) / sde.marginal(grid)[1] ** 2 * grid, grid) / (1.0 - eps)
    # 4 standard errors of the 200 000-draw mean.
    assert abs(est.mean().item() - exact.item()) <= 4 * est.std().item() / 200_000**0.5


def test_training_bad_input():
    model = _model()
    data = torch.randn(100, 2)
    with pytest.raises(ValueError, match="weighting must be 'eps' or 'likelihood', got 'mse'"):
        train(model, data, steps=1, weighting="mse", progress=False)
    with pytest.raises(ValueError, match="importance_sampling applies to weighting='likelihood' only"):
        train(model, data, steps=1, importance_sampling=True, progress=False)
    with pytest.raises(ValueError, match="resume=True needs checkpoint_dir"):
        train(model, data, steps=1, resume=True, progress=False)
    bad = data.clone()
    bad[:] = float("nan")
    with pytest.raises(ValueError, match=r"loss became nan at step 1; try a lower learning rate"):
        train(model, bad, steps=3, progress=False)


def test_max_seconds_stops_and_checkpoints(tmp_path):
    data = ds.GaussianMixture.ring2d().sample(1000, seed=0, dtype=torch.float32)
    res = train(
        _model(),
        data,
        steps=10**9,
        batch_size=32,
        progress=False,
        max_seconds=0.5,
        checkpoint_dir=tmp_path / "ck",
    )
    assert 0 < res.steps < 10**9
    more = train(
        _model(),
        data,
        steps=res.steps + 3,
        batch_size=32,
        progress=False,
        checkpoint_dir=tmp_path / "ck",
        resume=True,
    )
    assert more.steps == res.steps + 3 and more.resumed_from == res.steps


def test_resume_from_a_damaged_training_state(tmp_path):
    data = ds.GaussianMixture.ring2d().sample(500, seed=0, dtype=torch.float32)
    train(_model(), data, steps=2, batch_size=16, progress=False, checkpoint_dir=tmp_path)
    state = tmp_path / "train_state.safetensors"
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(ds.checkpoint.CheckpointError, match="truncated or corrupted"):
        train(_model(), data, steps=4, batch_size=16, progress=False, checkpoint_dir=tmp_path, resume=True)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"eps": 1.0}, r"eps must lie in \(0, T\)"),
        ({"grad_clip": 0}, "grad_clip must be > 0"),
        ({"grad_clip": -1.0}, "grad_clip must be > 0"),
    ],
)
def test_settings_that_would_train_nothing_are_refused(kwargs, message):
    # eps = T trains on pure noise; grad_clip = 0 never moves the weights: both used to be accepted.
    model = ds.ScoreModel(ScoreMLP(2, width=8, depth=1), ds.VPSDE())
    with pytest.raises(ValueError, match=message):
        train(model, torch.randn(64, 2), steps=2, progress=False, **kwargs)
