"""compare(), the new two-sample metrics, the plots and `diffsolve compare`/`sample`/`likelihood`."""

import json
import math

import numpy as np
import pytest
import torch

import diffsolve as ds
from diffsolve import metrics
from diffsolve.cli import main
from diffsolve.compare import compare

SMALL = {"ddim": [5, 20], "ode:dopri5": [1e-3], "sde:euler": [20]}


@pytest.fixture(scope="module")
def small(problem):
    gm, sde, score = problem
    return compare(
        score, sde, reference=gm, solvers=list(SMALL), budgets=SMALL, n=500, seeds=(0, 1), progress=False,
        reference_steps=256,
    )  # fmt: skip


def test_rows_nfe_and_reproducibility(problem, small):
    gm, sde, score = problem
    assert len(small.rows) == 2 * 4
    by = {(r["solver"], r["budget"], r["seed"]): r for r in small.rows}
    assert by[("ddim", 5, 0)]["nfe"] == 5 and by[("sde:euler", 20, 1)]["nfe"] == 20
    # the table's NFE equals a counter wrapped around the score, here counted from outside
    calls = []

    def counted(x, t):
        calls.append(1)
        return score(x, t)

    again = compare(
        counted, sde, reference=gm, solvers=["ddim"], budgets={"ddim": [5]}, n=500, seeds=(0,),
        metrics=["sliced_w2", "log_prob_gap"], progress=False,
    )  # fmt: skip
    assert again.rows[0]["nfe"] == len(calls) == 5
    # a paired comparison with the same seed is reproducible bit for bit on CPU
    assert again.rows[0]["sliced_w2"] == by[("ddim", 5, 0)]["sliced_w2"]
    assert again.rows[0]["log_prob_gap"] == by[("ddim", 5, 0)]["log_prob_gap"]
    assert torch.equal(again.samples[("ddim", 5)], small.samples[("ddim", 5)])


def test_path_error_falls_with_budget_and_z_scores(small):
    by = {(r["solver"], r["budget"], r["seed"]): r for r in small.rows}
    for seed in (0, 1):
        assert by[("ddim", 20, seed)]["path_error"] < by[("ddim", 5, seed)]["path_error"]
    null = small.null["sliced_w2"]
    r = by[("ddim", 5, 0)]
    assert r["sliced_w2_z"] == pytest.approx((r["sliced_w2"] - null.value) / null.se)


def test_aggregate_and_exports(small, tmp_path):
    agg = {(a["solver"], a["budget"]): a for a in small.aggregate()}
    a = agg[("ddim", 5)]
    vals = [r["path_error"] for r in small.rows if r["solver"] == "ddim" and r["budget"] == 5]
    assert a["seeds"] == 2 and a["path_error"] == pytest.approx(sum(vals) / 2)
    sd = float(torch.tensor(vals, dtype=torch.float64).std())
    assert a["path_error_ci"] == pytest.approx(12.706 * sd / math.sqrt(2))
    small.to_csv(tmp_path / "r.csv")
    small.to_json(tmp_path / "r.json")
    md = small.to_markdown(tmp_path / "r.md")
    lines = (tmp_path / "r.csv").read_text().splitlines()
    assert len(lines) == 1 + len(small.rows) and lines[0].startswith(
        "solver,family,budget_kind,budget,seed,nfe"
    )
    doc = json.loads((tmp_path / "r.json").read_text())
    assert len(doc["rows"]) == len(small.rows) and set(doc["null"]) == {"sliced_w2", "mmd", "energy"}
    assert "| ddim | steps=5 |" in md and "NFE to be indistinguishable" in md
    assert not list(tmp_path.glob(".*tmp"))  # no temporary files left behind


