r"""What every sampler shares: the request it is given, the output it returns, and the score ledger.

A solver's runner takes one `SolveRequest` (the problem, its budget and its options, all checked by
`sample`) and returns a `SolveOutput`. Hand-written samplers call the score only through a
`ScoreLedger`, so NFE is counted and the progress callback fires the same way in all of them, and
step with `run_on_grid`, which checks the state for NaN/Inf once per step (see
docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..adapters import KeyedNoise
from ..errors import FiniteGuard
from ..scores import Score, ScoreCalls
from ..sde import SDE

__all__ = ["SolveRequest", "SolveOutput", "ScoreLedger", "prediction", "run_on_grid"]


@dataclass
class SolveRequest:
    r"""One solve, as `sample` hands it to a solver's runner (every field already checked).

    Attributes:
        score: The `Score`.
        sde: The forward SDE.
        x_T: The initial state at $T$, `(B, *event)`; dtype and device of the solve.
        eps: The final forward time.
        solver: The solver's registered name (for messages).
        steps: Number of steps (fixed-step solvers), else None.
        rtol: Relative tolerance (adaptive solvers), else None.
        atol: Absolute tolerance (adaptive solvers), else None.
        seed: The seed of the Brownian path and other noise (stochastic solvers), else None.
        grid: The float64 time grid $T = t_0 > \dots > t_N = \epsilon$ (fixed-step solvers), else None.
        options: The solver's own options (e.g. `snr` for `pc`), defaults filled in.
        return_trajectory: Whether to keep the state along the way.
        callback: Called with the forward time (0-d tensor) after each score evaluation, or None.
        grid_kind: The kind of `grid` (`"uniform"`, `"logsnr"`, `"karras"`), for a solver that builds
            a grid of its own size (`dpm_solver_fast`).
        row_start: Global index of `x_T`'s first row in the whole run (a chunk or a shard starts
            later): keys every random draw, so a sample's noise does not depend on the batch.
    """

    score: Score
    sde: SDE
    x_T: Tensor
    eps: float
    solver: str
    steps: int | None = None
    rtol: float | None = None
    atol: float | None = None
    seed: int | None = None
    grid: Tensor | None = None
    options: dict[str, Any] = field(default_factory=dict)
    return_trajectory: bool = False
    callback: Callable[[Tensor], None] | None = None
    grid_kind: str | None = None
    row_start: int = 0

    @property
    def noise(self) -> KeyedNoise:
        """The request's randomness (`KeyedNoise`: the Brownian path and keyed normals at this request's
        rows): what a stochastic runner draws from. Runners never read `seed` or `row_start`."""
        if self.seed is None:
            raise ValueError(f"{self.solver}: a deterministic request has no noise (seed is None)")
        return KeyedNoise(self.seed, self.row_start)

    def ledger(self) -> ScoreLedger:
        """A `ScoreLedger` on this request's score, SDE and callback."""
        return ScoreLedger(self.score, self.sde, self.callback)


@dataclass
class SolveOutput:
    r"""What a solver's runner returns; `sample()` wraps it in a `SampleResult`.

    Attributes:
        samples: The state at the final time $\epsilon$, `(B, *event)`.
        nfe: Score evaluations the solve made (one call on the batch is one).
        trajectory: The state at each of `times`, `(len(times), B, *event)`, if it was asked for.
        times: The forward times of `trajectory`, decreasing from $T$ to $\epsilon$.
        accepted: Steps taken (accepted steps of an adaptive solver).
        rejected: Steps rejected by an adaptive solver's error control (0 for fixed-step ones).
        nfe_per_sample: Each sample's own NFE, for solvers whose samples step independently.
        sample_evaluations: Score evaluations of single samples in all (`ScoreCalls.rows`: rows over
            every call), which per-sample solvers keep below `nfe` times the batch.
    """

    samples: Tensor
    nfe: int
    trajectory: Tensor | None = None
    times: Tensor | None = None
    accepted: int | None = None
    rejected: int = 0
    nfe_per_sample: Tensor | None = None
    sample_evaluations: int | None = None


def prediction(x: Tensor, score: Tensor, *, alpha: float, sigma: float, data: bool) -> Tensor:
    r"""The model a diffusion sampler steps with: $\hat x_0 = (x + \sigma^2 s)/\alpha$ (`data`) or $\hat\epsilon = -\sigma s$.

    Args:
        x: The state at t.
        score: The score there, $s(x, t)$.
        alpha: $\alpha_t$.
        sigma: $\sigma_t$.
        data: Data prediction rather than noise prediction.
    """
    return torch.add(x, score, alpha=sigma**2).div_(alpha) if data else score.mul(-sigma)


