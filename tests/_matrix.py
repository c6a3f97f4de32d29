"""The bad-input matrix: every public entry point x every argument x the bad values of its kind.

Each probe is `(entry, argument, label, call)`: calling it must raise a `ValueError` or `TypeError`
(or a subclass: `CheckpointError`, `MemoryBudgetError`) whose message names the argument. Used by
tests/test_bad_input.py and counted in docs/reliability.md."""

from __future__ import annotations

import math

import torch

import diffsolve as ds
from diffsolve.analysis import convergence_order, jacobian_spectrum, optimize_grid, step_diagnostics
from diffsolve.compare import compare
from diffsolve.datasets import dequantize
from diffsolve.nn import ScoreMLP
from diffsolve.training import train

VP = ds.VPSDE()
RING = ds.GaussianMixture.ring2d()
SCORE = RING.score_fn(VP)
X = RING.sample(4, seed=0)
DATA = RING.sample(64, seed=0, dtype=torch.float32)

# Bad values by kind; each (label, value).
COUNT = [
    ("zero", 0),
    ("negative", -3),
    ("a float", 2.5),
    ("a bool", True),
    ("a string", "8"),
    ("NaN", math.nan),
]
HUGE = [("10^12", 10**12)]
POSITIVE = [("zero", 0.0), ("negative", -1e-3), ("NaN", math.nan), ("a string", "0.1"), ("a bool", True)]
FRACTION = POSITIVE + [("one or more", 1.5)]
NAME = [("an unknown name", "no-such-thing"), ("a number", 3)]
SWITCH = [("an integer", 1), ("a string", "yes"), ("None", None)]
SEED = [("negative", -1), ("a float", 1.7), ("a bool", True), ("2^64", 2**64), ("a string", "0")]
BATCH = [
    ("one dimension", torch.zeros(4)), ("an integer dtype", torch.zeros(4, 2, dtype=torch.int64)),
    ("complex", torch.zeros(4, 2, dtype=torch.complex64)), ("NaN", torch.full((4, 2), math.nan)),
    ("Inf", torch.full((4, 2), math.inf)), ("empty", torch.zeros(0, 2)), ("a list", [[0.0, 0.0]]),
    ("the wrong event shape", torch.zeros(4, 3)),
]  # fmt: skip
TIME = [
    ("zero", 0.0),
    ("T", 1.0),
    ("above T", 2.0),
    ("negative", -0.1),
    ("NaN", math.nan),
    ("a string", "0.1"),
]


def _model():
    torch.manual_seed(0)
    return ds.ScoreModel(ScoreMLP(2, width=8, depth=1), VP, "eps")


