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
    resumed = train(
        _model(seed=99),
        data,
        steps=30,
        checkpoint_dir=tmp_path / "cut",
        resume=True,
        allow_changes=["steps"],
        **kw,
    )
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
    with pytest.raises(ValueError, match="weighting must be 'eps', 'likelihood' or 'velocity', got 'mse'"):
        train(model, data, steps=1, weighting="mse", progress=False)
    with pytest.raises(ValueError, match="importance_sampling applies to weighting='likelihood' only"):
        train(model, data, steps=1, importance_sampling=True, progress=False)
    with pytest.raises(ValueError, match="resume=True needs checkpoint_dir"):
        train(model, data, steps=1, resume=True, progress=False)
    bad = data.clone()
    bad[:] = float("nan")
    with pytest.raises(ValueError, match=r"data must be finite; it holds NaN or Inf"):
        train(model, bad, steps=3, progress=False)
    # finite data whose loss overflows float32 (residuals of ~1e30, squared) stops at once
    with pytest.raises(ValueError, match=r"loss became (inf|nan) at step 1; try a lower learning rate"):
        train(model, data * 1e30, steps=3, progress=False)


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
        allow_changes=("steps",),
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


# --- training runs that cannot be mixed up -------------------------------------------------------

_KILLED_RUN = """
import os, signal, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
import diffsolve as ds
import diffsolve.io
from diffsolve.nn import ScoreMLP
from diffsolve.training import train

call, stage, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
real, calls = diffsolve.io.atomic_write, [0]

def atomic_write(path, write, **kw):
    calls[0] += 1
    if calls[0] == call:
        if stage == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        if stage == "during":  # what mkstemp leaves when the writer dies mid-file
            (Path(path).parent / f".{Path(path).name}.x1y2z3.tmp").write_bytes(b"half a file")
            os.kill(os.getpid(), signal.SIGKILL)
    result = real(path, write, **kw)
    if calls[0] == call and stage == "after":
        os.kill(os.getpid(), signal.SIGKILL)
    return result

diffsolve.io.atomic_write = atomic_write
torch.manual_seed(0)
model = ds.ScoreModel(ScoreMLP(2, width=16, depth=1), ds.VPSDE(), "eps")
data = ds.GaussianMixture.ring2d().sample(500, seed=0, dtype=torch.float32)
train(model, data, steps=6, batch_size=8, seed=3, checkpoint_every=2, checkpoint_dir=out, progress=False)
"""

# A save writes three files: training state, EMA weights, config.json. The second save (step 4)
# is calls 4, 5, 6; killing at each stage covers before, during, between and after the writes.
_STAGES = [
    (4, "before"), (4, "during"), (4, "after"), (5, "during"), (5, "after"), (6, "after"),
]  # fmt: skip


def _tiny_run(out, **kw):
    torch.manual_seed(0)
    model = ds.ScoreModel(ScoreMLP(2, width=16, depth=1), ds.VPSDE(), "eps")
    data = ds.GaussianMixture.ring2d().sample(500, seed=0, dtype=torch.float32)
    return train(
        model,
        data,
        steps=6,
        batch_size=8,
        seed=3,
        checkpoint_every=2,
        checkpoint_dir=out,
        progress=False,
        **kw,
    )


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.parametrize("call, stage", _STAGES, ids=[f"write{c}-{s}" for c, s in _STAGES])
def test_sigkill_at_any_stage_of_a_save_then_resume_is_bit_identical(tmp_path, one_thread, call, stage):
    import signal
    import subprocess
    import sys

    full = _tiny_run(tmp_path / "full")
    out = tmp_path / "killed"
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_RUN, str(call), stage, str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    resumed = _tiny_run(out, resume=True)
    assert resumed.resumed_from in (2, 4)  # the last complete training state
    assert resumed.losses == full.losses
    for a, b in zip(
        full.ema_model.state_dict().values(), resumed.ema_model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    on_disk = ds.checkpoint.load(out)  # the EMA checkpoint on disk is the uninterrupted run's
    for a, b in zip(full.ema_model.state_dict().values(), on_disk.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))


