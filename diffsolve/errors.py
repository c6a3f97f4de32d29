"""Exceptions raised by diffsolve."""

from __future__ import annotations

__all__ = ["NonFiniteError", "StepSizeError"]


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
