"""Bad input gets a clear error naming the argument (issue 14's campaign, first rows): each row is a
call that used to return a wrong or meaningless answer, or to allocate without bound."""

import math

import numpy as np
import pytest
import torch

import diffsolve as ds
from diffsolve import checkpoint
from diffsolve.nn import ScoreMLP
from diffsolve.samplers.registry import MAX_STEPS

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
    ("a checkpoint saved to an empty path",
     lambda: checkpoint.save("", ds.ScoreModel(ScoreMLP(2), VP, "eps")), ValueError, "path must name a checkpoint"),
]  # fmt: skip


@pytest.mark.parametrize("what, call, exc, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_with_a_message_that_names_it(what, call, exc, words):
    with pytest.raises(exc, match=words.replace("(", r"\(").replace(")", r"\)")):
        call()


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