def test_a_checkpoint_that_lags_the_training_state_is_rewritten_on_resume(tmp_path, one_thread):
    # The state at step 6 and an EMA checkpoint from step 2 (a kill between the two writes):
    # resume takes the state, and brings the checkpoint to step 6 even with nothing left to do.
    import shutil

    run = _tiny_run(tmp_path / "run")
    torch.manual_seed(0)
    model = ds.ScoreModel(ScoreMLP(2, width=16, depth=1), ds.VPSDE(), "eps")
    data = ds.GaussianMixture.ring2d().sample(500, seed=0, dtype=torch.float32)
    train(model, data, steps=2, batch_size=8, seed=3, checkpoint_dir=tmp_path / "early", progress=False)
    for name in (ds.checkpoint.WEIGHTS, ds.checkpoint.CONFIG):
        shutil.copy(tmp_path / "early" / name, tmp_path / "run" / name)
    assert ds.checkpoint.load(tmp_path / "run").checkpoint_config["metadata"]["training"]["step"] == 2
    again = _tiny_run(tmp_path / "run", resume=True)
    assert again.resumed_from == 6
    loaded = ds.checkpoint.load(tmp_path / "run")
    assert loaded.checkpoint_config["metadata"]["training"]["step"] == 6
    for a, b in zip(run.ema_model.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_a_second_run_on_the_same_directory_is_refused(tmp_path):
    from diffsolve.io import DirectoryInUseError, directory_lock

    with directory_lock(tmp_path / "ck", "checkpoint_dir"):  # as a live run holds it
        with pytest.raises(
            DirectoryInUseError, match=r"checkpoint_dir '.*ck' is in use by another run \(pid \d+\)"
        ):
            _tiny_run(tmp_path / "ck")
    _tiny_run(tmp_path / "ck")  # released: the run goes ahead
    with pytest.raises(ValueError, match="already holds a training run; pass resume=True"):
        _tiny_run(tmp_path / "ck")
    assert _tiny_run(tmp_path / "ck", overwrite=True).resumed_from == 0


def test_resume_with_other_settings_lists_every_change(tmp_path):
    from diffsolve.training import ResumeError

    _tiny_run(tmp_path)
    torch.manual_seed(0)
    model = ds.ScoreModel(ScoreMLP(2, width=16, depth=1), ds.SubVPSDE(), "eps")
    data = ds.GaussianMixture.ring2d().sample(500, seed=0, dtype=torch.float32)
    with pytest.raises(ResumeError) as info:
        train(model, data, steps=8, batch_size=16, seed=3, checkpoint_every=2, checkpoint_dir=tmp_path,
              progress=False, resume=True)  # fmt: skip
    assert set(info.value.changes) == {"steps", "batch_size", "model"}
    assert "batch_size: saved 8, given 16" in str(info.value) and "allow_changes=('steps',)" in str(
        info.value
    )
    with pytest.raises(ValueError, match="allow_changes may name only"):
        _tiny_run(tmp_path, resume=True, allow_changes=["batch_size"])
    with pytest.raises(ValueError, match="needs lr_schedule='constant'"):
        train(model, data, steps=8, lr_schedule="cosine", checkpoint_dir=tmp_path, resume=True,
              allow_changes=["steps"], progress=False)  # fmt: skip


def test_resuming_under_another_thread_count_warns(tmp_path, one_thread):
    _tiny_run(tmp_path)
    torch.set_num_threads(2)
    with pytest.warns(UserWarning, match="saved with 1: the weights will not be bit-identical"):
        _tiny_run(tmp_path, resume=True)


def test_the_ema_warms_up_as_diffusers_emamodel_does():
    # Issue: with decay 0.999 and no warm-up, a run stopped at step 94 saved an EMA still 91% the initial
    # weights. The warm-up's decay is diffusers' EMAModel(use_ema_warmup=True, inv_gamma=1, power=2/3).
    from diffusers.training_utils import EMAModel

    from diffsolve.training import ema_decay_at, ema_initial_share

    theirs = EMAModel(
        [torch.zeros(1)], decay=0.999, min_decay=0.0, use_ema_warmup=True, inv_gamma=1.0, power=2 / 3
    )
    for k in (0, 1, 2, 10, 93, 1000, 10**6):
        assert ema_decay_at(k, 0.999) == pytest.approx(theirs.get_decay(k + 1), abs=1e-12)
    assert ema_initial_share(94, 0.999, warmup=False) == pytest.approx(0.999**94)  # 0.910: the trap
    assert ema_initial_share(94, 0.999) == 0.0


@pytest.mark.parametrize("warmup", [True, False])
def test_after_one_step_the_ema_is_the_weights_only_with_warm_up(warmup):
    sde = ds.VPSDE()
    data = ds.GaussianMixture.ring2d().sample(256, seed=0, dtype=torch.float32)
    torch.manual_seed(0)
    model = ds.ScoreModel(ScoreMLP(2, width=32, depth=1), sde, "eps")
    initial = [p.detach().clone() for p in model.net.parameters()]
    res = train(model, data, steps=1, batch_size=64, progress=False, ema_warmup=warmup, seed=0)
    for pe, p, p0 in zip(res.ema_model.net.parameters(), res.model.net.parameters(), initial, strict=True):
        expected = p if warmup else 0.999 * p0 + 0.001 * p
        torch.testing.assert_close(pe, expected.detach())


def test_a_run_stopped_early_says_what_it_saved(tmp_path):
    # Issue: `diffsolve train --minutes 1` saved an unusable checkpoint without a word.
    import subprocess
    import sys

    out = tmp_path / "r"
    proc = subprocess.run(
        [sys.executable, "-m", "diffsolve", "train", "--dataset", "ring2d", "--steps", "6000", "--minutes", "0.001",
         "--out", str(out), "--no-progress", "--width", "16", "--depth", "1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "EMA: decay" in proc.stdout and "initial weights' share 0.0%" in proc.stdout
    assert "of 6000" in proc.stdout
    assert "unlikely to be usable yet" in proc.stderr and "--resume" in proc.stderr


def test_resume_on_other_data_or_labels_is_refused(tmp_path):
    # Issue: the Python API resumed on other data without noticing (the CLI checked its own arguments).
    from diffsolve.training import ResumeError

    ring = ds.GaussianMixture.ring2d()
    _tiny_run(tmp_path)
    torch.manual_seed(0)
    model = ds.ScoreModel(ScoreMLP(2, width=16, depth=1), ds.VPSDE(), "eps")
    other = ring.sample(500, seed=1, dtype=torch.float32)  # same shape and dtype, other points
    with pytest.raises(ResumeError, match=r"data: saved \{'shape': \[500, 2\], 'dtype': 'float32', 'sha256'"):
        train(model, other, steps=6, batch_size=8, seed=3, checkpoint_every=2, checkpoint_dir=tmp_path,
              progress=False, resume=True)  # fmt: skip
    assert _tiny_run(tmp_path, resume=True).steps == 6  # the same data resumes

    x = ring.sample(200, seed=0, dtype=torch.float32)
    y = torch.randint(0, 8, (200,), generator=torch.Generator().manual_seed(0))
    net = lambda: ScoreMLP(2, width=16, depth=1, num_classes=8)  # noqa: E731
    run = dict(
        steps=4, batch_size=8, seed=3, checkpoint_every=2, checkpoint_dir=tmp_path / "c", progress=False
    )
    torch.manual_seed(0)
    train(ds.ScoreModel(net(), ds.VPSDE(), "eps"), x, labels=y, **run)
    torch.manual_seed(0)
    with pytest.raises(ResumeError, match=r"data: .*'labels_sha256'"):
        train(
            ds.ScoreModel(net(), ds.VPSDE(), "eps"), x, labels=(y + 1) % 8, resume=True, **{**run, "steps": 6}
        )


def test_the_velocity_loss_is_flow_matchings_regression_on_z_minus_x0():
    # On the straight path the target is z - x0 (the velocity eps - x0 of SD3 / FLUX): a network that
    # returns a constant c has loss ||c - (z - x0)||^2, computed here by hand.
    class Constant(torch.nn.Module):
        def forward(self, x, t):
            return torch.full_like(x, 0.25)

    rf = ds.RectifiedFlow()
    gen = torch.Generator().manual_seed(0)
    x0, z = (
        torch.randn(64, 2, generator=gen, dtype=torch.float64),
        torch.randn(64, 2, generator=gen, dtype=torch.float64),
    )
    t = torch.rand(64, generator=gen, dtype=torch.float64) * 0.99 + 0.005
    loss = dsm_loss(ds.ScoreModel(Constant(), rf, "velocity"), x0, t, z, "velocity")
    torch.testing.assert_close(loss, (0.25 - (z - x0)).square().sum(1).mean(), rtol=1e-12, atol=0)
    # and on any SDE it is the score loss weighted by g^4 / 4: ||v - v*||^2 = (g^2/2)^2 ||s + z/sigma||^2
    vp, model = ds.VPSDE(), _model().double()
    per_row = [
        dsm_loss(model, x0[i : i + 1], t[i : i + 1], z[i : i + 1], w)
        for w in ("velocity", "eps")
        for i in range(4)
    ]
    g2, sigma = vp.g2(t[:4]), vp.marginal(t[:4])[1]
    torch.testing.assert_close(
        torch.stack(per_row[:4]), torch.stack(per_row[4:]) * g2**2 / (4 * sigma**2), rtol=1e-9, atol=0
    )


def test_flow_matchings_loss_trains_a_velocity_network():
    rf, gm = ds.RectifiedFlow(), ds.GaussianMixture.ring2d()
    torch.manual_seed(0)
    model = ds.ScoreModel(ScoreMLP(2, width=64, depth=2), rf, "velocity")
    x = gm.marginal(0.5, rf).sample(2000, seed=1, dtype=torch.float32)
    t = torch.full((2000,), 0.5)

    def error(m):
        with torch.no_grad():
            return (
                (m.velocity(x, t) - gm.score_fn(rf).velocity(x.double(), t.double()).float())
                .square()
                .sum(1)
                .mean()
                .sqrt()
                .item()
            )

    before = error(model)
    res = train(
        model,
        gm.sample(20_000, seed=0, dtype=torch.float32),
        steps=300,
        weighting="velocity",
        progress=False,
        ema_decay=0.9,
    )
    assert error(res.ema_model) < 0.5 * before, (before, error(res.ema_model))
