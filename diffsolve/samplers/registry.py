r"""The solver registry: one dict from name to `Solver`, the object that both describes and runs a solver.

A `Solver` carries everything any tool needs to know about it: the runner that solves, its family,
its default budget (steps or tolerances) and time grid, the options it accepts, a numeric NFE per
step, its orders (`order` for deterministic methods, `strong_order` and `weak_order` for
stochastic ones) and whether tests have measured them, the default budgets of `compare`, and the
reference its path error is read against. `sample`, `compare`, `convergence_order`, `nfe_needed`
and the CLI read only this object, so a solver added with `register_solver` (or by another
package through the `diffsolve.solvers` entry-point group) is treated like a built-in.

Like torchdiffeq's `SOLVERS[method]`, dispatch is a plain dict lookup (see docs/architecture.md).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .._validation import check_positive
from .base import SolveOutput, SolveRequest

__all__ = [
    "Solver",
    "SolverInfo",
    "Option",
    "SOLVERS",
    "ENTRY_POINT_GROUP",
    "solvers",
    "get_solver",
    "register_solver",
    "unregister_solver",
]

ENTRY_POINT_GROUP = "diffsolve.solvers"
"""The entry-point group through which an installed package adds solvers (the CLI sees them too)."""

NfePerStep = int | Callable[[Mapping[str, Any]], int]


MAX_STEPS = 10**6
"""The most steps a solve takes (`Solver.check_budget` refuses more before allocating anything)."""


@dataclass(frozen=True)
class Option:
    """A solver-specific keyword of `sample` (e.g. `pc`'s `snr`): its default and its check.

    Attributes:
        default: The value used when the keyword is not given.
        check: Called as `check(value, name)`; raises `ValueError`/`TypeError` on a bad value.
        help: One line for `--help` texts and the docs.
    """

    default: Any
    check: Callable[[Any, str], None]
    help: str = ""


@dataclass(frozen=True)
class Solver:
    r"""A solver: what it is, what it costs, what it accepts, and the runner that solves.

    NFE of a solve is `nfe_start + nfe_per_step * accepted + nfe_per_rejected_step * rejected` (for a
    fixed-step solver, `accepted` is `steps` and nothing is rejected); the test suite checks this
    against an independent call counter for every registered solver.

    Attributes:
        name: What `sample(..., solver=name)` takes: `"sde:<torchsde method>"`,
            `"ode:<torchdiffeq method>"` or a plain name.
        family: `"sde"` (torchsde on the reverse SDE), `"ode"` (the probability-flow ODE) or
            `"diffusion"` (diffusion-specific samplers).
        run: The runner: `run(SolveRequest) -> SolveOutput`.
        nfe_per_step: Score evaluations per (accepted) step: an int, or a function of the options.
        order: Order of a deterministic method (global error $O(h^p)$), None for stochastic ones.
        strong_order: Strong order of a stochastic method on the reverse SDE (additive noise).
        weak_order: Weak order of a stochastic method.
        adaptive: Whether it controls its own step (takes `rtol`/`atol`, refuses `steps`).
        stochastic: Whether it draws noise (then `seed` selects the Brownian path).
        nfe_start: Score evaluations before the first step (2 for torchdiffeq's adaptive methods).
        nfe_per_rejected_step: Score evaluations of a rejected step (default: `nfe_per_step`).
        default_steps: Steps when `steps` is not given (fixed-step solvers).
        default_rtol: `rtol` when not given (adaptive solvers).
        default_atol: `atol` when not given (adaptive solvers).
        time_grid: The default time grid (`"uniform"`, `"logsnr"`, `"karras"`) of a solver that
            lets the user choose one with `time_grid=`; None when it steps uniformly in t and
            accepts no choice.
        options: Solver-specific keywords of `sample`, name -> `Option`.
        budgets: The budgets `compare` runs by default (steps, or tolerances rtol = atol).
        reference: For a stochastic solver, the solver whose fine solve on the same Brownian path
            its path error and strong error are read against; None for deterministic solvers
            (float64 adaptive reference solve).
        verified: Whether the test suite measures every order it states (against the analytic
            score in float64); `diffsolve solvers` and the docs mark the others `unverified`.
        description: One line on the method, with its caveats.
        warning: A `UserWarning` that `sample` gives whenever it runs (a known defect).
        backend: The engine that runs it: `"torchsde"` (on the reverse SDE), `"torchdiffeq"` (on the
            PF-ODE; `log_likelihood` and `step_diagnostics` take these) or `"diffsolve"` (its own loop).
        budget: What `steps` counts: `"steps"` (grid intervals; such a solver also takes an explicit
            `time_grid` if it has a `time_grid` kind), `"nfe"` (an evaluation budget the solver spends
            as it chooses, `dpm_solver_fast`) or `"tolerance"` (adaptive: `rtol`/`atol`). Filled in
            from `adaptive` when not given.
        batch_invariant: Whether a sample's result depends on the seed and its global index only,
            not on n or the chunking (a bool, or a function of the options): the test suite checks
            first-k-of-2k and chunked-equals-one-batch for every fixed-step solver that says so.
            Every stochastic solver, invariant or not, must give different samples different noise.
        clean_end: Whether it can step to $\sigma = 0$: an explicit `time_grid` ending at t = 0 (a discrete
            schedule's clean data, `sample(..., eps=0)`), its last step first order in data prediction (or,
            for a `velocity` solver, Euler in t, which never evaluates the velocity at t = 0).
        velocity: Whether it may start at a path's zero terminal SNR ($\alpha_T = 0$, `RectifiedFlow(T=1)`,
            `SDE.zero_terminal_snr`), where the score does not determine the flow: it reads the velocity
            itself there (`ScoreModel.velocity`, a flow-matching network's own output; `flow_euler` and
            `flow_heun` step on it everywhere, the data-prediction samplers take their first step, the
            limit $h \to \infty$, from it).
    """

    name: str
    family: Literal["sde", "ode", "diffusion"]
    run: Callable[[SolveRequest], SolveOutput] = field(repr=False, compare=False)
    nfe_per_step: NfePerStep = 1
    order: float | None = None
    strong_order: float | None = None
    weak_order: float | None = None
    adaptive: bool = False
    stochastic: bool = False
    nfe_start: int = 0
    nfe_per_rejected_step: NfePerStep | None = None
    default_steps: int | None = None
    default_rtol: float | None = None
    default_atol: float | None = None
    time_grid: str | None = None
    options: Mapping[str, Option] = field(default_factory=dict)
    budgets: tuple[float, ...] = ()
    reference: str | None = None
    verified: bool = False
    description: str = ""
    warning: str | None = None
    batch_invariant: bool | Callable[[Mapping[str, Any]], bool] = True
    backend: Literal["torchsde", "torchdiffeq", "diffsolve"] = "diffsolve"
    budget: Literal["steps", "nfe", "tolerance"] | None = None
    clean_end: bool = False
    velocity: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"a solver's name must be a non-empty string, got {self.name!r}")
        if self.family not in ("sde", "ode", "diffusion"):
            raise ValueError(f"family must be 'sde', 'ode' or 'diffusion', got {self.family!r}")
        if not callable(self.run):
            raise TypeError(f"run must be callable as run(SolveRequest) -> SolveOutput, got {self.run!r}")
        if not (isinstance(self.nfe_per_step, int) or callable(self.nfe_per_step)):
            raise TypeError(
                f"nfe_per_step must be an int or a function of the options, got {self.nfe_per_step!r}"
            )
        if self.backend not in ("torchsde", "torchdiffeq", "diffsolve"):
            raise ValueError(
                f"backend must be 'torchsde', 'torchdiffeq' or 'diffsolve', got {self.backend!r}"
            )
        if self.budget is None:
            object.__setattr__(self, "budget", "tolerance" if self.adaptive else "steps")
        if (self.budget == "tolerance") != self.adaptive or self.budget not in ("steps", "nfe", "tolerance"):
            raise ValueError(
                f"budget must be 'tolerance' for an adaptive solver and 'steps' or 'nfe' otherwise, "
                f"got {self.budget!r} (adaptive={self.adaptive})"
            )
        if self.adaptive:
            defaults = {"default_rtol": 1e-5, "default_atol": 1e-5}
            fallback: tuple[float, ...] = (1e-2, 1e-3, 1e-4)
        else:
            defaults = {"default_steps": 100}
            fallback = (10, 20, 50, 100)
        for key, value in defaults.items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)
        if not self.budgets:
            object.__setattr__(self, "budgets", fallback)
        if self.stochastic and self.reference is None:
            object.__setattr__(self, "reference", "sde:euler")
        self._check_facts()

    def _check_facts(self) -> None:
        """Every fact a tool will read, checked when the solver is made (a plugin's included), so that a
        bad one fails here, naming the field, not later inside another tool."""
        from .grids import GRIDS

        if self.time_grid is not None and self.time_grid not in GRIDS:
            raise ValueError(f"time_grid must be one of {', '.join(GRIDS)} or None, got {self.time_grid!r}")
        for key in ("order", "strong_order", "weak_order"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0 < value < float("inf")):  # fmt: skip
                raise ValueError(f"{key} must be a positive finite number or None, got {value!r}")
        if self.adaptive:
            for key in ("default_rtol", "default_atol"):
                check_positive(getattr(self, key), key)
        else:
            check_positive(self.default_steps, "default_steps", integer=True)
        for b in self.budgets:
            if isinstance(b, bool) or not isinstance(b, (int, float)) or not 0 < b < float("inf"):
                raise ValueError(f"budgets must be positive finite numbers, got {self.budgets!r}")
            if not self.adaptive and (not float(b).is_integer()):
                raise ValueError(
                    f"budgets of a fixed-step solver are step counts (integers), got {self.budgets!r}"
                )
            if self.adaptive and not b < 1:
                raise ValueError(
                    f"budgets of an adaptive solver are tolerances in (0, 1), got {self.budgets!r}"
                )

    def check_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The solver's own options with defaults filled in; an unknown name or a bad value is refused.

        Args:
            options: `{name: value}` as a user passes them to `sample`.
        """
        unknown = [k for k in options if k not in self.options]
        if unknown:
            accepted = ", ".join(self.options) or "none"
            raise TypeError(
                f"{self.name!r} does not take {', '.join(map(repr, unknown))}; its own options are: {accepted}"
            )
        checked = self.defaults()
        for name, value in options.items():
            self.options[name].check(value, name)
            checked[name] = value
        return checked

    def is_batch_invariant(self, options: Mapping[str, Any] | None = None) -> bool:
        """Whether a solve with these options (defaults where not given) is batch-invariant."""
        if callable(self.batch_invariant):
            return bool(self.batch_invariant({**self.defaults(), **(options or {})}))
        return bool(self.batch_invariant)

    @property
    def takes_grid(self) -> bool:
        """Whether it steps on a time grid a user may give (`time_grid=` a kind or a tensor of times)."""
        return self.time_grid is not None and self.budget == "steps"

    def step_cost(self, options: Mapping[str, Any] | None = None) -> int:
        """Score evaluations per accepted step, with these options (defaults where not given)."""
        return self._evaluate(self.nfe_per_step, options)

    def nfe(self, *, accepted: int, rejected: int = 0, options: Mapping[str, Any] | None = None) -> int:
        """The NFE a solve with these step counts costs, by this solver's own account.

        Args:
            accepted: Steps taken (`steps` for a fixed-step solver).
            rejected: Steps rejected by an adaptive solver.
            options: The solver's options (defaults where not given).
        """
        per_reject = self.nfe_per_step if self.nfe_per_rejected_step is None else self.nfe_per_rejected_step
        return (
            self.nfe_start
            + self._evaluate(self.nfe_per_step, options) * accepted
            + self._evaluate(per_reject, options) * rejected
        )

    def nfe_text(self) -> str:
        """NFE per step in words, for tables: e.g. `"6 (+2 at the start)"`, `"1 + corrector_steps"`."""
        if callable(self.nfe_per_step):
            text = getattr(self.nfe_per_step, "__doc__", None) or f"{self.step_cost()} at the defaults"
        else:
            text = str(self.nfe_per_step)
        extra = []
        if self.adaptive:
            text += " per accepted step"
            if self.nfe_per_rejected_step is not None and self.nfe_per_rejected_step != self.nfe_per_step:
                extra.append(f"{self._evaluate(self.nfe_per_rejected_step, None)} per rejected step")
        if self.nfe_start:
            extra.append(f"+{self.nfe_start} at the start")
        return text + (f" ({', '.join(extra)})" if extra else "")

    def orders_text(self) -> str:
        """The stated orders, e.g. `"4"`, `"strong 1, weak 1"`, with `(unverified)` if no test measures them."""
        parts = []
        if self.order is not None:
            parts.append(f"{self.order:g}")
        if self.strong_order is not None:
            parts.append(f"strong {self.strong_order:g}")
        if self.weak_order is not None:
            parts.append(f"weak {self.weak_order:g}")
        text = ", ".join(parts) or "-"
        return text if self.verified or not parts else f"{text} (unverified)"

    def check_budget(
        self, steps: int | None, rtol: float | None, atol: float | None, *, fill_defaults: bool = True
    ) -> tuple[int | None, float | None, float | None]:
        """Check a budget and fill in this solver's defaults: `steps` for fixed-step solvers, `rtol`/`atol`
        for adaptive ones; the other kind is refused.

        Args:
            steps: Steps (fixed-step solvers) or None.
            rtol: Relative tolerance (adaptive solvers) or None.
            atol: Absolute tolerance (adaptive solvers) or None.
            fill_defaults: Use the solver's defaults for what is not given (else a missing one is an error).

        Returns:
            `(steps, rtol, atol)`, with None for the kind that does not apply.

        Raises:
            ValueError, TypeError: On a budget of the wrong kind, a missing one, or a non-positive value.
        """
        if self.adaptive:
            if steps is not None:
                raise ValueError(
                    f"steps is for fixed-step solvers; {self.name!r} is adaptive: give rtol/atol instead"
                )
            rtol = self.default_rtol if rtol is None else rtol
            atol = self.default_atol if atol is None else atol
            check_positive(rtol, "rtol")
            check_positive(atol, "atol")
            if not rtol < 1:  # a relative error of 100% or more accepts any step
                raise ValueError(f"rtol must lie in (0, 1), got {rtol!r}")
            return None, rtol, atol
        if rtol is not None or atol is not None:
            raise ValueError(
                f"rtol/atol are for adaptive solvers; {self.name!r} is fixed-step: give steps instead"
            )
        if steps is None and not fill_defaults:
            raise ValueError(f"{self.name!r} is a fixed-step solver: give steps")
        steps = self.default_steps if steps is None else steps
        check_positive(steps, "steps", integer=True)
        if steps > MAX_STEPS:
            raise ValueError(
                f"steps = {steps} is more than MAX_STEPS = {MAX_STEPS:,}: its time grid alone would take "
                f"{8 * (steps + 1) / 2**30:.1f} GiB and the solve {steps:,} score calls"
            )
        return int(steps), None, None

    def defaults(self) -> dict[str, Any]:
        """The solver's option defaults, name -> value."""
        return {k: o.default for k, o in self.options.items()}

    def _evaluate(self, cost: NfePerStep, options: Mapping[str, Any] | None) -> int:
        return int(cost({**self.defaults(), **(options or {})})) if callable(cost) else int(cost)


SolverInfo = Solver
"""The name `solvers()` returned before solvers ran themselves; the same class now."""

SOLVERS: dict[str, Solver] = {}
"""Every solver by name; `solvers()` lists them and `diffsolve solvers` prints them."""

_entry_points_loaded = False


def _register(solver: Solver, *, replace: bool = False) -> Solver:
    if not isinstance(solver, Solver):
        raise TypeError(f"expected a diffsolve Solver, got {type(solver).__name__}")
    if solver.name in SOLVERS and not replace:
        raise ValueError(
            f"a solver named {solver.name!r} is already registered; pick another name or pass replace=True"
        )
    SOLVERS[solver.name] = solver
    return solver


def register_solver(
    solver: Solver | str,
    step: Callable[..., Any] | None = None,
    *,
    order: float | None = None,
    nfe_per_step: int | None = None,
    default_steps: int = 20,
    time_grid: str = "uniform",
    budgets: Iterable[int] = (5, 10, 20, 50),
    description: str | None = None,
    replace: bool = False,
) -> Solver:
    r"""Add a solver that `sample`, `compare`, `convergence_order`, `nfe_needed` and the CLI all accept.

    Either pass a full `Solver`, or, the common case, a name and a one-step method on the
    probability-flow ODE, `step(f, x, t, t_next) -> x_next`, where `f(x, t)` is the PF-ODE drift
    (each call is one NFE, counted by the same ledger as the built-ins) and `t`, `t_next` are
    floats. It then steps on the grid `time_grid` from T down to eps (`"uniform"` by default; the
    user may pick another with `sample(..., time_grid=...)`).

    Args:
        solver: A `Solver`, or the name of the one-step method.
        step: The one-step method (only with a name).
        order: Its order (deterministic global error $O(h^p)$); shown as unverified.
        nfe_per_step: How many times `step` calls `f` (checked against a counter by `sample`).
        default_steps: Steps when `sample` is given none.
        time_grid: Default time grid: `"uniform"`, `"logsnr"` or `"karras"`.
        budgets: The step counts `compare` runs by default.
        description: One line for `diffsolve solvers` (default: the first line of `step`'s docstring).
        replace: Replace a solver registered under the same name (built-ins included).

    Returns:
        The registered `Solver`.

    Raises:
        ValueError: On a name already taken (without `replace`), or a one-step method without
            `nfe_per_step`; TypeError if `step` is not callable.
    """
    if isinstance(solver, Solver):
        if step is not None:
            raise TypeError("give a Solver, or a name and a step function, not both")
        return _register(solver, replace=replace)
    if not callable(step):
        raise TypeError(f"step must be callable as step(f, x, t, t_next), got {step!r}")
    if isinstance(nfe_per_step, bool) or not isinstance(nfe_per_step, int) or nfe_per_step < 1:
        raise ValueError(
            f"nfe_per_step must be a positive integer (calls of f per step), got {nfe_per_step!r}"
        )
    from .onestep import one_step_runner

    doc = (getattr(step, "__doc__", None) or "").strip().splitlines()
    built = Solver(
        name=solver,
        family="ode",
        run=one_step_runner(step, nfe_per_step),
        nfe_per_step=nfe_per_step,
        order=order,
        default_steps=default_steps,
        time_grid=time_grid,
        budgets=tuple(budgets),
        description=description or (doc[0] if doc else f"user-defined one-step method {solver!r}"),
    )
    return _register(built, replace=replace)


def unregister_solver(name: str) -> Solver:
    """Remove a solver from the registry (e.g. one registered in a notebook) and return it.

    Args:
        name: Its registered name.
    """
    return SOLVERS.pop(get_solver(name).name)


def _load_entry_points() -> None:
    """Register the solvers of installed packages (group `diffsolve.solvers`), once per process.

    An entry point may name a `Solver`, an iterable of them, or a function that returns them (or
    registers them itself and returns None). A plugin that fails to load is reported by a warning,
    never by breaking diffsolve.
    """
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            if callable(obj) and not isinstance(obj, Solver):
                obj = obj()
            for item in [obj] if isinstance(obj, Solver) else list(obj or ()):
                if item.name not in SOLVERS:
                    _register(item)
        except Exception as err:  # a broken plugin must not break diffsolve
            warnings.warn(
                f"the diffsolve.solvers entry point {ep.name!r} ({ep.value}) failed to load: {err}",
                RuntimeWarning,
                stacklevel=2,
            )


def solvers() -> list[Solver]:
    """Every solver `sample` accepts, built-in, registered or from an installed package."""
    _load_entry_points()
    return list(SOLVERS.values())


def get_solver(name: object) -> Solver:
    """Look a solver up by name (a `Solver` is returned as it is).

    Args:
        name: A solver name, as `solvers()` lists them, or a `Solver`.

    Returns:
        The `Solver`.

    Raises:
        ValueError: On an unknown name; the message lists the valid ones.
    """
    if isinstance(name, Solver):
        return name
    _load_entry_points()
    if not isinstance(name, str) or name not in SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(SOLVERS)}; got {name!r}{_did_you_mean(name)}")
    return SOLVERS[name]


def _did_you_mean(name: object) -> str:
    """`; did you mean 'x'?` for the registered names closest to a misspelt one (also with an `ode:` /
    `sde:` prefix added or dropped), or nothing."""
    if not isinstance(name, str):
        return ""
    import difflib

    stems: dict[str, list[str]] = {}
    for n in SOLVERS:
        stems.setdefault(n.split(":", 1)[-1], []).append(n)
    close = difflib.get_close_matches(name, list(SOLVERS), n=3, cutoff=0.75)
    for m in difflib.get_close_matches(name.split(":", 1)[-1], list(stems), n=3, cutoff=0.75):
        close += stems[m]
    close = list(dict.fromkeys(close))[:3]
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