# entry -> (call taking **overrides, {argument: bad values})
ENTRIES = {
    "sample": (
        lambda **kw: ds.sample(**{"score": SCORE, "sde": VP, "n": 4, "solver": "ddim", "steps": 3, "seed": 0, **kw}),
        {"n": COUNT + HUGE, "steps": COUNT + HUGE, "eps": TIME, "seed": SEED, "solver": NAME, "x_T": BATCH,
         "denoise": SWITCH, "return_trajectory": SWITCH, "progress": SWITCH, "time_grid": NAME,
         "event_shape": [("negative", (-2,)), ("a string", "2"), ("the wrong shape", (3,))],
         "dtype": [("an integer dtype", torch.int32), ("a string", "float32")],
         "batch_size": COUNT, "gather": NAME},
    ),
    "sample (adaptive)": (
        lambda **kw: ds.sample(**{"score": SCORE, "sde": VP, "n": 4, "solver": "ode:dopri5", "seed": 0, **kw}),
        {"rtol": FRACTION, "atol": POSITIVE},
    ),
    "log_likelihood": (
        lambda **kw: ds.log_likelihood(**{"score": SCORE, "sde": VP, "x": X, "divergence": "hutchinson", **kw}),
        {"x": BATCH, "divergence": NAME, "probes": COUNT + HUGE, "probe": NAME, "solver": NAME, "rtol": FRACTION,
         "atol": POSITIVE, "eps": TIME, "seed": SEED, "adjoint": SWITCH,
         "prior_log_prob": [("not callable", 3.0), ("the wrong shape", lambda z: z), ("a scalar", lambda z: z.sum())],
         "batch_size": COUNT, "gather": NAME, "progress": SWITCH},
    ),
    "log_likelihood (fixed step)": (
        lambda **kw: ds.log_likelihood(**{"score": SCORE, "sde": VP, "x": X, "solver": "rk4", "steps": 4, **kw}),
        {"steps": COUNT + HUGE},
    ),
    "bits_per_dim": (
        lambda **kw: ds.bits_per_dim(**{"log_prob": torch.zeros(3), "event_size": 2, **kw}),
        {"event_size": COUNT, "bins": COUNT, "scale": POSITIVE,
         "log_prob": [("NaN", torch.tensor([math.nan])), ("an integer dtype", torch.tensor([1])), ("a list", [0.0])]},
    ),
    "compare": (
        lambda **kw: compare(**{"score": SCORE, "sde": VP, "reference": RING, "solvers": ["ddim"], "budgets": [3],
                                "n": 50, "progress": False, **kw}),
        {"n": COUNT + HUGE, "seeds": [("a float", [1.7]), ("negative", [-1]), ("repeated", [0, 0]), ("empty", [])],
         "solvers": [("an unknown name", ["no-such-thing"]), ("empty", [])], "metrics": [("unknown", ["nope"])],
         "budgets": [("zero", [0]), ("a float for a fixed-step solver", [2.5]), ("empty", [])],
         "null_pairs": COUNT, "reference_steps": COUNT, "two_sample_n": COUNT, "eps": TIME,
         "reference": [("the wrong event shape", ds.GaussianMixture.random(3, 2)), ("a number", 3.0)],
         "batch_size": COUNT},
    ),
    "convergence_order": (
        lambda **kw: convergence_order(**{"score": SCORE, "sde": VP, "solver": "ddim", "steps": [4, 8, 16],
                                          "kind": "ode", "n": 10, **kw}),
        {"n": COUNT + HUGE, "seed": SEED, "solver": NAME, "kind": NAME, "eps": TIME,
         "steps": [("too few", [4, 8]), ("not increasing", [8, 4, 16]), ("a zero", [0, 4, 8])],
         "bootstrap": COUNT, "dtype": [("an integer dtype", torch.int32)]},
    ),
    "optimize_grid": (
        lambda **kw: optimize_grid(**{"score": SCORE, "sde": VP, "solver": "ipndm", "steps": 4, "n": 16, "sweeps": 1,
                                      **kw}),
        {"steps": COUNT + HUGE, "n": COUNT + HUGE, "eps": TIME, "solver": NAME, "sweeps": COUNT, "seed": SEED},
    ),
    "step_diagnostics": (
        lambda **kw: step_diagnostics(**{"score": SCORE, "sde": VP, "n": 8, **kw}),
        {"n": COUNT + HUGE, "seed": SEED, "eps": TIME, "solver": NAME, "rtol": FRACTION, "atol": POSITIVE},
    ),
    "jacobian_spectrum": (
        lambda **kw: jacobian_spectrum(**{"score": SCORE, "sde": VP, "n": 4, "points": 3, **kw}),
        {"n": COUNT + HUGE, "points": COUNT + HUGE, "seed": SEED, "eps": TIME},
    ),
    "train": (
        lambda **kw: train(**{"model": _model(), "data": DATA, "steps": 1, "progress": False, **kw}),
        {"steps": COUNT, "batch_size": COUNT + HUGE, "lr": POSITIVE, "eps": POSITIVE, "seed": SEED,
         "grad_clip": POSITIVE, "ema_decay": [("one", 1.0), ("negative", -0.1), ("NaN", math.nan)],
         "checkpoint_every": COUNT, "max_seconds": POSITIVE, "lr_schedule": NAME, "weighting": NAME,
         "optimizer": NAME, "warmup_steps": [("negative", -1), ("steps", 1)],
         "data": BATCH[:7], "dequantize": [("two values", (256, 0.0)), ("NaN bounds", (256, math.nan, 1.0))],
         "allow_changes": [("a string", "steps"), ("an unsafe setting", ["lr"])]},
    ),
    "dequantize": (
        lambda **kw: dequantize(**{"x": torch.zeros(4, 2), **kw}),
        {"x": BATCH[1:7], "bins": COUNT, "low": [("NaN", math.nan)], "high": [("below low", -1.0), ("NaN", math.nan)],
         "seed": SEED},
    ),
    "GaussianMixture": (
        lambda **kw: ds.GaussianMixture(**{"weights": [1.0], "means": [[0.0, 0.0]], "stds": 1.0, **kw}),
        {"weights": [("negative", [-1.0]), ("NaN", [math.nan]), ("the wrong shape", [[1.0]])],
         "means": [("NaN", [[math.nan, 0.0]]), ("Inf", [[math.inf, 0.0]]), ("the wrong shape", [0.0, 0.0]),
                   ("complex", torch.zeros(1, 2, dtype=torch.complex64))],
         "stds": [("zero", 0.0), ("negative", -1.0), ("Inf", math.inf), ("the wrong shape", [1.0, 1.0, 1.0])],
         "dtype": [("an integer dtype", torch.int64)]},
    ),
    "VPSDE": (lambda **kw: ds.VPSDE(**{"beta_min": 0.1, "beta_max": 20.0, **kw}),
              {"beta_min": POSITIVE + [("Inf", math.inf)], "beta_max": POSITIVE + [("Inf", math.inf)]}),
    "SubVPSDE": (lambda **kw: ds.SubVPSDE(**{"beta_min": 0.1, "beta_max": 20.0, **kw}),
                 {"beta_min": POSITIVE + [("Inf", math.inf)], "beta_max": POSITIVE + [("Inf", math.inf)]}),
    "VESDE": (lambda **kw: ds.VESDE(**{"sigma_min": 0.01, "sigma_max": 50.0, **kw}),
              {"sigma_min": POSITIVE + [("Inf", math.inf)], "sigma_max": POSITIVE + [("Inf", math.inf)]}),
    "SDE.marginal": (lambda **kw: VP.marginal(**{"t": 0.5, **kw}),
                     {"t": [("negative", -0.1), ("above T", 1.5), ("NaN", math.nan), ("a string", "0.5")]}),
    "SDE.prior_sample": (lambda **kw: VP.prior_sample(**{"shape": (4, 2), **kw}),
                         {"shape": [("negative", (-1, 2)), ("a float", (2.5, 2)), ("a string", "4")]}),
    "checkpoint.save": (lambda **kw: ds.checkpoint.save(**{"path": "/tmp/diffsolve-matrix-ck", "model": _model(), **kw}),
                        {"path": [("empty", "")], "model": [("not a ScoreModel", SCORE)]}),
    "checkpoint.load": (lambda **kw: ds.checkpoint.load(**kw),
                        {"path": [("missing", "/nonexistent/diffsolve"), ("a file", "/etc/hostname")]}),
    "set_memory_limit": (lambda **kw: ds.set_memory_limit(**kw),
                         {"nbytes": [("negative", -1), ("zero", 0), ("a bad unit", "8 parsecs"), ("a bool", True)]}),
}  # fmt: skip

