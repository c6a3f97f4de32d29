"""A diffusers scheduler's own loop as a diffsolve solver, so that `compare` judges it beside the others.

`register_scheduler(make)` registers `"diffusers:<Scheduler>"` (or a name given), whose runner is the
scheduler's own `set_timesteps` / `scale_model_input` / `step` loop, calling diffsolve's score as the
network: timestep n at t = (n + 1)/N, the noise prediction $\\hat\\epsilon = -\\sigma_t s(x, t)$. Every
scheduler runs this way, matched by `interop.match_scheduler` or not (LMS, DEIS, Heun, KDPM2, ...),
so its NFE under the distribution judge can be read off the same table as diffsolve's samplers.
It runs on the `DiscreteVPSDE` of the scheduler's own betas only, and draws no noise (stochastic
schedulers are refused: their randomness would not be keyed by sample).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..sde import DiscreteVPSDE
from .base import SolveOutput, SolveRequest
from .registry import Solver, register_solver

__all__ = ["register_scheduler"]

STOCHASTIC = (
    "DDPMScheduler", "EulerAncestralDiscreteScheduler", "KDPM2AncestralDiscreteScheduler", "DPMSolverSDEScheduler",
    "ScoreSdeVeScheduler", "LCMScheduler", "TCDScheduler", "CMStochasticIterativeScheduler",
)  # fmt: skip
"""Schedulers that draw noise in `step` (refused: their randomness is not keyed by sample)."""


def register_scheduler(
    make: Callable[[], Any],
    name: str | None = None,
    *,
    budgets: tuple[int, ...] = (10, 15, 20, 25, 30, 40, 50, 75, 100),
    replace: bool = False,
) -> Solver:
    """Register a diffusers scheduler's own loop as the solver `name` (default `"diffusers:<class name>"`).

    Args:
        make: Makes a fresh scheduler (each solve gets its own: schedulers keep state).
        name: The solver's name.
        budgets: The step counts `compare` runs by default.
        replace: Replace a solver registered under the same name (as `register_solver`).

    Returns:
        The registered `Solver` (remove it with `diffsolve.unregister_solver(name)`).

    Raises:
        ValueError: For a stochastic scheduler (DDPM, Euler ancestral, SDE-DPM-Solver, ...).
    """
    probe = make()
    kind = type(probe).__name__
    if kind in STOCHASTIC or "sde" in str(probe.config.get("algorithm_type", "")):
        raise ValueError(
            f"{kind} draws its own noise, not keyed by sample: only deterministic schedulers register"
        )
    probe.set_timesteps(10)
    per_step = round(len(probe.timesteps) / 10)  # Heun and KDPM2 evaluate twice per step
    name = name or f"diffusers:{kind}"

    def run(req: SolveRequest) -> SolveOutput:
        return _their_loop(make(), req)

    solver = Solver(
        name, "diffusion", run, per_step, default_steps=25, budgets=budgets, budget="steps",
        description=f"diffusers' {kind} loop ({dict(probe.config).get('timestep_spacing', '')} spacing), "
        "the model called through diffsolve's score",
    )  # fmt: skip
    return register_solver(solver, replace=replace)


def _their_loop(scheduler: Any, req: SolveRequest) -> SolveOutput:
    sde = req.sde
    betas = torch.as_tensor(scheduler.betas, dtype=torch.float64)
    same = isinstance(sde, DiscreteVPSDE) and sde.betas.shape == betas.shape
    if not (same and torch.allclose(sde.betas, betas, rtol=1e-6, atol=0)):
        raise ValueError(f"{req.solver} runs on the DiscreteVPSDE of its scheduler's betas, got {sde!r}")
    scheduler.set_timesteps(req.steps)
    ledger = req.ledger()
    N = sde.N
    x: Tensor = req.x_T * scheduler.init_noise_sigma
    for timestep in scheduler.timesteps:
        t = (float(timestep) + 1) / N
        model_in = scheduler.scale_model_input(x, timestep)  # x_t, the VP state, for every scheduler
        eps_hat = ledger(model_in, t).mul(-float(sde.marginal(t)[1]))
        x = scheduler.step(eps_hat, timestep, x).prev_sample
    return SolveOutput(samples=x, nfe=ledger.nfe, accepted=req.steps, sample_evaluations=ledger.rows)