class ScoreLedger(ScoreCalls):
    r"""Score calls on a batch at one time: `scores.ScoreCalls` (the one NFE ledger) for hand-written samplers.

    Calling the ledger as `ledger(x, t)`, with `t` a float or a 0-d tensor, is one NFE. It checks
    the score's output shape, dtype and device, but not its finiteness (that would be a host sync
    per call on a GPU): `run_on_grid` checks the state once per step instead.

    Args:
        score: A `Score`, called as `score(x, t)` with `t` of shape `(B,)`.
        sde: The forward SDE.
        callback: Called with the forward time (0-d tensor) after each evaluation, or None.
    """

    def __init__(self, score: Score, sde: SDE, callback: Callable[[Tensor], None] | None) -> None:
        super().__init__(score, callback)
        self.sde = sde

    def __call__(self, x: Tensor, t: float | Tensor) -> Tensor:
        # one time expanded over the batch (stride 0): scores may compute their coefficients once
        tb = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])
        return self.evaluate(x, tb, tb[0])

    def velocity(self, x: Tensor, t: float | Tensor) -> Tensor:
        r"""$dx/dt$ in forward time (one NFE): a velocity model's own output where the score has a
        `velocity` method (`ScoreModel`), else the probability-flow drift computed from the score."""
        own = getattr(self.score, "velocity", None)
        if own is None:
            return self.pf_drift(x, t)
        tb = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])
        return self.evaluate(x, tb, tb[0], score=own)

    def _predicts_noise(self) -> bool:
        """Whether the score is an eps network's (`ScoreModel(..., "eps")`), whose output is the noise
        prediction itself; for any other the samplers' own sigma turns the score into it."""
        return getattr(self.score, "parameterization", None) == "eps" and hasattr(self.score, "noise")

    def noise(self, x: Tensor, t: float, *, sigma: float) -> Tensor:
        r"""The noise prediction $\hat\epsilon = -\sigma s$ at `t` (one NFE): an eps network's own output
        (`ScoreModel.noise`), without the round trip through the score, else from the score."""
        if not self._predicts_noise():
            return self(x, t).mul(-sigma)  # out of place: a score may return a tensor it keeps
        tb = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])
        return self.evaluate(x, tb, tb[0], score=self.score.noise)

    def data(self, x: Tensor, t: float, *, alpha: float, sigma: float) -> Tensor:
        r"""The data prediction $\hat x_0$ at `t` (one NFE): $(x + \sigma^2 s)/\alpha$ (from a noise
        prediction, $(x - \sigma\hat\epsilon)/\alpha$), or where $\alpha = 0$ (a path's zero terminal SNR,
        where the score does not determine it) from the velocity, $\hat x_0 = (v - \dot\sigma
        x/\sigma)/\dot\alpha$ (an `AffinePath`'s derivatives; $x - v$ on the straight path)."""
        if alpha > 0 and self._predicts_noise():
            return torch.add(x, self.noise(x, t, sigma=sigma), alpha=-sigma).div_(alpha)
        if alpha > 0:
            return prediction(x, self(x, t), alpha=alpha, sigma=sigma, data=True)
        when = torch.tensor([t], dtype=torch.float64)
        d_alpha, d_sigma = float(self.sde._d_alpha(when)[0]), float(self.sde._d_sigma(when)[0])  # type: ignore[attr-defined]
        return torch.add(self.velocity(x, t), x, alpha=-d_sigma / sigma).div_(d_alpha)

    def pf_drift(self, x: Tensor, t: float | Tensor) -> Tensor:
        r"""The probability-flow ODE's drift $f(t)x - \tfrac12 g(t)^2 s(x, t)$ in forward time (one NFE)."""
        s = self(x, t)
        tb = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])
        return self.sde.pf_drift(x, tb, s)


def run_on_grid(
    step: Callable[[Tensor, int], Tensor],
    x_T: Tensor,
    grid: Tensor,
    ledger: ScoreLedger,
    return_trajectory: bool,
) -> SolveOutput:
    """Apply `step(x, i)` (from `grid[i]` to `grid[i + 1]`) over the grid, checking the state once per step.

    Args:
        step: The update from grid point `i` to `i + 1`.
        x_T: The state at `grid[0]`.
        grid: Decreasing forward times, float64.
        ledger: The ledger `step` calls the score through (for the NFE count).
        return_trajectory: Keep the state at every grid time.

    Returns:
        A `SolveOutput`.

    Raises:
        NonFiniteError: At the first grid time where the state is NaN/Inf.
    """
    guard = FiniteGuard()
    times = grid.tolist()
    x = x_T
    traj = [x] if return_trajectory else None
    for i in range(len(times) - 1):
        x = step(x, i)
        guard.check(x, times[i + 1])
        if traj is not None:
            traj.append(x)
    guard.raise_if_failed()
    return SolveOutput(
        samples=x,
        nfe=ledger.nfe,
        sample_evaluations=ledger.rows,
        trajectory=torch.stack(traj) if traj is not None else None,
        times=grid if return_trajectory else None,
        accepted=len(times) - 1,
    )
