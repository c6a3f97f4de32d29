"""Bad input gets a clear error naming the argument: each row is a call that used to return a wrong or
meaningless answer, allocate without bound, or fail with a traceback that did not say what was wrong.
docs/reliability.md counts the rows."""

import math
import re

import numpy as np
import pytest
import torch
from _matrix import ALIASES, cli_probes, probes  # tests/_matrix.py (tests/ is on sys.path under pytest)

import diffsolve as ds
from diffsolve import checkpoint
from diffsolve.analysis import convergence_order
from diffsolve.compare import compare
from diffsolve.memory import MemoryBudgetError
from diffsolve.nn import ScoreMLP
from diffsolve.samplers.registry import MAX_STEPS
from diffsolve.training import train

VP = ds.VPSDE()
RING = ds.GaussianMixture.ring2d()


def _nan_jacobian(x, t):
    """The ring's exact score, plus zero times a term whose derivative is NaN (sqrt at 0)."""
    return RING.score_t(x, t, VP) + 0.0 * torch.sqrt(torch.zeros_like(x) * x)


CASES = [
    # (what, call, exception, words the message must contain)
    ("VPSDE with an infinite beta_max", lambda: ds.VPSDE(0.1, math.inf), ValueError, "beta_max must be finite"),
    ("SubVPSDE with an infinite beta_max", lambda: ds.SubVPSDE(0.1, math.inf), ValueError, "beta_max must be finite"),
    ("VESDE with an infinite sigma_max", lambda: ds.VESDE(0.01, math.inf), ValueError, "sigma_max must be finite"),
    ("a score built for VP used with VE",
     lambda: ds.sample(RING.score_fn(VP), ds.VESDE(), 4, solver="ddim", steps=3), ValueError,
     "the score was built for VPSDE"),
    ("a ScoreModel used with another SDE",
     lambda: ds.sample(ds.ScoreModel(ScoreMLP(2), VP, "eps"), ds.SubVPSDE(), 4, event_shape=(2,), solver="ddim",
                       steps=3),
     ValueError, "sde=SubVPSDE"),
    ("a billion steps", lambda: ds.sample(RING.score_fn(VP), VP, 4, solver="ddim", steps=10**9), ValueError,
     "steps = 1000000000 is more than MAX_STEPS"),
    ("a billion steps for the likelihood",
     lambda: ds.log_likelihood(RING.score_fn(VP), VP, torch.zeros(2, 2, dtype=torch.float64), solver="rk4",
                               steps=10**9),
     ValueError, "MAX_STEPS"),
    ("complex prior draws", lambda: ds.sample(lambda x, t: -x, VP, x_T=torch.zeros(4, 2, dtype=torch.complex64),
                                              solver="ddim", steps=3), TypeError, "x_T must have a floating-point dtype"),
    ("a score with a NaN Jacobian, exact trace (rk4)",
     lambda: ds.log_likelihood(_nan_jacobian, VP, RING.sample(8, seed=0), solver="rk4", steps=10),
     ds.NonFiniteError, "non-finite (NaN or Inf) at t = "),
    ("a score with a NaN Jacobian, Hutchinson",
     lambda: ds.log_likelihood(_nan_jacobian, VP, RING.sample(8, seed=0), divergence="hutchinson"),
     ds.NonFiniteError, "non-finite (NaN or Inf) at t = "),
    ("a prior log-density that returns NaN",
     lambda: ds.log_likelihood(RING.score_fn(VP), VP, RING.sample(4, seed=0),
                               prior_log_prob=lambda z: torch.full((z.shape[0],), math.nan, dtype=z.dtype)),
     ds.NonFiniteError, "the prior log-density log p_T(z) (4 of 4 points) became non-finite (NaN or Inf) at t = 1"),
    ("a checkpoint saved to an empty path",
     lambda: checkpoint.save("", ds.ScoreModel(ScoreMLP(2), VP, "eps")), ValueError, "path must name a checkpoint"),
]  # fmt: skip


def _model32():
    torch.manual_seed(0)
    return ds.ScoreModel(ScoreMLP(2, width=16, depth=1), VP, "eps")


def _float32_only(x, t):
    """A user's score that computes in float32 only, and says so when handed float64."""
    if x.dtype != torch.float32:
        raise TypeError(f"this score takes float32 states, got {x.dtype}")
    return RING.score_t(x, t, VP)


