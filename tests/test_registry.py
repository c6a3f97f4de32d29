"""Every registry claim is tested: NFE per step against an independent counter, and the solver
objects that users register run through sample, compare, convergence_order, the CLI and plugins."""

import sys
import textwrap

import pytest
import torch

import diffsolve as ds
from diffsolve import cli
from diffsolve.analysis import convergence_order
from diffsolve.compare import compare
from diffsolve.samplers import registry

EPS = 1e-3


class Counter:
    """An independent call counter around a score: it knows nothing of the solvers' ledgers."""

    def __init__(self, score):
        self.score, self.calls, self.rows = score, 0, 0
        self.event_shape = score.event_shape

    def __call__(self, x, t):
        self.calls += 1
        self.rows += x.shape[0]
        return self.score(x, t)


@pytest.mark.filterwarnings("ignore:ode.explicit_adams is unstable")
@pytest.mark.parametrize("name", [s.name for s in ds.solvers()])
def test_stated_nfe_per_step_and_rows_match_an_independent_counter(problem, name):
    _, sde, score = problem
    solver = ds.get_solver(name)
    counted = Counter(score)
    budget = {} if solver.adaptive else {"steps": 7}
    if solver.adaptive and solver.family == "ode":
        budget = {"rtol": 1e-4, "atol": 1e-4}
    res = ds.sample(counted, sde, 64, solver=name, seed=0, eps=EPS, **budget)
    assert res.nfe == counted.calls
    # one ledger for every engine: it counts the rows of every call too (fewer than nfe x 64 only
    # for the per-sample solvers)
    assert res.settings["sample_evaluations"] == counted.rows
    stated = solver.nfe(accepted=res.steps_taken, rejected=res.steps_rejected, options=res.settings)
    assert stated == counted.calls, (solver.nfe_text(), res.steps_taken, res.steps_rejected)
    if not solver.adaptive:
        assert res.steps_taken == 7 and res.steps_rejected == 0
    else:
        assert res.steps_taken > 0  # so that the per-step cost is really exercised


def test_option_dependent_cost(problem):
    _, sde, score = problem
    counted = Counter(score)
    ds.sample(counted, sde, 16, solver="pc", steps=5, corrector_steps=3, seed=0)
    assert counted.calls == ds.get_solver("pc").nfe(accepted=5, options={"corrector_steps": 3}) == 20


def test_every_verified_order_has_a_measuring_test():
    # The order tests live in test_analysis.py (CASES, STRATONOVICH_CASES) and
    # test_diffusion_samplers.py (ORDERS, STRONG_ORDERS); a solver may say it is verified only if
    # one of them measures it.
    from test_analysis import CASES, STRATONOVICH_CASES
    from test_diffusion_samplers import ORDERS, STRONG_ORDERS

    measured = {c[0] for c in CASES} | {c[0] for c in STRATONOVICH_CASES} | set(ORDERS) | set(STRONG_ORDERS)
    claimed = {s.name for s in ds.solvers() if s.verified}
    assert claimed <= measured, claimed - measured
    for s in ds.solvers():
        if not s.verified and (s.order or s.strong_order or s.weak_order):
            assert "(unverified)" in s.orders_text()


def heun_step(f, x, t, t_next):
    """Heun's method (explicit trapezoid) on the PF-ODE."""
    h = t_next - t
    d = f(x, t)
    x_e = x + h * d
    return x + h * (d + f(x_e, t_next)) / 2


@pytest.fixture
def my_heun():
    solver = ds.register_solver("my_heun", heun_step, order=2, nfe_per_step=2, budgets=(10, 40))
    yield solver
    ds.unregister_solver("my_heun")


def test_a_registered_one_step_method_is_a_solver_like_the_built_ins(problem, my_heun):
    gm, sde, score = problem
    counted = Counter(score)
    res = ds.sample(counted, sde, 200, solver="my_heun", steps=20, seed=0)
    assert res.nfe == counted.calls == 40 and res.settings["time_grid"] == "uniform"
    # Heun here is exactly torchdiffeq's heun2 on the same uniform grid: two implementations, one answer.
    ref = ds.sample(score, sde, x_T=res.x_T, solver="ode:heun2", steps=20)
    torch.testing.assert_close(res.samples, ref.samples, rtol=1e-5, atol=1e-5)
    assert "my_heun" in {s.name for s in ds.solvers()}
    assert "2 (unverified)" in my_heun.orders_text()


@pytest.mark.slow
def test_a_registered_solver_runs_through_compare_and_convergence_order(problem, my_heun, capsys):
    gm, sde, score = problem
    table = compare(score, sde, reference=gm, solvers=["my_heun", "ddim"], n=500, seeds=[0],
                    null_pairs=3, two_sample_n=500, progress=False)  # fmt: skip
    rows = [r for r in table.rows if r["solver"] == "my_heun"]
    assert [r["budget"] for r in rows] == [10, 40] and [r["nfe"] for r in rows] == [20, 80]
    assert any(r["solver"] == "my_heun" for r in table.nfe_needed())
    res = convergence_order(score, sde, "my_heun", steps=[32, 64, 128, 256], kind="ode", n=300, bootstrap=50)
    assert abs(res.order - 2) <= 0.15, res.to_markdown()  # the bar for measured orders
    assert cli.main(["solvers"]) == 0
    assert "my_heun" in capsys.readouterr().out


