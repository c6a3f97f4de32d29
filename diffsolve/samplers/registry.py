"""The solver registry: one dict from name to what the solver is.

`order` is the strong order for reverse-SDE solvers (the reverse-time noise is additive, so
Euler–Maruyama has strong order 1), the classical order for ODE solvers, and the order of the
predictor for `pc`. `nfe_per_step` is what one step really costs in score evaluations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["SolverInfo", "SOLVERS", "solvers", "get_solver"]


@dataclass(frozen=True)
class SolverInfo:
    """What a solver is, as `solvers()` lists it.

    Attributes:
        name: What `sample(..., solver=name)` takes: `"sde:<torchsde method>"`,
            `"ode:<torchdiffeq method>"` or a diffusion sampler's name.
        family: `"sde"` (torchsde on the reverse SDE), `"ode"` (torchdiffeq on the PF-ODE) or
            `"diffusion"` (diffusion-specific samplers).
        order: Strong order for reverse-SDE solvers, classical order for ODE solvers, None where it
            varies (`ode:scipy_solver`).
        adaptive: Whether it controls its own step (takes `rtol`/`atol`, refuses `steps`).
        stochastic: Whether it draws noise (then `seed` selects the Brownian path).
        nfe_per_step: What one step costs in score evaluations, in words.
        description: One line on the method, with its caveats.
    """

    name: str
    family: Literal["sde", "ode", "diffusion"]
    order: float | None
    adaptive: bool
    stochastic: bool
    nfe_per_step: str
    description: str


def _sde(method: str, order: float, nfe: str, description: str) -> SolverInfo:
    return SolverInfo(f"sde:{method}", "sde", order, False, True, nfe, description)


def _ode(method: str, order: float | None, adaptive: bool, nfe: str, description: str) -> SolverInfo:
    return SolverInfo(f"ode:{method}", "ode", order, adaptive, False, nfe, description)


def _diffusion(name: str, order: float, nfe: str, description: str) -> SolverInfo:
    return SolverInfo(name, "diffusion", order, False, False, nfe, description)


SOLVERS: dict[str, SolverInfo] = {
    info.name: info
    for info in [
        _sde("euler", 1.0, "1", "Euler–Maruyama (Itô); strong order 1 for additive noise"),
        _sde("milstein", 1.0, "1", "Milstein (Itô); equals Euler–Maruyama for additive noise"),
        _sde("srk", 1.5, "2", "Rößler's SRA1 stochastic Runge–Kutta for additive noise (Itô)"),
        _sde(
            "reversible_heun",
            1.0,
            "1 (+1 at the start)",
            "Kidger et al.'s reversible Heun (Stratonovich); its parasitic mode grows on contracting drifts "
            "such as the reverse SDE's (ring2d, 1000 steps: -2.3 nats in mean log p); for reversibility, not accuracy",
        ),
        _sde("heun", 1.0, "2", "Stochastic Heun (Stratonovich)"),
        _sde("midpoint", 1.0, "2", "Stochastic midpoint (Stratonovich)"),
        _sde("euler_heun", 1.0, "1", "Euler–Heun (Stratonovich)"),
        _ode("dopri8", 8, True, "13 per attempted step", "Dormand–Prince 8(7) with error control"),
        _ode("dopri5", 5, True, "6 per attempted step (FSAL)", "Dormand–Prince 5(4) with error control"),
        _ode("bosh3", 3, True, "3 per attempted step (FSAL)", "Bogacki–Shampine 3(2) with error control"),
        _ode("fehlberg2", 2, True, "3 per attempted step", "Runge–Kutta–Fehlberg 2(1) with error control"),
        _ode("adaptive_heun", 2, True, "2 per attempted step", "Heun 2(1) with error control"),
        _ode("euler", 1, False, "1", "Explicit Euler"),
        _ode("midpoint", 2, False, "2", "Explicit midpoint"),
        _ode("heun2", 2, False, "2", "Heun's method (explicit trapezoid)"),
        _ode("heun3", 3, False, "3", "Heun's third-order method"),
        _ode("rk4", 4, False, "4", "Classical Runge–Kutta (3/8 rule)"),
        _ode(
            "explicit_adams",
            4,
            False,
            "1",
            "Adams–Bashforth, up to order 4. Unstable in torchdiffeq 0.2.5: its error grows as the step "
            "shrinks, even on y' = -3y + sin 5t (0.05 at 10 steps, 1e15 at 160); use implicit_adams",
        ),
        _ode(
            "implicit_adams",
            4,
            False,
            "1 + corrector iterations",
            "Adams–Bashforth–Moulton predictor-corrector",
        ),
        _ode(
            "scipy_solver",
            None,
            True,
            "variable",
            "scipy.integrate.solve_ivp (LSODA by default; needs scipy)",
        ),
        _diffusion("ddim", 1, "1", "DDIM, deterministic (= DPM-Solver-1): exponential Euler in log-SNR"),
        _diffusion("dpm_solver2", 2, "2", "DPM-Solver-2, single-step, midpoint in log-SNR (Lu et al. 2022)"),
        _diffusion("dpm_solver3", 3, "3", "DPM-Solver-3, single-step (Lu et al. 2022)"),
        _diffusion(
            "dpm_solver++2m", 2, "1", "DPM-Solver++(2M), multistep, data prediction (Lu et al. 2022b)"
        ),
        _diffusion(
            "edm_heun", 2, "2", "Karras et al.'s deterministic Heun sampler on the rho = 7 grid (EDM)"
        ),
        SolverInfo(
            "adaptive_sde",
            "diffusion",
            1.0,
            True,
            True,
            "2 per attempted step (1 for a retry)",
            "Jolicoeur-Martineau et al.'s adaptive reverse-SDE solver (EM / improved Euler pair, error "
            "control, one Brownian path)",
        ),
        SolverInfo(
            "pc",
            "diffusion",
            1.0,
            False,
            True,
            "1 + corrector_steps",
            "Song et al.'s predictor-corrector: reverse-diffusion predictor + Langevin corrector",
        ),
    ]
}
"""Every solver by name; `solvers()` lists them and `diffsolve solvers` prints them."""


def solvers() -> list[SolverInfo]:
    """Every solver `sample` accepts, with its family, order, adaptivity and cost per step."""
    return list(SOLVERS.values())


def get_solver(name: object) -> SolverInfo:
    """Look a solver up by name.

    Args:
        name: A solver name, as `solvers()` lists them.

    Returns:
        Its `SolverInfo`.

    Raises:
        ValueError: On an unknown name; the message lists the valid ones.
    """
    if not isinstance(name, str) or name not in SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(SOLVERS)}; got {name!r}")
    return SOLVERS[name]
