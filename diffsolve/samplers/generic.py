"""Generic samplers: torchsde on the reverse SDE (`sde:<method>`), torchdiffeq on the PF-ODE (`ode:<method>`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torchdiffeq
import torchsde
from torch import Tensor

from ..adapters import ProbabilityFlowODE, ReverseSDE
from ..errors import NonFiniteError, StepSizeError
from ..scores import Score, evaluate_score
from ..sde import SDE
from .grids import fixed_step_grid, uniform_grid

__all__ = ["SolveOutput", "ScoreLedger", "solve_reverse_sde", "solve_pf_ode"]

# Methods torchsde only offers in Stratonovich form; with additive noise the two forms are one SDE.
_STRATONOVICH = {"reversible_heun", "heun", "midpoint", "euler_heun"}


@dataclass
class SolveOutput:
    r"""What the low-level solvers return; `sample()` wraps it in a `SampleResult`.

    Attributes:
        samples: The state at the final time $\epsilon$, `(B, *event)`.
        nfe: Score evaluations the solve made (one call on the batch is one).
        trajectory: The state at each of `times`, `(len(times), B, *event)`, if it was asked for.
        times: The forward times of `trajectory`, decreasing from $T$ to $\epsilon$.
    """

    samples: Tensor
    nfe: int
    trajectory: Tensor | None = None
    times: Tensor | None = None


class ScoreLedger:
    r"""Score calls on a batch at one time, with the NFE count, the progress callback and the finiteness check.

    The diffusion samplers and `pc` call the score only through a ledger, so NFE is counted, the
    progress callback fires and a non-finite state stops the solve (`NonFiniteError` naming $t$) the
    same way in all of them. Calling the ledger as `ledger(x, t)` with a float `t` is one NFE.

    Args:
        score: A `Score`, called as `score(x, t)` with `t` of shape `(B,)`.
        sde: The forward SDE, for $\alpha_t$ and $\sigma_t$.
        callback: Called with the forward time (0-d tensor) after each evaluation, or None.
    """

    def __init__(self, score: Score, sde: SDE, callback: Callable[[Tensor], None] | None) -> None:
        self.score, self.sde, self.callback = score, sde, callback
        self.nfe = 0

    def coefficients(self, t: float) -> tuple[float, float]:
        """$(\\alpha_t, \\sigma_t)$ at a float time, as floats (computed in float64)."""
        alpha, sigma = self.sde.marginal(torch.tensor(t, dtype=torch.float64))
        return float(alpha), float(sigma)

    def __call__(self, x: Tensor, t: float) -> Tensor:
        if not bool(torch.isfinite(x).all()):
            raise NonFiniteError("the state", t)
        tb = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
        out = evaluate_score(self.score, x, tb)
        self.nfe += 1
        if self.callback is not None:
            self.callback(tb[0])
        return out

    def eps(self, x: Tensor, t: float) -> Tensor:
        """The noise prediction $\\hat\\epsilon = -\\sigma_t s(x, t)$ (one NFE)."""
        return -self.coefficients(t)[1] * self(x, t)

    def x0(self, x: Tensor, t: float) -> Tensor:
        """The data prediction $\\hat x_0 = (x + \\sigma_t^2 s(x, t))/\\alpha_t$ (one NFE)."""
        alpha, sigma = self.coefficients(t)
        return (x + sigma**2 * self(x, t)) / alpha


def solve_reverse_sde(
    score: Score,
    sde: SDE,
    x_T: Tensor,
    *,
    method: str,
    steps: int,
    eps: float,
    seed: int,
    return_trajectory: bool,
    callback: Callable[[Tensor], None] | None = None,
) -> SolveOutput:
    """Integrate the reverse SDE from T to eps with a fixed-step torchsde method on one Brownian path.

    Args:
        score: A `Score`, called as `score(x, t)` with `t` of shape `(B,)`.
        sde: The forward SDE.
        x_T: Initial state at $T$, `(B, *event)`.
        method: A torchsde method name (`"euler"`, `"srk"`, `"milstein"`, `"heun"`, ...). Stratonovich-only
            methods get the same SDE declared with diagonal noise in Stratonovich form.
        steps: Number of equal steps in solver time $s = T - t$.
        eps: Final forward time.
        seed: Entropy of the `torchsde.BrownianInterval` (`ReverseSDE.brownian_motion`); `"srk"` uses
            the path with space-time Lévy areas.
        return_trajectory: Also return the state at every step.
        callback: Called with each forward time the score is evaluated at.

    Returns:
        A `SolveOutput`.
    """
    strat = method in _STRATONOVICH
    rsde = ReverseSDE(
        score,
        sde,
        eps,
        event_shape=tuple(x_T.shape[1:]),
        noise_type="diagonal" if strat else "additive",
        sde_type="stratonovich" if strat else "ito",
    )
    rsde.callback = callback
    y0 = x_T.reshape(x_T.shape[0], -1)
    bm = rsde.brownian_motion(y0, seed, levy_area_approximation="space-time" if method == "srk" else "none")
    s_grid = uniform_grid(0.0, rsde.s_end, steps, device=x_T.device)
    ts = s_grid if return_trajectory else s_grid[[0, -1]]
    # torchsde advances by repeated `t + dt`; a step a hair longer than the grid spacing keeps
    # rounding from adding a spurious last step of size ~1e-16 (it then clamps at the final time).
    dt = rsde.s_end / steps * (1 + 1e-12)
    ys = torchsde.sdeint(rsde, y0, ts, bm=bm, method=method, dt=dt)
    traj = rsde.to_event(ys)
    return SolveOutput(
        samples=traj[-1],
        nfe=rsde.nfe,
        trajectory=traj if return_trajectory else None,
        times=(sde.T - s_grid) if return_trajectory else None,
    )


def solve_pf_ode(
    score: Score,
    sde: SDE,
    x_T: Tensor,
    *,
    method: str,
    adaptive: bool,
    steps: int | None,
    rtol: float | None,
    atol: float | None,
    eps: float,
    return_trajectory: bool,
    trajectory_points: int = 101,
    callback: Callable[[Tensor], None] | None = None,
) -> SolveOutput:
    """Integrate the probability-flow ODE from T down to eps with a torchdiffeq method.

    Args:
        score: A `Score`, called as `score(x, t)` with `t` of shape `(B,)`.
        sde: The forward SDE.
        x_T: Initial state at $T$, `(B, *event)`.
        method: A torchdiffeq method name (`"dopri5"`, `"rk4"`, ...).
        adaptive: Whether `method` controls its own step (then `rtol`/`atol` apply, `steps` does not).
        steps: Number of equal steps for a fixed-step method.
        rtol: Relative tolerance of an adaptive method.
        atol: Absolute tolerance of an adaptive method.
        eps: Final forward time.
        return_trajectory: Also return the state along the solve.
        trajectory_points: For adaptive methods, how many equally spaced output times the trajectory has.
        callback: Called with each forward time the score is evaluated at.

    Returns:
        A `SolveOutput`.

    Raises:
        StepSizeError: If an adaptive method's step underflows (names $t$ and the solver).
    """
    ode = ProbabilityFlowODE(score, sde, eps)
    ode.callback = callback
    if adaptive:
        n_out = trajectory_points if return_trajectory else 2
        t = uniform_grid(sde.T, eps, n_out - 1, device=x_T.device)
        options = {} if method == "scipy_solver" else ode.odeint_options()
        kwargs = {"rtol": rtol, "atol": atol}
    else:
        t = uniform_grid(sde.T, eps, steps, device=x_T.device)
        if not return_trajectory:
            t = t[[0, -1]]
        options = {"grid_constructor": fixed_step_grid(steps)}
        kwargs = {}
    try:
        ys = torchdiffeq.odeint(ode, x_T, t, method=method, options=options, **kwargs)
    except AssertionError as err:  # torchdiffeq reports a collapsed step size by assertion
        if "underflow in dt" in str(err) and ode.last_t is not None:
            raise StepSizeError(float(ode.last_t), f"ode:{method}") from err
        raise
    return SolveOutput(
        samples=ys[-1],
        nfe=ode.nfe,
        trajectory=ys if return_trajectory else None,
        times=t if return_trajectory else None,
    )
