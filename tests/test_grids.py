"""Time grids as a first-class choice: explicit tensors, every kind on every grid-based solver, and
`analysis.optimize_grid`, judged against a float64 reference on draws it never saw."""

import pytest
import torch

import diffsolve as ds
from diffsolve import metrics
from diffsolve.analysis import optimize_grid
from diffsolve.compare import compare
from diffsolve.comparison import Comparison
from diffsolve.samplers.grids import time_grid

EPS = 1e-3


@pytest.fixture(scope="module")
def held_out(problem):
    """2000 fresh prior draws in float64 and their float64 dopri5 solve at 1e-9."""
    _, sde, score = problem
    x_T = sde.prior_sample((2000, 2), generator=torch.Generator().manual_seed(77), dtype=torch.float64)
    return x_T, ds.sample(score, sde, x_T=x_T, solver="ode:dopri5", rtol=1e-9, atol=1e-9, eps=EPS).samples


@pytest.mark.parametrize("solver", ["ipndm", "unipc", "ode:rk4", "sde:euler", "euler_ancestral"])
def test_an_explicit_grid_is_the_grid_of_its_kind(problem, solver):
    _, sde, score = problem
    kind = "logsnr"
    grid = time_grid(sde, 8, EPS, kind)
    a = ds.sample(score, sde, 64, event_shape=(2,), solver=solver, steps=8, time_grid=kind, seed=0)
    b = ds.sample(score, sde, x_T=a.x_T, solver=solver, time_grid=grid, seed=0)
    assert torch.equal(a.samples, b.samples) and b.nfe == a.nfe and b.settings["time_grid"] == "explicit"


def test_bad_explicit_grids_are_refused(problem):
    _, sde, score = problem
    good = time_grid(sde, 4, EPS, "uniform")
    with pytest.raises(ValueError, match="time_grid must be finite and decreasing"):
        ds.sample(score, sde, 8, event_shape=(2,), solver="ipndm", time_grid=good.flip(0))
    with pytest.raises(
        ValueError, match=r"time_grid must end at eps = 0.01, got 0.001 \(pass eps=time_grid\[-1\]\)"
    ):
        ds.sample(score, sde, 8, event_shape=(2,), solver="ipndm", time_grid=good, eps=1e-2)
    # a grid may start below T (img2img), never above it
    with pytest.raises(ValueError, match=r"time_grid must decrease within \[0, T = 1.0\], got 1.5 to 0.001"):
        ds.sample(
            score,
            sde,
            8,
            event_shape=(2,),
            solver="ipndm",
            time_grid=torch.cat([torch.tensor([1.5]), good[1:]]),
        )
    with pytest.raises(ValueError, match="steps = 5 does not match the time_grid's 4 intervals"):
        ds.sample(score, sde, 8, event_shape=(2,), solver="ipndm", time_grid=good, steps=5)
    with pytest.raises(ValueError, match="explicit time_grid applies to"):
        ds.sample(score, sde, 8, event_shape=(2,), solver="dpm_solver_fast", time_grid=good)
    with pytest.raises(ValueError, match="1-D float tensor"):
        ds.sample(score, sde, 8, event_shape=(2,), solver="ipndm", time_grid=torch.tensor([1, 0]))


def test_every_grid_kind_converges_for_a_fixed_step_ode_solver(problem, held_out):
    # rk4 is fourth order on any smooth grid: at 64 steps every kind is within 1e-3 of the reference.
    _, sde, score = problem
    x_T, ref = held_out
    for kind in ("uniform", "logsnr", "karras", "quadratic"):
        out = ds.sample(score, sde, x_T=x_T, solver="ode:rk4", steps=64, time_grid=kind, eps=EPS)
        assert metrics.path_error(out.samples, ref) < 1e-3, kind