def test_bad_input_before_any_work(problem):
    gm, sde, _ = problem

    def never(x, t):
        raise AssertionError("a solve started")

    kw = {"reference": gm, "n": 100, "progress": False}
    with pytest.raises(ValueError, match="solver must be one of"):
        compare(never, sde, solvers=["ddim", "rk45"], **kw)
    with pytest.raises(ValueError, match="metrics must name metrics from"):
        compare(never, sde, solvers=["ddim"], metrics=["fid"], **kw)
    with pytest.raises(ValueError, match="ode:dopri5 is adaptive: its budgets are tolerances"):
        compare(never, sde, solvers=["ode:dopri5"], budgets={"ode:dopri5": [10]}, **kw)
    with pytest.raises(ValueError, match="ddim is fixed-step: its budgets are step counts"):
        compare(never, sde, solvers=["ddim"], budgets=[1e-3], **kw)
    with pytest.raises(ValueError, match="event shape"):
        compare(gm.score_fn(sde), sde, reference=torch.zeros(50, 3), solvers=["ddim"], n=10, progress=False)
    with pytest.raises(ValueError, match="needs an analytic reference"):
        compare(never, sde, reference=torch.zeros(50, 2), solvers=["ddim"], metrics=["log_prob_gap"], n=10)


def test_held_out_data_reference(problem):
    gm, sde, score = problem
    data = gm.marginal(1e-3, sde).sample(1000, seed=9, dtype=torch.float32)
    res = compare(score, sde, reference=data, solvers=["ddim"], budgets=[50], n=400, progress=False)
    assert set(res.null) == {"sliced_w2", "mmd", "energy"} and "log_prob_gap" not in res.rows[0]
    assert res.rows[0]["energy_z"] < 3  # 50 DDIM steps are close to exact here


def test_mmd_and_energy_against_closed_forms():
    """Gaussians N(0, I) and N(mu, I) in 2-D: both statistics have closed forms.

    Each estimate is averaged over 8 independent pairs of 4000 points; one estimate's spread was
    measured at 0.015 (energy) and 0.0027 (MMD), so the mean of 8 has a standard error of about
    0.0053 and 0.00095: the tolerances are 3 of those.
    """
    n, mu, ell = 4000, torch.tensor([0.7, 0.0], dtype=torch.float64), 1.5
    mmds, energies, mmd_null, energy_null = [], [], [], []
    for seed in range(8):
        g = torch.Generator().manual_seed(seed)
        x, x2, y = (torch.randn(n, 2, generator=g, dtype=torch.float64) for _ in range(3))
        y = y + mu
        mmds.append(metrics.mmd(x, y, bandwidth=ell))
        energies.append(metrics.energy_distance(x, y))
        mmd_null.append(metrics.mmd(x, x2, bandwidth=ell))
        energy_null.append(metrics.energy_distance(x, x2))
    # E exp(-|X - Y|^2 / 2l^2) with X - Y ~ N(m, 2I): (l^2/(l^2+2))^(d/2) exp(-|m|^2 / 2(l^2+2))
    c = ell**2 / (ell**2 + 2)
    want_mmd = 2 * c * (1 - math.exp(-float(mu @ mu) / (2 * (ell**2 + 2))))
    assert sum(mmds) / 8 == pytest.approx(want_mmd, abs=0.003)
    # 2 E|Z + mu| - 2 E|Z| with Z ~ N(0, 2I), by Monte Carlo on 4 million paired draws (SE ~ 2e-4)
    z = torch.randn(
        4 * 10**6, 2, generator=torch.Generator().manual_seed(99), dtype=torch.float64
    ) * math.sqrt(2)
    want_energy = 2 * float((z + mu).norm(dim=1).mean()) - 2 * float(z.norm(dim=1).mean())
    assert sum(energies) / 8 == pytest.approx(want_energy, abs=0.016)
    # the same distribution: both unbiased statistics average to 0
    assert abs(sum(mmd_null) / 8) < 0.003 and abs(sum(energy_null) / 8) < 0.016


