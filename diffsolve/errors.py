"""Exceptions raised by diffsolve."""

from __future__ import annotations

import math

import torch

__all__ = ["NonFiniteError", "StepSizeError", "FiniteGuard"]


class NonFiniteError(FloatingPointError):
    """A solve met a NaN or Inf, in the score or in the state.

    Attributes:
        t: The forward time at which it happened.
        solver: The solver's name, when known (set by `sample` and `log_likelihood`).
    """

    def __init__(self, what: str, t: float, solver: str | None = None) -> None:
        self.what = what
        self.t = t
        self.solver = solver
        super().__init__(self._message())

    def _message(self) -> str:
        where = f"solver {self.solver!r}" if self.solver else "called directly, solver unknown"
        return (
            f"{self.what} became non-finite (NaN or Inf) at t = {self.t:.6g} ({where}); "
            "check the score near this time, or raise eps if it is close to 0"
        )

    def with_solver(self, solver: str) -> NonFiniteError:
        """The same error, now naming the solver (the adapters raise it before they know the name)."""
        return NonFiniteError(self.what, self.t, solver)


class StepSizeError(RuntimeError):
    """An adaptive solver's step size underflowed (torchdiffeq's "underflow in dt").

    Attributes:
        t: The forward time reached.
        solver: The solver's name.
    """

    def __init__(self, t: float, solver: str) -> None:
        self.t = t
        self.solver = solver
        super().__init__(
            f"the step size of solver {solver!r} underflowed at t = {t:.6g}: the problem is too stiff there for "
            "these settings. Try looser rtol/atol, float64, or a larger eps (the score stiffens as t -> 0)"
        )


class FiniteGuard:
    """Checks a solve's state for NaN/Inf once per step, without a host sync per score call.

    On the CPU a check costs one reduction and raises at once. On an accelerator the flag stays on
    the device: the time of the first non-finite step is kept there and read back once, at
    `raise_if_failed()` (the end of the solve), so the error still names the step where the
    state first went non-finite. Solvers call `check(x, t)` once per step, never per score call.

    Args:
        what: What is checked, for the message (default "the state").
    """

    def __init__(self, what: str = "the state") -> None:
        self.what = what
        self._first_bad: torch.Tensor | None = (
            None  # a 0-d float64 device tensor, NaN while all steps were finite
        )

    def check(self, x: torch.Tensor, t: float | torch.Tensor) -> None:
        """Check the state `x` reached at forward time `t` (a float or a 0-d tensor)."""
        if x.device.type == "cpu":
            # One reduction: NaN and Inf propagate through a sum; an overflowing sum of finite
            # values is told apart by the exact check, which only then runs.
            if not math.isfinite(float(x.detach().sum())) and not bool(torch.isfinite(x).all()):
                raise NonFiniteError(self.what, float(t))
            return
        finite = torch.isfinite(x).all()
        t = torch.as_tensor(t, dtype=torch.float64, device=x.device)
        if self._first_bad is None:
            self._first_bad = torch.full((), float("nan"), dtype=torch.float64, device=x.device)
        first = self._first_bad
        self._first_bad = torch.where(torch.isnan(first) & ~finite, t, first)

    def raise_if_failed(self) -> None:
        """Raise `NonFiniteError` at the first step that failed (one device sync), if any did."""
        if self._first_bad is not None:
            t = float(self._first_bad)
            self._first_bad = None
            if t == t:
                raise NonFiniteError(self.what, t)