X2 = torch.zeros(2, 2, dtype=torch.float64)


# Unbounded work: each row would allocate far beyond the limit (4 GiB here, see the fixture).
def _with_grad(n: int) -> torch.Tensor:
    return RING.sample(n, seed=0, dtype=torch.float32).requires_grad_()


MEMORY_CASES = [
    ("log_likelihood with gradients, 10^5 rk4 steps",  # the graph keeps every stage of every step
     lambda: ds.log_likelihood(RING.score_fn(VP), VP, _with_grad(4096), solver="rk4", steps=100_000),
     "the state and its drift"),
    ("sample, n = 10^9", lambda: ds.sample(RING.score_fn(VP), VP, 10**9, solver="ddim", steps=10),
     "sample(n=1000000000, solver='ddim') needs about 74.5 GiB"),  # 1e9 x 2 x 4 bytes x (8 working + 2 kept)
    ("sample, a trajectory of 10^5 steps",
     lambda: ds.sample(RING.score_fn(VP), VP, 10**4, solver="ddim", steps=10**5, return_trajectory=True),
     "the results alone do not fit: ask for fewer points or return_trajectory=False"),
    ("log_likelihood, 10^9 probes",
     lambda: ds.log_likelihood(RING.score_fn(VP), VP, X2, divergence="hutchinson", probes=10**9),
     "log_likelihood(x of 2 points, divergence='hutchinson', probes=1000000000) needs about"),
    ("log_likelihood, an exact trace of 10^6 points at d = 4096",
     lambda: ds.log_likelihood(lambda x, t: -x, VP, torch.zeros(1, 1).expand(10**6, 4096), divergence="exact"),
     "log_likelihood(x of 1000000 points, divergence='exact', probes=1) needs about"),
    ("compare, n = 10^9",
     lambda: compare(RING.score_fn(VP), VP, reference=RING, solvers=["ddim"], budgets=[4], n=10**9, progress=False),
     "compare(n=1000000000) needs about"),
    ("convergence_order, n = 10^9",
     lambda: convergence_order(RING.score_fn(VP), VP, "ddim", steps=[4, 8, 16], kind="ode", n=10**9),
     "convergence_order(n=1000000000) needs about"),
    ("train, batch_size = 10^9",
     lambda: train(_model32(), RING.sample(100, seed=0, dtype=torch.float32), steps=1, batch_size=10**9,
                   progress=False),
     "train(batch_size=1000000000) needs about"),
    ("training data, n = 10^10", lambda: __import__("diffsolve.problems").problems.training_data("ring2d", 10**10, 0),
     "training_data('ring2d', n=10000000000) needs about"),
]  # fmt: skip

CASES += [
    ("a mixture with complex means", lambda: ds.GaussianMixture([1.0], torch.zeros(1, 2, dtype=torch.complex64), 1.0),
     TypeError, "means must be real numbers"),
    ("a mixture in an integer dtype", lambda: ds.GaussianMixture([1.0], [[0.0, 0.0]], 1.0, dtype=torch.int64),
     TypeError, "dtype must be a floating-point torch dtype"),
    ("compare with a score that takes float32 only: its own error, not a float32 retry",
     lambda: compare(_float32_only, VP, reference=RING, solvers=["ddim"], budgets=[4], n=20, progress=False,
                     metrics=["path_error"]),
     TypeError, "this score takes float32 states, got torch.float64"),
    ("convergence_order in an integer dtype",
     lambda: convergence_order(RING.score_fn(VP), VP, "ddim", steps=[4, 8, 16], kind="ode", n=10, dtype=torch.int32),
     TypeError, "dtype must be a real floating-point torch dtype"),
    ("train(allow_changes=...) naming a setting that cannot change",
     lambda: train(_model32(), RING.sample(100, seed=0, dtype=torch.float32), steps=1, allow_changes=["lr"],
                   progress=False),
     ValueError, "allow_changes may name only ('steps',)"),
    ("set_memory_limit of a negative size", lambda: ds.set_memory_limit(-1), ValueError, "nbytes must be a positive"),
]  # fmt: skip


@pytest.fixture
def four_gib():
    ds.set_memory_limit("4GiB")
    yield
    ds.set_memory_limit(None)