def test_plots(small, problem, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from diffsolve import plotting

    fig = plotting.work_precision(small, "path_error", target=1e-2)
    assert fig.axes[0].get_xscale() == "log" and len(fig.axes[0].get_lines()) >= 3
    plotting.save_figure(fig, tmp_path / "wp.png")
    plotting.save_figure(plotting.work_precision(small, "sliced_w2", x="seconds"), tmp_path / "wp2.png")
    plotting.save_figure(plotting.sample_grid(small), tmp_path / "grid.png")
    gm, sde, score = problem
    res = ds.sample(score, sde, 50, event_shape=(2,), solver="ddim", steps=10, return_trajectory=True, seed=0)
    plotting.save_figure(plotting.trajectories(res), tmp_path / "traj.png")
    assert all((tmp_path / f).stat().st_size > 1000 for f in ("wp.png", "wp2.png", "grid.png", "traj.png"))
    with pytest.raises(ValueError, match="metric must be one of"):
        plotting.work_precision(small, "fid")


def test_cli_compare_end_to_end(tmp_path, capsys):
    out = tmp_path / "out"
    code = main([
        "compare", "--solvers", "ddim,ode:dopri5", "--budgets", "5,10,1e-3", "--n", "300", "--out", str(out),
        "--no-progress",
    ])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "| ddim | steps=5 |" in text and "| exact |" in text
    for f in ("results.csv", "results.json", "results.md", "work_precision.png", "samples.png"):
        assert (out / f).stat().st_size > 0, f


@pytest.mark.parametrize(
    "argv, message",
    [
        (["compare", "--solvers", "nope"], "solver must be one of"),
        (["compare", "--solvers", "ode:dopri5", "--budgets", "10"], "no budget in --budgets fits ode:dopri5"),
        (["compare", "--problem", "moons"], "--problem must be one of"),
        (["sample", "--solver", "ddim", "--rtol", "1e-3"], "fixed-step: give steps"),
        (["likelihood", "--model", "/nonexistent"], "does not exist"),
    ],
)
def test_cli_bad_input(argv, message, capsys, tmp_path):
    assert main([*argv, "--no-progress"] if argv[0] == "compare" else argv) == 2
    assert message in capsys.readouterr().err


def test_cli_sample_and_likelihood(tmp_path, capsys):
    path = tmp_path / "s.npy"
    assert main(["sample", "--solver", "dpm_solver3", "--steps", "10", "--n", "500", "--out", str(path),
                 "--no-progress"]) == 0  # fmt: skip
    x = np.load(path)
    assert x.shape == (500, 2)
    assert "mean log p_eps gap" in capsys.readouterr().out
    assert main(["likelihood", "--n", "50", "--divergence", "exact"]) == 0
    out = capsys.readouterr().out
    assert "analytic NLL" in out and "mean |error|" in out


def test_readmes_two_commands_are_what_ci_runs():
    # Issue: the quick start installed the test stack just to run compare; the first command installs
    # the package alone, the second the test stack and the tests.
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for command in (
        "pip install torch==2.13.0 && pip install -e . && diffsolve compare",
        'pip install -e ".[test]" && python -m pytest',
    ):
        assert command in (root / "README.md").read_text()
        assert command in (root / ".ci" / "run").read_text()


@pytest.mark.parametrize("command", ["compare", "sample", "likelihood"])
def test_help_documents_every_option(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    for option in ("--model", "--problem", "--sde", "--device"):
        assert option in text
    # argparse's defaults formatter appends the default to every documented option
    assert text.count("(default:") >= 6


def test_cli_commands_take_a_trained_checkpoint(tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    assert main(["train", "--dataset", "ring2d", "--steps", "20", "--out", str(ckpt), "--width", "32",
                 "--depth", "1", "--no-progress"]) == 0  # fmt: skip
    out = tmp_path / "cmp"
    assert main(["compare", "--model", str(ckpt), "--solvers", "ddim", "--budgets", "5", "--n", "200",
                 "--out", str(out), "--no-progress"]) == 0  # fmt: skip
    assert (out / "results.csv").read_text().count("\n") == 2
    assert main(["sample", "--model", str(ckpt), "--solver", "ddim", "--steps", "5", "--n", "100",
                 "--out", str(tmp_path / "s.npy"), "--no-progress"]) == 0  # fmt: skip
    assert np.load(tmp_path / "s.npy").shape == (100, 2)
    assert main(["likelihood", "--model", str(ckpt), "--n", "20", "--divergence", "exact"]) == 0
    assert "checkpoint" in capsys.readouterr().out
    assert main(["compare", "--model", str(ckpt), "--sde", "ve"]) == 2
    assert "--model carries its own data and SDE" in capsys.readouterr().err