def test_a_step_that_miscounts_its_calls_is_refused(problem):
    _, sde, score = problem

    def euler_step(f, x, t, t_next):
        return x + (t_next - t) * f(x, t)

    ds.register_solver("bad_euler", euler_step, order=1, nfe_per_step=2)
    try:
        with pytest.raises(RuntimeError, match="declared nfe_per_step=2 but its step called f 1 times"):
            ds.sample(score, sde, 8, solver="bad_euler", steps=3, seed=0)
    finally:
        ds.unregister_solver("bad_euler")


def test_registration_errors(problem):
    with pytest.raises(ValueError, match="already registered"):
        ds.register_solver("ddim", heun_step, order=2, nfe_per_step=2)
    with pytest.raises(ValueError, match="nfe_per_step must be a positive integer"):
        ds.register_solver("x", heun_step, order=2)
    with pytest.raises(TypeError, match="step must be callable"):
        ds.register_solver("x", None, nfe_per_step=1)


def test_options_belong_to_their_solver(problem):
    _, sde, score = problem
    with pytest.raises(TypeError, match=r"'ode:rk4' does not take 'snr'; its own options are: none"):
        ds.sample(score, sde, 8, solver="ode:rk4", steps=4, snr=0.2)
    with pytest.raises(ValueError, match="steps is for fixed-step solvers"):
        ds.sample(score, sde, 8, solver="ode:dopri5", steps=4)
    with pytest.raises(ValueError, match="snr must be > 0"):
        ds.sample(score, sde, 8, solver="pc", steps=4, snr=-1.0, seed=0)
    with pytest.raises(ValueError, match="time_grid applies to"):
        ds.sample(score, sde, 8, solver="sde:milstein", steps=4, time_grid="karras", seed=0)


def test_an_installed_package_adds_solvers_through_entry_points(problem, tmp_path, monkeypatch, capsys):
    # A real distribution on sys.path: importlib.metadata finds its entry point as for any install.
    pkg = tmp_path / "diffsolve_plugin_demo.py"
    pkg.write_text(
        textwrap.dedent('''
        import diffsolve as ds

        def euler_step(f, x, t, t_next):
            """Plugin Euler on the PF-ODE."""
            return x + (t_next - t) * f(x, t)

        def solvers():
            return [ds.Solver("plugin_euler", "ode", ds.samplers.onestep.one_step_runner(euler_step, 1),
                              nfe_per_step=1, order=1, description="from a plugin")]
    ''')
    )
    dist = tmp_path / "diffsolve_plugin_demo-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: diffsolve-plugin-demo\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[diffsolve.solvers]\ndemo = diffsolve_plugin_demo:solvers\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    try:
        _, sde, score = problem
        res = ds.sample(score, sde, 8, solver="plugin_euler", steps=5, seed=0)
        ref = ds.sample(score, sde, x_T=res.x_T, solver="ode:euler", steps=5)
        torch.testing.assert_close(res.samples, ref.samples)
        assert cli.main(["solvers"]) == 0
        assert "plugin_euler" in capsys.readouterr().out
    finally:
        registry.SOLVERS.pop("plugin_euler", None)
        sys.modules.pop("diffsolve_plugin_demo", None)


@pytest.mark.parametrize(
    "facts, words",
    [
        ({"time_grid": "bogus"}, "time_grid must be one of"),
        ({"default_steps": 0}, "default_steps must be > 0"),
        ({"order": float("nan")}, "order must be a positive finite number"),
        ({"budgets": (0, -5)}, "budgets must be positive finite numbers"),
        ({"budgets": (2.5,)}, "budgets of a fixed-step solver are step counts"),
    ],
)
def test_a_solvers_facts_are_checked_when_it_is_registered(facts, words):
    # Issue: register_solver accepted these and failed later, elsewhere.
    with pytest.raises(ValueError, match=words):
        ds.register_solver("bad_facts", heun_step, nfe_per_step=2, **facts)
    assert "bad_facts" not in {s.name for s in ds.solvers()}


@pytest.mark.parametrize(
    "tamper, exc, words",
    [
        (lambda out: out.__setattr__("samples", out.samples[:1]), ValueError, r"returned shape \(1, 2\)"),
        (
            lambda out: out.__setattr__("samples", out.samples.double()),
            TypeError,
            "returned dtype torch.float64",
        ),
        (
            lambda out: out.__setattr__("samples", out.samples * float("nan")),
            ds.NonFiniteError,
            "samples the runner",
        ),
        (lambda out: out.__setattr__("nfe", -5), ValueError, "reported nfe=-5"),
    ],
)
def test_a_plugin_runners_output_is_checked_not_trusted(problem, tamper, exc, words):
    # Issue: a runner returning 1 row for n = 8, NaN samples, nfe = -5 or float64 from a float32 solve
    # was returned as a result.
    _, sde, score = problem
    ddim = ds.get_solver("ddim")

    def run(req):
        out = ddim.run(req)
        tamper(out)
        return out

    solver = registry.Solver("tampered", "diffusion", run, 1, time_grid="logsnr", default_steps=5)
    with pytest.raises(exc, match=words):
        ds.sample(score, sde, 8, solver=solver, seed=0, dtype=torch.float32)