@pytest.mark.parametrize("what, call, exc, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_with_a_message_that_names_it(what, call, exc, words):
    with pytest.raises(exc, match=words.replace("(", r"\(").replace(")", r"\)")):
        call()


@pytest.mark.parametrize("what, call, words", MEMORY_CASES, ids=[c[0] for c in MEMORY_CASES])
def test_unbounded_work_is_refused_before_allocating(what, call, words, four_gib):
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(MemoryBudgetError, match=words.replace("(", r"\(").replace(")", r"\)")) as info:
        call()
    assert "above the memory limit of 4.0 GiB (set by diffsolve.set_memory_limit)" in str(info.value)
    # refused before allocating: the peak resident size grew by less than 200 MiB (ru_maxrss is in KiB)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024


@pytest.mark.parametrize(
    "budget", [{"solver": "rk4", "steps": 1000}, {"solver": "dopri5", "rtol": 1e-6, "atol": 1e-6}]
)
def test_a_likelihoods_autograd_graph_is_stopped_at_the_limit_while_it_grows(budget):
    import resource

    # 1000 rk4 steps on 1024 points pass the check made before the solve (at least 2 states per
    # evaluation: 98 MB), but the graph they build does not fit in 100 MiB; an adaptive solve's
    # steps are not known before it runs at all. Both are stopped while the graph grows.
    ds.set_memory_limit("100MiB")
    try:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with pytest.raises(
            MemoryBudgetError,
            match=r"the autograd graph kept for the backward pass reached 10\d\.\d MiB, above the memory limit of 100\.0 MiB",
        ):
            ds.log_likelihood(
                RING.score_fn(VP), VP, _with_grad(1024 if "steps" in budget else 4096), **budget
            )
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KiB
        if "steps" in budget:  # the same call without gradients, or with the adjoint, keeps no graph
            ds.log_likelihood(RING.score_fn(VP), VP, _with_grad(256).detach(), **budget)
            x = _with_grad(256)
            ds.log_likelihood(RING.score_fn(VP), VP, x, adjoint=True, **budget).log_prob.sum().backward()
            assert x.grad is not None and bool(torch.isfinite(x.grad).all())
    finally:
        ds.set_memory_limit(None)


def test_the_memory_limit_comes_from_the_call_then_the_environment_then_the_machine(monkeypatch):
    from diffsolve.memory import DEFAULT_FRACTION, memory_limit

    monkeypatch.setenv("DIFFSOLVE_MEMORY_LIMIT", "500MB")
    assert memory_limit() == (500e6, "DIFFSOLVE_MEMORY_LIMIT=500MB")
    ds.set_memory_limit(2**20)
    try:
        assert memory_limit()[0] == 2**20
        # 1 MiB over 2 values x 4 bytes x 8 working states per point
        # (2^20 - 30000 x 2 values x 4 bytes x 2 kept states) / (2 x 4 x 8 working states) = 8884
        with pytest.raises(MemoryBudgetError, match="pass batch_size=8,884 or less"):
            ds.sample(RING.score_fn(VP), VP, 30000, solver="ddim", steps=2)
    finally:
        ds.set_memory_limit(None)
    monkeypatch.setenv("DIFFSOLVE_MEMORY_LIMIT", "none")
    assert memory_limit()[0] == math.inf
    monkeypatch.setenv("DIFFSOLVE_MEMORY_LIMIT", "lots")
    with pytest.raises(ValueError, match="DIFFSOLVE_MEMORY_LIMIT must be a number of bytes"):
        memory_limit()
    monkeypatch.delenv("DIFFSOLVE_MEMORY_LIMIT")
    limit, source = memory_limit()
    assert 0 < limit < math.inf and source.startswith(f"{DEFAULT_FRACTION:g} of the ")
    # the default leaves ordinary work alone: 10^5 ring2d samples
    ds.sample(RING.score_fn(VP), VP, 10**5, solver="ddim", steps=2, seed=0)


def test_numpy_integers_are_integers():
    # valid input that used to be refused: n and event_shape as numpy integers
    score = RING.score_fn(VP)
    a = ds.sample(score, VP, np.int64(8), solver="ddim", steps=3, seed=0)
    b = ds.sample(score, VP, 8, solver="ddim", steps=3, seed=0)
    assert torch.equal(a.samples, b.samples)
    out = ds.sample(lambda x, t: -x, VP, 4, event_shape=(2, np.int64(3)), solver="ddim", steps=3, seed=0)
    assert out.samples.shape == (4, 2, 3)


def test_the_step_limit_is_generous_and_stated():
    assert MAX_STEPS == 10**6
    # the limit itself is a valid budget: checked before anything is allocated
    steps, _, _ = ds.get_solver("ddim").check_budget(MAX_STEPS, None, None)
    assert steps == MAX_STEPS


def test_dequantize_refuses_nan_data():
    from diffsolve.datasets import dequantize

    with pytest.raises(ValueError, match="x must be finite"):
        dequantize(torch.tensor([[float("nan"), 1.0]]))


def test_cli_device_errors_name_the_devices_this_machine_has(capsys, tmp_path):
    from diffsolve.cli import main

    out = str(tmp_path / "s.npy")
    assert main(["sample", "--device", "tpu9", "--n", "4", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "--device 'tpu9' is not a torch device; this machine has cpu" in err and "Traceback" not in err
    if not torch.cuda.is_available():
        assert main(["sample", "--device", "cuda", "--n", "4", "--out", out]) == 2
        assert "--device 'cuda' is not on this machine; it has cpu" in capsys.readouterr().err


class _ExactEps(torch.nn.Module):
    """The ring's exact noise prediction as a float32 network (one unused parameter sets its dtype)."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, t):
        return -VP.marginal(t)[1][:, None] * RING.score_t(x, t, VP)


def test_convergence_order_runs_a_float32_score_model_in_float32():
    # It used to fail with "mat1 and mat2 must have the same dtype". DDIM is first order: the float32
    # model's measured order must match the float64 exact score's (~1.07 on these paths, measured),
    # within the spread of two independent prior draws (float32 and float64 randn streams differ).
    model = ds.ScoreModel(_ExactEps(), VP, "eps")
    r32 = convergence_order(model, VP, "ddim", steps=[8, 16, 32, 64], kind="ode", n=200, event_shape=(2,))
    r64 = convergence_order(RING.score_fn(VP), VP, "ddim", steps=[8, 16, 32, 64], kind="ode", n=200)
    assert r32.settings["dtype"] == "float32" and r64.settings["dtype"] == "float64"
    assert abs(r32.order - 1.0) < 0.15 and abs(r32.order - r64.order) < 0.05


def _saved(tmp_path):
    path = tmp_path / "ck"
    checkpoint.save(path, _model32(), metadata={"dataset": "ring2d"})
    return path


def _rewrite(path, edit_config=None, edit_tensors=None):
    """Rewrite a checkpoint's safetensors file with its configuration or tensors edited."""
    import json

    from safetensors.torch import save as st_save

    config, tensors = checkpoint.read_config(path)
    if edit_config:
        edit_config(config)
    if edit_tensors:
        edit_tensors(tensors)
    (path / checkpoint.WEIGHTS).write_bytes(st_save(tensors, metadata={"diffsolve": json.dumps(config)}))


FILE_CASES = [
    ("a configuration without 'architecture'",
     lambda p: _rewrite(p, edit_config=lambda c: c.pop("architecture")), checkpoint.CheckpointError,
     "its configuration has no 'architecture' entry"),
    ("an 'sde' entry without params",
     lambda p: _rewrite(p, edit_config=lambda c: c["sde"].pop("params")), checkpoint.CheckpointError,
     "its 'sde' entry must hold 'name', 'params'"),
    ("an unknown parameterisation",
     lambda p: _rewrite(p, edit_config=lambda c: c.update(parameterization="flow")), checkpoint.CheckpointError,
     "records a model diffsolve cannot build"),
    ("weights whose dtype was changed to int32",
     lambda p: _rewrite(p, edit_tensors=lambda t: t.update({k: v.to(torch.int32) for k, v in t.items()})),
     checkpoint.CheckpointError, "holds tensors of the wrong dtype: "),
]  # fmt: skip


@pytest.mark.parametrize("what, damage, exc, words", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_a_damaged_checkpoint_is_refused_naming_what_is_wrong(tmp_path, what, damage, exc, words):
    path = _saved(tmp_path)
    damage(path)
    with pytest.raises(exc, match=words.replace("(", r"\(").replace(")", r"\)")):
        checkpoint.load(path)


CLI_CASES = [
    # (what, argv with {tmp} for the temporary directory, exit status, words in stderr)
    ("sample --out under a regular file", ["sample", "--n", "4", "--out", "{tmp}/file/s.npy"], 2,
     "--out '{tmp}/file/s.npy': '{tmp}/file' is a file, not a directory"),
    ("sample --out naming a directory", ["sample", "--n", "4", "--out", "{tmp}"], 2, "is a directory; name a file"),
    ("compare --out under a regular file", ["compare", "--n", "50", "--solvers", "ddim", "--budgets", "2",
                                            "--out", "{tmp}/file/out"], 2, "'{tmp}/file' is a file"),
    ("train --out is a regular file", ["train", "--dataset", "moons", "--steps", "1", "--out", "{tmp}/file"], 2,
     "--out '{tmp}/file' is a file, not a directory"),
    ("train --resume with nothing to resume",
     ["train", "--dataset", "moons", "--steps", "1", "--out", "{tmp}/none", "--resume"], 2,
     "--resume: '{tmp}/none' holds no training run (train_state.safetensors is missing)"),
    ("sample --n 10^9 beyond the memory limit", ["sample", "--n", "1000000000", "--out", "{tmp}/s.npy"], 2,
     "needs about 193.7 GiB (1,000,000,000 points at a time x 2 values x 4 bytes x 24 working states"),
    ("likelihood --model without a configuration entry", ["likelihood", "--model", "{tmp}/bad", "--n", "4"], 2,
     "its configuration has no 'architecture' entry"),
    ("convergence --model of a damaged checkpoint",
     ["convergence", "--model", "{tmp}/bad", "--solver", "ddim", "--kind", "ode", "--steps", "4,8,16"], 2,
     "its configuration has no 'architecture' entry"),
    ("a solve that goes non-finite exits 1 (weights that overflow float32)",
     ["sample", "--model", "{tmp}/huge", "--n", "4", "--solver", "ddim", "--steps", "2", "--out", "{tmp}/s.npy"], 1,
     "the solve failed: "),
]  # fmt: skip


@pytest.mark.parametrize("what, argv, status, words", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_errors_are_one_line_with_the_right_status(tmp_path, capsys, what, argv, status, words, four_gib):
    from diffsolve.cli import main

    (tmp_path / "file").write_text("a regular file")
    bad = _saved(tmp_path).rename(tmp_path / "bad")
    _rewrite(bad, edit_config=lambda c: c.pop("architecture"))
    huge = _saved(tmp_path).rename(tmp_path / "huge")
    _rewrite(huge, edit_tensors=lambda t: t.update({k: v * 1e30 for k, v in t.items()}))
    tmp = str(tmp_path)
    assert main([a.replace("{tmp}", tmp) for a in argv]) == status
    err = capsys.readouterr().err
    assert err.startswith(f"diffsolve {argv[0]}: error: ") and "Traceback" not in err
    assert words.replace("{tmp}", tmp) in err, err


def test_cli_convergence_runs_a_float32_checkpoint(tmp_path, capsys):
    # `diffsolve convergence --model DIR` used to crash on the float32 network; its --device was ignored.
    from diffsolve.cli import main

    path = _saved(tmp_path)
    argv = ["convergence", "--model", str(path), "--solver", "ddim", "--kind", "ode", "--steps", "8,16,32",
            "--n", "50", "--out", str(tmp_path / "out"), "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    assert "ddim" in (tmp_path / "out" / "convergence.md").read_text()


# --- the matrix: every public entry point x argument x bad value of its kind (tests/_matrix.py) ---

MATRIX = probes()


@pytest.mark.parametrize(
    "entry, argument, label, call", MATRIX, ids=[f"{e}-{a}-{lbl}" for e, a, lbl, _ in MATRIX]
)
def test_matrix_every_bad_argument_is_refused_by_name(entry, argument, label, call, four_gib):
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    names = ALIASES.get(argument, (argument,))
    assert any(name in str(info.value) for name in names), (entry, argument, label, str(info.value))


CLI_MATRIX = cli_probes()


@pytest.mark.parametrize(
    "command, option, label, argv", CLI_MATRIX, ids=[f"{c}{o}-{lbl}" for c, o, lbl, _ in CLI_MATRIX]
)
def test_cli_matrix_every_bad_option_is_a_usage_error(
    tmp_path, capsys, command, option, label, argv, four_gib
):
    from diffsolve.cli import main

    (tmp_path / "file").write_text("a regular file")
    try:
        status = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    except SystemExit as exit_:  # argparse's own usage errors
        status = exit_.code
    err = capsys.readouterr().err
    assert status == 2, (argv, err)
    assert f"diffsolve {command}: error: " in err and "Traceback" not in err, err
    assert option.lstrip("-").split("-")[0] in err or option in err, err


def _rewrite_state(directory, edit_header=None, edit_tensors=None):
    """Rewrite a training state the library wrote, with its header or tensors edited (a stranger's file)."""
    import json

    from safetensors.torch import save as st_save

    from diffsolve.training import TRAIN_STATE

    header, tensors = checkpoint.read_safetensors(directory / TRAIN_STATE)
    if edit_header:
        edit_header(header)
    if edit_tensors:
        edit_tensors(tensors)
    (directory / TRAIN_STATE).write_bytes(st_save(tensors, metadata={"diffsolve": json.dumps(header)}))


def _first_weight(tensors, prefix="model."):
    return next(k for k in tensors if k.startswith(prefix))


STATE_CASES = [
    # Issue: one tensor changed to int32 resumed with weights of +-1.1e9; step = 1e9 returned "finished".
    ("a weight changed to int32",
     lambda t: t.update({(k := _first_weight(t)): t[k].to(torch.int32)}), None, "is torch.int32"),
    ("an EMA weight of another shape", lambda t: t.update({(k := _first_weight(t, "ema.")): t[k][:1]}), None,
     "the model's is torch.float32"),
    ("a missing weight", lambda t: t.pop(_first_weight(t)), None, "is missing"),
    ("a step counter of 10^9", None, lambda h: h.update(step=10**9), "its step counter is 1000000000"),
    ("a negative step counter", None, lambda h: h.update(step=-1), "its step counter is -1"),
    ("a float step counter", None, lambda h: h.update(step=2.5), "its step counter is 2.5"),
    ("losses that do not match the steps", lambda t: t.update(losses=t["losses"][:1]), None,
     "one finite loss for each of its 3 steps"),
    ("a non-finite loss", lambda t: t.update(losses=torch.full_like(t["losses"], float("nan"))), None,
     "one finite loss"),
    ("a generator state that is not bytes", lambda t: t.update(rng=t["rng"].to(torch.int64)), None,
     "random generator state"),
]  # fmt: skip


@pytest.mark.parametrize("what, tensors, header, words", STATE_CASES, ids=[c[0] for c in STATE_CASES])
def test_a_tampered_training_state_is_refused_on_resume(tmp_path, what, tensors, header, words):
    data = ds.GaussianMixture.ring2d().sample(64, seed=0, dtype=torch.float32)

    def model():
        torch.manual_seed(0)
        return ds.ScoreModel(ScoreMLP(2, width=16, depth=1), ds.VPSDE(), "eps")

    kw = dict(batch_size=16, progress=False, checkpoint_dir=tmp_path / "run", seed=0)
    train(model(), data, steps=3, **kw)
    _rewrite_state(tmp_path / "run", edit_header=header, edit_tensors=tensors)
    with pytest.raises(checkpoint.CheckpointError, match=re.escape(words)):
        train(model(), data, steps=6, resume=True, allow_changes=("steps",), **kw)


def _tiny_train(**kw):
    data = torch.rand(16, 2)
    model = ds.ScoreModel(ScoreMLP(2, width=8, depth=1), ds.VPSDE(), "eps")
    return train(model, data, steps=1, batch_size=4, progress=False, **kw)


COERCION_CASES = [
    # Issue: values coerced instead of refused (one conversion policy: integers are integers, booleans are
    # booleans, numbers are not strings, seeds lie in [0, 2^63)).
    ("dequantize bins True", lambda: _tiny_train(dequantize=(True, -1, 1)), TypeError,
     "dequantize's bins must be an integer, got True"),
    ("dequantize bins 256.7", lambda: _tiny_train(dequantize=(256.7, -1, 1)), TypeError, "got 256.7"),
    ("dequantize low '-1'", lambda: _tiny_train(dequantize=(256, "-1", 1)), TypeError, "dequantize's low must be a number"),
    ("train overwrite=1", lambda: _tiny_train(overwrite=1), TypeError, "overwrite must be True or False"),
    ("brownian_motion seed=1.5", lambda: ds.adapters.brownian_motion(torch.zeros(2, 2), 1.5, s_end=1.0), ValueError,
     "seed must be a non-negative integer below 2^63, got 1.5"),
    ("brownian_motion seed=-1", lambda: ds.adapters.brownian_motion(torch.zeros(2, 2), -1, s_end=1.0), ValueError,
     "got -1"),
    ("complex betas", lambda: ds.DiscreteVPSDE(torch.tensor([0.1 + 1j, 0.2])), TypeError, "betas must be real numbers"),
    ("time_of(-5)", lambda: ds.DiscreteVPSDE().time_of(-5), ValueError, "n must lie in [0, N - 1] = [0, 999], got -5.0"),
]  # fmt: skip


@pytest.mark.parametrize("what, call, exc, words", COERCION_CASES, ids=[c[0] for c in COERCION_CASES])
def test_values_are_refused_not_coerced(what, call, exc, words):
    with pytest.raises(exc, match=re.escape(words)):
        call()


def _nan_score(x, t):
    return torch.full_like(x, math.nan)


_nan_score.event_shape = (2,)

JUDGEMENT_CASES = [
    # Issue: the judgement calls, settled. Each is refused with the reason, where it would give a wrong answer.
    ("ddim_eta, eta = 10 (a step would be clamped)",
     lambda: ds.sample(RING.score_fn(VP), VP, 10, solver="ddim_eta", steps=20, eta=10, seed=0), ValueError,
     "eta must be at most 1.168 for ddim_eta on this grid"),
    ("euler_ancestral, eta = 2", lambda: ds.sample(RING.score_fn(VP), VP, 10, solver="euler_ancestral", steps=20,
     eta=2, seed=0), ValueError, "eta must be at most 1.108 for euler_ancestral"),
    ("CosineVPSDE(s=1e16)", lambda: ds.CosineVPSDE(s=1e16), ValueError,
     "CosineVPSDE(s=1e+16, T=0.9946) gives non-finite marginals (alpha_t, sigma_t) on [0, T] in torch.float32"),
    ("a NaN score in a likelihood", lambda: ds.log_likelihood(_nan_score, VP, RING.sample(10, seed=0, dtype=torch.float32)),
     ds.NonFiniteError, "the score s(x, t) became non-finite (NaN or Inf) at t = 1e-05 (solver 'ode:dopri5')"),
]  # fmt: skip


@pytest.mark.parametrize("what, call, exc, words", JUDGEMENT_CASES, ids=[c[0] for c in JUDGEMENT_CASES])
def test_judgement_calls_are_settled(what, call, exc, words):
    with pytest.raises(exc, match=re.escape(words)):
        call()


def test_eta_a_little_above_one_is_still_a_sampler_of_the_same_marginals():
    # 1.05 is below both bounds: no step is clamped, and the samples pass the same check as eta = 1
    for solver in ("ddim_eta", "euler_ancestral"):
        x = ds.sample(
            RING.score_fn(VP), VP, 4000, solver=solver, steps=200, eta=1.05, seed=0
        ).samples.double()
        assert abs(x.square().sum(1).sqrt().mean() - 4.0) < 0.05  # ring2d: radius 4


@pytest.mark.parametrize(
    "make, alpha_T",
    [(lambda: ds.CosineVPSDE(T=1e-6), "1"), (lambda: ds.DiscreteVPSDE(torch.full((1000,), 1e-4)), "0.951"),
     (lambda: ds.VPSDE(0.1, 1.0), "0.76")],
)  # fmt: skip
def test_a_prior_far_from_the_marginal_at_T_is_warned_of(make, alpha_T):
    with pytest.warns(UserWarning, match=rf"keeps alpha_T = {alpha_T} of the data .* prior N\(0, I\) is far"):
        make()


def test_numpy_numbers_are_numbers():
    ds.set_memory_limit(np.int64(2**33))
    try:
        assert ds.memory.memory_limit()[0] == 2**33
    finally:
        ds.set_memory_limit(None)
    res = _tiny_train(warmup_steps=0, lr=np.float32(1e-3))
    res2 = train(ds.ScoreModel(ScoreMLP(2, width=8, depth=1), VP, "eps"), torch.rand(16, 2), steps=np.int64(3),
                 batch_size=np.int64(4), warmup_steps=np.int64(1), progress=False)  # fmt: skip
    assert res2.settings["steps"] == 3 and type(res2.settings["warmup_steps"]) is int
    assert res is not None
