"""Generic solvers: torchsde on the reverse SDE (`sde:<method>`), torchdiffeq on the PF-ODE (`ode:<method>`).

Both go through the adapters' one wrapper of each library (`adapters.sdeint`, `adapters.odeint`),
which own the libraries' quirks; this module only says which methods exist and what they claim.
Strong and weak orders are for the reverse SDE's additive noise, where Itô and Stratonovich
coincide and Euler–Maruyama has strong order 1 (docs/concepts.md).
"""

from __future__ import annotations

from ..adapters import ProbabilityFlowODE, ReverseSDE, odeint, sdeint, uniform_grid
from .base import SolveOutput, SolveRequest
from .noise import NOISE_REMOVAL, euler_maruyama
from .registry import SOLVERS, Solver

__all__ = ["run_reverse_sde", "run_pf_ode", "TRAJECTORY_POINTS"]

TRAJECTORY_POINTS = 101
"""Output times of an adaptive solve's trajectory (equally spaced from T to eps)."""


def run_reverse_sde(req: SolveRequest) -> SolveOutput:
    """Runner of `sde:<method>`: torchsde on the reverse SDE, `steps` equal steps on the path `seed` names.

    Args:
        req: The checked request (`req.solver` names the torchsde method after `sde:`).
    """
    method = req.solver.removeprefix("sde:")
    rsde = ReverseSDE(req.score, req.sde, req.eps)
    rsde.callback = req.callback
    states, times = sdeint(
        rsde, req.x_T, method=method, steps=req.steps, seed=req.noise,
        return_trajectory=req.return_trajectory, solver=req.solver, noise_removal=req.options.get("noise_removal", False),
    )  # fmt: skip
    return SolveOutput(
        samples=states[-1],
        nfe=rsde.nfe,
        sample_evaluations=rsde.calls.rows,
        trajectory=states if req.return_trajectory else None,
        times=times if req.return_trajectory else None,
        accepted=req.steps,
    )


def run_pf_ode(req: SolveRequest) -> SolveOutput:
    """Runner of `ode:<method>`: torchdiffeq on the probability-flow ODE from T down to eps.

    Args:
        req: The checked request (`req.solver` names the torchdiffeq method after `ode:`).
    """
    method = req.solver.removeprefix("ode:")
    ode = ProbabilityFlowODE(req.score, req.sde, req.eps)
    ode.callback = req.callback
    if req.steps is None:
        n_out = TRAJECTORY_POINTS if req.return_trajectory else 2
        t = uniform_grid(req.sde.T, req.eps, n_out - 1, device=req.x_T.device)
    else:
        t = req.grid if req.return_trajectory else req.grid[[0, -1]]  # uniform in t, from sample()
    out = odeint(
        ode, req.x_T, t, method=method, steps=req.steps, rtol=req.rtol, atol=req.atol, solver=req.solver,
        grid=req.grid,
    )  # fmt: skip
    return SolveOutput(
        samples=out.ys[-1],
        nfe=ode.nfe,
        sample_evaluations=ode.calls.rows,
        trajectory=out.ys if req.return_trajectory else None,
        times=t if req.return_trajectory else None,
        accepted=out.accepted,
        rejected=out.rejected,
    )


def _sde(method: str, strong: float, nfe: int, description: str, **kw: object) -> Solver:
    kw.setdefault("options", {"noise_removal": NOISE_REMOVAL})
    return Solver(
        f"sde:{method}", "sde", kw.pop("run", run_reverse_sde), nfe, strong_order=strong,
        stochastic=True, default_steps=1000, description=description, backend="torchsde", **kw,
    )  # fmt: skip


def _ode(method: str, order: float, nfe: int, description: str, **kw: object) -> Solver:
    if not kw.get("adaptive"):
        kw.setdefault("time_grid", "uniform")  # a fixed-step method steps on any grid
    return Solver(
        f"ode:{method}",
        "ode",
        run_pf_ode,
        nfe,
        order=order,
        description=description,
        backend="torchdiffeq",
        **kw,
    )


def _adaptive(method: str, order: float, nfe: int, description: str, **kw: object) -> Solver:
    # torchdiffeq evaluates f at t0 and once more to pick the first step; every tableau here is
    # first-same-as-last, so an attempt costs its stages but one, accepted or rejected.
    return _ode(method, order, nfe, description, adaptive=True, nfe_start=2, **kw)


for _solver in [
    _sde("euler", 1.0, 1, "Euler–Maruyama (Itô); strong order 1 for additive noise; any time grid",
         weak_order=1.0, budgets=(25, 50, 60, 75, 100, 200), verified=True, run=euler_maruyama,
         time_grid="uniform"),
    _sde("milstein", 1.0, 1, "Milstein (Itô); equals Euler–Maruyama for additive noise", verified=True),
    _sde("srk", 1.5, 2, "Rößler's SRA1 stochastic Runge–Kutta for additive noise (Itô)",
         budgets=(25, 50, 100, 200), reference="sde:srk", verified=True,
         batch_invariant=False),  # torchsde's BrownianInterval draws all rows together
    _sde("reversible_heun", 1.0, 1,
         "Kidger et al.'s reversible Heun (Stratonovich); its parasitic mode grows on contracting drifts "
         "such as the reverse SDE's (ring2d, 1000 steps: -2.3 nats in mean log p); for reversibility, not accuracy "
         "(so it keeps its last step's noise: no noise_removal option)",
         nfe_start=1, options={}),
    _sde("heun", 1.0, 2, "Stochastic Heun (Stratonovich)", verified=True),
    _sde("midpoint", 1.0, 2, "Stochastic midpoint (Stratonovich)", verified=True),
    _sde("euler_heun", 1.0, 1, "Euler–Heun (Stratonovich)", verified=True),
    _adaptive("dopri8", 8, 13, "Dormand–Prince 8(7) with error control"),
    _adaptive("dopri5", 5, 6, "Dormand–Prince 5(4) with error control", budgets=(1e-2, 1e-3, 1e-4, 1e-5, 1e-6)),
    _adaptive("bosh3", 3, 3, "Bogacki–Shampine 3(2) with error control"),
    _adaptive("fehlberg2", 2, 2, "Runge–Kutta–Fehlberg 2(1) with error control"),
    _adaptive("adaptive_heun", 2, 1, "Heun 2(1) with error control"),
    _ode("euler", 1, 1, "Explicit Euler", budgets=(10, 20, 50, 100, 200), verified=True),
    _ode("midpoint", 2, 2, "Explicit midpoint", verified=True),
    _ode("heun2", 2, 2, "Heun's method (explicit trapezoid)", verified=True),
    _ode("heun3", 3, 3, "Heun's third-order method", verified=True),
    _ode("rk4", 4, 4, "Classical Runge–Kutta (3/8 rule)", budgets=(3, 5, 8, 10, 15, 20), verified=True),
    _ode("explicit_adams", 4, 1,
         "Adams–Bashforth, up to order 4. Unstable in torchdiffeq 0.2.5: its error grows as the step "
         "shrinks, even on y' = -3y + sin 5t (0.05 at 10 steps, 1e15 at 160); use ode:rk4. Its first two "
         "steps are RK4 steps (4 NFE each), hence +6 at the start (for steps >= 2)",
         nfe_start=6,
         warning="ode:explicit_adams is unstable in torchdiffeq 0.2.5 (its error grows as steps shrink); "
                 "prefer ode:rk4"),
]:  # fmt: skip
    SOLVERS[_solver.name] = _solver