# Words that name the argument in a message, where its plain name would not appear.
ALIASES = {"x_T": ("x_T",), "nbytes": ("nbytes", "DIFFSOLVE_MEMORY_LIMIT"), "path": ("path", "checkpoint")}


def probes():
    """Every (entry, argument, label, call) of the matrix."""
    out = []
    for entry, (call, arguments) in ENTRIES.items():
        for argument, values in arguments.items():
            for label, value in values:
                out.append((entry, argument, label, (lambda c=call, a=argument, v=value: c(**{a: v}))))
    return out


# --- the CLI: every command x option x bad value; each must exit 2 with a one-line message ---

_CLI_COUNT = [("zero", "0"), ("negative", "-2"), ("not a number", "abc")]
_CLI_POSITIVE = [("zero", "0"), ("negative", "-1e-3"), ("not a number", "abc"), ("NaN", "nan")]
_CLI_SEED = [("negative", "-1"), ("a float", "1.5"), ("2^64", str(2**64))]
_CLI_TIME = [("T", "1.0"), ("above T", "2"), ("zero", "0")]
_CLI_NAME = [("an unknown name", "no-such-thing")]
_CLI_FILE = [("under a regular file", "{tmp}/file/x")]
_CLI_DEVICE = [("not a device", "tpu9")]
_CLI_MODEL = [("missing", "{tmp}/missing"), ("a regular file", "{tmp}/file")]