def test_optimised_grid_beats_the_default_on_draws_it_never_saw(problem, held_out):
    _, sde, score = problem
    x_T, ref = held_out
    res = optimize_grid(score, sde, "ipndm", 6, n=256, eps=EPS)
    g = res.grid
    assert g.dtype == torch.float64 and g.shape == (7,) and float(g[0]) == sde.T and float(g[-1]) == EPS
    assert bool((g[1:] < g[:-1]).all()) and res.error <= res.initial_error and res.evaluations > 6
    default = ds.sample(score, sde, x_T=x_T, solver="ipndm", steps=6, eps=EPS).samples
    tuned = ds.sample(score, sde, x_T=x_T, solver="ipndm", time_grid=g, eps=EPS).samples
    # Measured on these held-out draws: 0.110 -> about 0.06 (pilot 256 draws, seed 1_000_003).
    assert metrics.path_error(tuned, ref) < 0.75 * metrics.path_error(default, ref)


def test_optimize_grid_refuses_solvers_without_a_grid_or_with_noise(problem):
    _, sde, score = problem
    for name in ("sde:euler", "ode:dopri5", "dpm_solver_fast", "sde:milstein"):
        with pytest.raises(ValueError, match="deterministic fixed-step solver"):
            optimize_grid(score, sde, name, 5, n=16)


def test_compare_runs_a_given_grid(problem):
    gm, sde, score = problem
    grid = time_grid(sde, 5, EPS, "karras")
    table = compare(score, sde, reference=gm, solvers=["ipndm"], budgets=[5], n=300, seeds=[0], null_pairs=2,
                    two_sample_n=300, progress=False, grids={"ipndm": {5: grid}})  # fmt: skip
    # compare(seeds=[0]) starts from the x_T that sample(seed=0) draws (one keyed prior for both)
    direct = ds.sample(
        score, sde, 300, solver="ipndm", time_grid=grid, eps=EPS, seed=0, dtype=torch.float32
    ).samples
    assert torch.equal(table.samples[("ipndm", 5)], direct)


def _row(solver, budget, gap):
    return {"solver": solver, "budget": budget, "budget_kind": "steps", "seed": 0, "nfe": budget,
            "log_prob_gap": gap, "log_prob_gap_se": 0.01, "path_error": 0.5}  # fmt: skip


def test_nfe_needed_ignores_a_lucky_pass_below_a_failure():
    # passes at 5 (gap 0), fails at 8 (gap 0.3), passes from 10 on: needs 10, not 5
    rows = [_row("s", 5, 0.0), _row("s", 8, 0.3), _row("s", 10, 0.01), _row("s", 12, 0.0)]
    table = Comparison(rows=rows, null={}, settings={"metrics": ["log_prob_gap", "path_error"]})
    assert table.nfe_needed() == [{"solver": "s", "nfe_indistinguishable": 10, "nfe_path_error": None}]


def test_an_explicit_grid_is_neither_modified_nor_forgotten(problem):
    _, sde, score = problem
    grid = time_grid(sde, 4, EPS, "karras")
    grid[-1] = EPS * (1 + 1e-12)  # within the tolerance: snapped to eps inside sample, not here
    before = grid.clone()
    res = ds.sample(score, sde, 8, event_shape=(2,), solver="deis", time_grid=grid)
    assert torch.equal(grid, before)
    assert res.settings["time_grid"] == "explicit" and res.settings["time_grid_times"][-1] == EPS


@pytest.mark.parametrize("options, words", [({"variant": "bh9"}, "variant must be one of"),
                                            ({"order": 7}, "order must be 1, 2 or 3"),
                                            ({"prediction": "eps"}, "prediction must be one of")])  # fmt: skip
def test_optimize_grid_refuses_a_bad_option_instead_of_returning_an_infinite_error(options, words):
    # Issue: optimize_grid(..., "unipc", 4, variant="bh9") returned error=inf and the starting grid.
    gm, sde = ds.GaussianMixture.ring2d(), ds.VPSDE()
    with pytest.raises(ValueError, match=words):
        optimize_grid(gm.score_fn(sde), sde, "unipc", 4, n=50, sweeps=1, **options)