CLI_ENTRIES = {
    "sample": (["sample", "--n", "4", "--steps", "2", "--solver", "ddim", "--out", "{tmp}/s.npy", "--no-progress"],
               {"--n": _CLI_COUNT + [("10^10", str(10**10))], "--steps": _CLI_COUNT, "--eps": _CLI_TIME,
                "--seed": _CLI_SEED, "--solver": _CLI_NAME, "--problem": _CLI_NAME, "--device": _CLI_DEVICE,
                "--model": _CLI_MODEL, "--out": _CLI_FILE, "--option": [("not NAME=VALUE", "snr")],
                "--time-grid": _CLI_NAME, "--batch-size": _CLI_COUNT}),
    "compare": (["compare", "--n", "20", "--solvers", "ddim", "--budgets", "2", "--out", "{tmp}/c", "--no-progress"],
                {"--n": _CLI_COUNT, "--eps": _CLI_TIME, "--seeds": [("negative", "-1"), ("a float", "1.5")],
                 "--solvers": _CLI_NAME, "--budgets": [("zero", "0"), ("not a number", "abc")],
                 "--problem": _CLI_NAME, "--device": _CLI_DEVICE, "--model": _CLI_MODEL, "--out": _CLI_FILE}),
    "likelihood": (["likelihood", "--n", "4"],
                   {"--n": _CLI_COUNT, "--probes": _CLI_COUNT, "--rtol": _CLI_POSITIVE, "--atol": _CLI_POSITIVE,
                    "--eps": _CLI_TIME, "--seed": _CLI_SEED, "--solver": _CLI_NAME, "--problem": _CLI_NAME,
                    "--device": _CLI_DEVICE, "--model": _CLI_MODEL,
                    "--data": [("missing", "{tmp}/missing.npy"), ("not an array", "{tmp}/file")]}),
    "convergence": (["convergence", "--solver", "ddim", "--kind", "ode", "--steps", "4,8,16", "--n", "10",
                     "--out", "{tmp}/v"],
                    {"--n": _CLI_COUNT, "--steps": [("too few", "4,8"), ("not numbers", "a,b,c")],
                     "--eps": _CLI_TIME, "--seed": _CLI_SEED, "--solver": _CLI_NAME, "--problem": _CLI_NAME,
                     "--device": _CLI_DEVICE, "--model": _CLI_MODEL, "--out": _CLI_FILE}),
    "train": (["train", "--dataset", "moons", "--steps", "1", "--width", "8", "--depth", "1", "--n-data", "64",
               "--out", "{tmp}/t", "--no-progress"],
              {"--dataset": _CLI_NAME, "--steps": _CLI_COUNT, "--batch-size": _CLI_COUNT, "--lr": _CLI_POSITIVE,
               "--width": _CLI_COUNT, "--depth": _CLI_COUNT, "--n-data": _CLI_COUNT + [("10^11", str(10**11))],
               "--checkpoint-every": _CLI_COUNT, "--seed": _CLI_SEED, "--out": _CLI_FILE,
               "--sde": _CLI_NAME}),
    "demo": (["demo", "--n", "20", "--steps", "2", "--no-progress"],
             {"--n": _CLI_COUNT, "--steps": _CLI_COUNT, "--tol": _CLI_POSITIVE, "--eps": _CLI_TIME,
              "--seed": _CLI_SEED}),
}  # fmt: skip


def cli_probes():
    """Every (command, option, label, argv) of the CLI matrix; argv has `{tmp}` for a scratch directory."""
    out = []
    for command, (base, options) in CLI_ENTRIES.items():
        for option, values in options.items():
            for label, value in values:
                argv = list(base)
                if option in argv:
                    argv[argv.index(option) + 1] = value
                else:
                    argv += [option, value]
                out.append((command, option, label, argv))
    return out
