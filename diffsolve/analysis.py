r"""Numerical analysis of score-based samplers: measured convergence orders.

`convergence_order` measures how a solver's error falls as its step count grows, and fits the
order on the asymptotic range. Three kinds of error, each against an independent answer:

- `"strong"` (reverse-SDE solvers): the mean distance $\mathbb{E}\|X_h - X_{ref}\|$ to a much
  finer solve driven by **the same Brownian path** (one `torchsde.BrownianInterval` queried at every
  resolution; `sde:euler` at `reference_steps`, or `sde:srk` for `sde:srk`, whose path carries Lévy
  areas). The mean distance, not the RMS: on a multimodal target a fraction $\propto h$ of coarse
  paths lands in another component, which makes the RMS fall like $h^{1/2}$ (`metrics.path_error`).
- `"weak"`: $|\,\overline{\varphi(X_h)} - \mathbb{E}_{p_\epsilon}[\varphi]\,|$ for a test function
  $\varphi$ whose exact expectation under the analytic marginal is known (default: the second
  moment $\|x\|^2$), with its Monte-Carlo standard error.
- `"ode"` (fixed-step PF-ODE solvers and the diffusion samplers): the mean distance to a float64
  `ode:dopri8` solve at rtol = atol = 1e-12 from the same prior draws.

The order is the least-squares slope of $\log e$ against $\log h$ over the step counts whose error
is resolved: above `floor_factor` times the reference's own error scale (strong, ode) or above 3
Monte-Carlo standard errors (weak). Its 95% interval comes from a bootstrap over the sample paths.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ._validation import check_positive
from .analytic import GaussianMixture
from .samplers.registry import get_solver
from .sampling import sample
from .scores import Score
from .sde import SDE

__all__ = [
    "ConvergenceResult",
    "convergence_order",
    "second_moment",
    "StepDiagnostics",
    "step_diagnostics",
    "JacobianSpectrum",
    "jacobian_spectrum",
    "nll_vs_eps",
    "likelihood_work_precision",
    "sample_error_vs_eps",
]

KINDS = ("strong", "weak", "ode")


@dataclass
class ConvergenceResult:
    """What `convergence_order` returns.

    Attributes:
        solver: The solver measured.
        kind: `"strong"`, `"weak"` or `"ode"`.
        steps: The step counts, increasing.
        step_sizes: $h = (T - \\epsilon)/\\text{steps}$ (in t; the diffusion samplers' grids are not
            uniform in t, and h is then their mean step).
        errors: The error at each step count.
        errors_ci: `(low, high)` 95% Monte-Carlo interval of each error.
        nfe: Score evaluations of each solve.
        order: The fitted order.
        order_ci: Its 95% bootstrap interval.
        used: Indices of `steps` the fit used (the resolved, asymptotic range).
        reference: What the errors are measured against.
        settings: n, seed, eps, and the rest.
    """

    solver: str
    kind: str
    steps: list[int]
    step_sizes: list[float]
    errors: list[float]
    errors_ci: list[tuple[float, float]]
    nfe: list[int]
    order: float
    order_ci: tuple[float, float]
    used: list[int]
    reference: str
    settings: dict[str, Any] = field(default_factory=dict)

    def to_markdown(self) -> str:
        """A table of step counts, h, NFE, errors with intervals, and the fitted order."""
        lines = [
            f"{self.solver}, {self.kind} error against {self.reference}",
            "",
            "| steps | h | NFE | error | 95% interval | in fit |",
            "| ---: | ---: | ---: | ---: | --- | :---: |",
        ]
        for i, k in enumerate(self.steps):
            lo, hi = self.errors_ci[i]
            lines.append(
                f"| {k} | {self.step_sizes[i]:.3g} | {self.nfe[i]} | {self.errors[i]:.3e} | "
                f"[{lo:.2e}, {hi:.2e}] | {'yes' if i in self.used else 'no'} |"
            )
        lines += [
            "",
            f"fitted order {self.order:.3f}, 95% interval [{self.order_ci[0]:.3f}, {self.order_ci[1]:.3f}]",
        ]
        return "\n".join(lines) + "\n"


def second_moment(x: Tensor) -> Tensor:
    r"""The test function $\varphi(x) = \|x\|^2$ (summed over the event), shape `(B,)`.

    Args:
        x: Samples `(B, *event)`.
    """
    return x.flatten(1).square().sum(1)


def _exact_second_moment(mixture: GaussianMixture, t: float, sde: SDE) -> float:
    m = mixture.marginal(t, sde)
    var = m.stds.to(torch.float64) ** 2
    if var.dim() == 1:
        var = var[:, None].expand_as(m.means)
    per = (m.means.to(torch.float64) ** 2 + var).sum(1)
    return float((m.weights.to(torch.float64) * per).sum())


def convergence_order(
    score: Score,
    sde: SDE,
    solver: str,
    *,
    steps: Sequence[int],
    kind: str = "strong",
    reference: GaussianMixture | None = None,
    n: int = 2000,
    seed: int = 0,
    eps: float = 1e-3,
    test_fn: Callable[[Tensor], Tensor] | None = None,
    exact_value: float | None = None,
    reference_steps: int | None = None,
    floor_factor: float = 4.0,
    bootstrap: int = 500,
    event_shape: tuple[int, ...] | None = None,
) -> ConvergenceResult:
    r"""Measure `solver`'s error at each of `steps` and fit its order of convergence.

    Args:
        score: The score.
        sde: The forward SDE.
        solver: A fixed-step solver from `solvers()`.
        steps: Step counts, at least three, strictly increasing (e.g. `[16, 32, 64, 128]`).
        kind: `"strong"` (stochastic solvers), `"weak"` or `"ode"` (deterministic solvers).
        reference: For `"weak"`: the `GaussianMixture` whose marginal at eps gives
            $\mathbb{E}[\varphi]$ (or pass `exact_value`).
        n: Sample paths (float64, drawn from the prior with `seed`).
        seed: Seeds the prior draws and the Brownian path.
        eps: Final time of every solve; keep it where the drift is smooth (the default 1e-3 on ring2d).
        test_fn: $\varphi$ for `"weak"`, mapping `(B, *event)` to `(B,)`; default `second_moment`
            (whose exact value under a mixture is computed here).
        exact_value: $\mathbb{E}_{p_\epsilon}[\varphi]$ when `reference` cannot give it.
        reference_steps: Steps of the fine strong reference (default 16 x the largest of `steps`).
        floor_factor: Strong and ode errors below this many times the reference's error scale
            are left out of the fit.
        bootstrap: Resamples of the paths for the order's interval.
        event_shape: Shape of one sample (default: the score's, or the reference's).

    Raises:
        ValueError: On fewer than three step counts, counts not strictly increasing, a kind the
            solver cannot do (strong error of a deterministic solver, ode error of a stochastic
            one, anything for an adaptive one), a missing exact value, or a test function returning
            the wrong shape. All checks run before any solve.
    """
    info = get_solver(solver)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
    steps = list(steps)
    if len(steps) < 3:
        raise ValueError(f"steps needs at least three step counts to fit an order, got {steps!r}")
    for k in steps:
        check_positive(k, "steps", integer=True)
    if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
        raise ValueError(f"steps must be strictly increasing, got {steps!r}")
    if info.adaptive:
        raise ValueError(f"{solver} is adaptive: convergence orders are measured on fixed-step solvers")
    if kind == "strong" and not info.stochastic:
        raise ValueError(f"{solver} is deterministic: it has no strong error; use kind='ode'")
    if kind == "ode" and info.stochastic:
        raise ValueError(f"{solver} is stochastic: use kind='strong' or 'weak', not 'ode'")
    check_positive(n, "n", integer=True)
    check_positive(bootstrap, "bootstrap", integer=True)
    if event_shape is None:
        event_shape = getattr(score, "event_shape", None)
        if event_shape is None and reference is not None:
            event_shape = (reference.dim,)
    if event_shape is None:
        raise ValueError("event_shape is needed: this score does not say its event shape")
    event_shape = tuple(event_shape)
    phi = second_moment if test_fn is None else test_fn
    if kind == "weak":
        if exact_value is None:
            if reference is None or test_fn is not None:
                raise ValueError(
                    "kind='weak' needs E[test_fn] under p_eps: give exact_value, or a GaussianMixture "
                    "reference with the default test function"
                )
            exact_value = _exact_second_moment(reference, eps, sde)
        probe = phi(torch.zeros(2, *event_shape, dtype=torch.float64))
        if not isinstance(probe, Tensor) or probe.shape != (2,):
            shape = tuple(probe.shape) if isinstance(probe, Tensor) else type(probe).__name__
            raise ValueError(f"test_fn must map (B, *event) to shape (B,); on B = 2 it returned {shape}")
    if reference_steps is None:
        reference_steps = 16 * steps[-1]
    check_positive(reference_steps, "reference_steps", integer=True)

    gen = torch.Generator().manual_seed(seed)
    x_T = sde.prior_sample((n, *event_shape), generator=gen, dtype=torch.float64)

    def solve(k: int) -> Any:
        return sample(score, sde, x_T=x_T, solver=solver, steps=k, eps=eps, seed=seed)

    per_path: list[Tensor] = []
    nfe: list[int] = []
    if kind == "weak":
        for k in steps:
            out = solve(k)
            per_path.append(phi(out.samples).to(torch.float64))
            nfe.append(out.nfe)
        ref_desc = f"E[test_fn] under the exact p_eps = {exact_value:.6g}"
    else:
        if kind == "strong":
            ref_solver = info.reference
            ref = sample(
                score, sde, x_T=x_T, solver=ref_solver, steps=reference_steps, eps=eps, seed=seed
            ).samples
            ref_desc = f"{ref_solver} at {reference_steps} steps on the same Brownian path"
        else:
            ref = sample(score, sde, x_T=x_T, solver="ode:dopri8", rtol=1e-12, atol=1e-12, eps=eps).samples
            ref_desc = "float64 ode:dopri8 at rtol = atol = 1e-12"
        for k in steps:
            out = solve(k)
            per_path.append((out.samples - ref).flatten(1).norm(dim=1).to(torch.float64))
            nfe.append(out.nfe)
    floor: float | None = None

    def errors_of(idx: Tensor | None) -> list[float]:
        vals = []
        for v in per_path:
            w = v if idx is None else v[idx]
            vals.append(abs(float(w.mean()) - exact_value) if kind == "weak" else float(w.mean()))
        return vals

    errors = errors_of(None)
    ses = [float(v.std() / math.sqrt(n)) for v in per_path]
    errors_ci = [(max(e - 1.96 * s, 0.0), e + 1.96 * s) for e, s in zip(errors, ses, strict=True)]
    h = [(sde.T - eps) / k for k in steps]
    if kind == "weak":
        used = [i for i, (e, s) in enumerate(zip(errors, ses, strict=True)) if e > 3 * s]
    else:
        # The reference's own error scale: extrapolate the finest error to the reference's step
        # with the slope of the two finest points, and keep errors well above it.
        if kind == "strong":
            slope = (
                math.log(errors[-2] / errors[-1]) / math.log(steps[-1] / steps[-2]) if errors[-1] > 0 else 1.0
            )
            floor = errors[-1] * (steps[-1] / reference_steps) ** max(slope, 0.5)
        else:
            floor = 1e-9  # dopri8 at 1e-12 in float64
        used = [i for i, e in enumerate(errors) if e > floor_factor * floor]
    if len(used) < 2:
        raise ValueError(
            f"only {len(used)} of the step counts {steps} have an error above the "
            f"{'Monte-Carlo' if kind == 'weak' else 'reference'} floor: use coarser steps or more paths"
        )
    order = _slope([h[i] for i in used], [errors[i] for i in used])
    g = torch.Generator().manual_seed(seed + 1)
    boots = []
    for _ in range(bootstrap):
        idx = torch.randint(0, n, (n,), generator=g)
        e = errors_of(idx)
        if all(e[i] > 0 for i in used):
            boots.append(_slope([h[i] for i in used], [e[i] for i in used]))
    b = torch.tensor(boots, dtype=torch.float64)
    order_ci = (
        (float(b.quantile(0.025)), float(b.quantile(0.975))) if len(boots) > 10 else (math.nan, math.nan)
    )
    settings = {
        "n": n, "seed": seed, "eps": eps, "reference_steps": reference_steps if kind == "strong" else None,
        "floor": floor, "floor_factor": floor_factor, "bootstrap": len(boots),
    }  # fmt: skip
    return ConvergenceResult(
        solver, kind, steps, h, errors, errors_ci, nfe, order, order_ci, used, ref_desc, settings
    )


def _slope(h: list[float], e: list[float]) -> float:
    """Least-squares slope of log e against log h."""
    x = torch.tensor([math.log(v) for v in h], dtype=torch.float64)
    y = torch.tensor([math.log(v) for v in e], dtype=torch.float64)
    x = x - x.mean()
    return float((x * (y - y.mean())).sum() / (x * x).sum())


# --- stiffness and step-size diagnostics ---


@dataclass
class StepDiagnostics:
    """Where an adaptive PF-ODE solve spends its steps (from torchdiffeq's step callbacks).

    Attributes:
        accepted: `(t0, h)` of every accepted step, forward time t0 at the step's start, h > 0.
        rejected: `(t0, h)` of every rejected attempt.
        nfe: Score evaluations of the solve.
        settings: solver, rtol, atol, eps, n.
    """

    accepted: list[tuple[float, float]]
    rejected: list[tuple[float, float]]
    nfe: int
    settings: dict[str, Any]

    def attempts_per_unit_time(self, bins: Sequence[float]) -> list[float]:
        """Attempted steps (accepted and rejected) starting in each bin `[bins[i], bins[i+1])`, per
        unit of t (bins increasing; the last bin includes its right end)."""
        counts = []
        for lo, hi in zip(bins, bins[1:], strict=False):
            k = sum(
                1 for t, _ in self.accepted + self.rejected if lo <= t < hi or (hi == bins[-1] and t == hi)
            )
            counts.append(k / (hi - lo))
        return counts

    def nfe_per_unit_time(self, bins: Sequence[float]) -> list[float]:
        """Score evaluations per unit of t in each bin: the solve's NFE shared out in proportion to the
        attempted steps that start in the bin (each attempt of an explicit RK method costs the same)."""
        attempts = len(self.accepted) + len(self.rejected)
        return [a * self.nfe / attempts for a in self.attempts_per_unit_time(bins)] if attempts else []


def step_diagnostics(
    score: Score,
    sde: SDE,
    *,
    solver: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    n: int = 1000,
    seed: int = 0,
    eps: float = 1e-3,
    event_shape: tuple[int, ...] | None = None,
) -> StepDiagnostics:
    r"""Solve the probability-flow ODE with an adaptive torchdiffeq method and record every step.

    torchdiffeq's `callback_accept_step` / `callback_reject_step` hooks record the start time and
    size of each accepted and rejected step, so the result shows where the solver spends its work.

    Args:
        score: A `Score`, called as `score(x, t)` with `t` of shape `(B,)`.
        sde: The forward SDE.
        solver: An adaptive Runge–Kutta method of torchdiffeq: `"dopri5"`, `"dopri8"`, `"bosh3"`,
            `"fehlberg2"` or `"adaptive_heun"`.
        rtol: Relative tolerance.
        atol: Absolute tolerance.
        n: Prior draws in the batch (torchdiffeq takes one step size for the whole batch).
        seed: Seed of the prior draws.
        eps: Final forward time.
        event_shape: Shape of one sample; taken from the score when it says it (`AnalyticScore` does).

    Returns:
        A `StepDiagnostics`.

    Raises:
        ValueError: If `solver` is not an adaptive Runge–Kutta method of torchdiffeq.
    """
    from .adapters import ProbabilityFlowODE, odeint
    from .samplers.generic import run_pf_ode
    from .samplers.registry import solvers

    valid = [s.name.removeprefix("ode:") for s in solvers() if s.adaptive and s.run is run_pf_ode]
    solver = solver.removeprefix("ode:") if isinstance(solver, str) else solver
    if solver not in valid:
        raise ValueError(
            f"solver must be an adaptive torchdiffeq method ({', '.join(valid)}), got {solver!r}"
        )
    check_positive(rtol, "rtol")
    check_positive(atol, "atol")
    event_shape = tuple(event_shape or getattr(score, "event_shape", None) or ())
    if not event_shape:
        raise ValueError("event_shape is needed: this score does not say its event shape")

    class _Recording(ProbabilityFlowODE):
        def __init__(self) -> None:
            super().__init__(score, sde, eps)
            self.accepted_steps: list[tuple[float, float]] = []
            self.rejected_steps: list[tuple[float, float]] = []

        def callback_accept_step(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
            super().callback_accept_step(t0, y0, dt)
            self.accepted_steps.append((float(t0), abs(float(dt))))

        def callback_reject_step(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
            super().callback_reject_step(t0, y0, dt)
            self.rejected_steps.append((float(t0), abs(float(dt))))

    ode = _Recording()
    x_T = sde.prior_sample((n, *event_shape), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        odeint(ode, x_T, torch.tensor([sde.T, eps]), method=solver, rtol=rtol, atol=atol)
    settings = {"solver": solver, "rtol": rtol, "atol": atol, "eps": eps, "n": n, "seed": seed}
    return StepDiagnostics(ode.accepted_steps, ode.rejected_steps, ode.nfe, settings)


@dataclass
class JacobianSpectrum:
    """Eigenvalues of the PF-ODE drift's Jacobian along trajectories.

    Attributes:
        times: Forward times, from T down to eps, shape `(m,)`.
        spectral_radius: Per time, the median over paths of max |lambda|, shape `(m,)`.
        min_real: Per time, the median over paths of the most negative real part, shape `(m,)`.
        max_real: Per time, the median over paths of the largest real part, shape `(m,)`.
    """

    times: Tensor
    spectral_radius: Tensor
    min_real: Tensor
    max_real: Tensor


def jacobian_spectrum(
    score: Score,
    sde: SDE,
    *,
    n: int = 64,
    points: int = 60,
    seed: int = 0,
    eps: float = 1e-3,
    event_shape: tuple[int, ...] | None = None,
) -> JacobianSpectrum:
    r"""Eigenvalues of $\partial f_{PF}/\partial x$, $f_{PF}(x, t) = f(t)x - \tfrac12 g(t)^2 s(x, t)$,
    along `n` float64 PF-ODE trajectories at `points` times spaced uniformly in log t from T to eps.

    The full Jacobian is formed (d vector-Jacobian products per point), so this is for small d.
    Reads where the problem stiffens: as t -> 0 the score's Jacobian grows like
    $-1/(\alpha_t^2 s^2 + \sigma_t^2)$ for a component of width s.

    Args:
        score: A `Score`, called as `score(x, t)` with `t` of shape `(B,)`; differentiable in `x`.
        sde: The forward SDE.
        n: Number of trajectories (prior draws).
        points: Number of times, log-spaced from T down to eps.
        seed: Seed of the prior draws.
        eps: The last time.
        event_shape: Shape of one sample; taken from the score when it says it.

    Returns:
        A `JacobianSpectrum`.

    Raises:
        ValueError: If the event shape is unknown or has more than 256 dimensions.
    """
    event_shape = tuple(event_shape or getattr(score, "event_shape", None) or ())
    if not event_shape:
        raise ValueError("event_shape is needed: this score does not say its event shape")
    d = math.prod(event_shape)
    if d > 256:
        raise ValueError(f"jacobian_spectrum forms the full d x d Jacobian; d = {d} is too large (<= 256)")
    check_positive(points, "points", integer=True)
    times = torch.logspace(math.log10(sde.T), math.log10(eps), points, dtype=torch.float64)
    x_T = sde.prior_sample(
        (n, *event_shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    from .adapters import ProbabilityFlowODE, odeint

    ode = ProbabilityFlowODE(score, sde, eps)
    with torch.no_grad():
        states = odeint(ode, x_T, times, method="dopri5", rtol=1e-8, atol=1e-8).ys
    rad, lo, hi = [], [], []
    for t, x in zip(times, states, strict=True):
        xf = x.reshape(n, d).clone().requires_grad_(True)
        tb = torch.full((n,), float(t), dtype=x.dtype)
        with torch.enable_grad():
            s = score(xf.reshape(n, *event_shape), tb).reshape(n, d)
            drift = sde.pf_drift(xf, tb, s)
            rows = [torch.autograd.grad(drift[:, i].sum(), xf, retain_graph=i < d - 1)[0] for i in range(d)]
        jac = torch.stack(rows, 1)  # (n, d, d): jac[b, i, j] = d drift_i / d x_j
        ev = torch.linalg.eigvals(jac)
        rad.append(ev.abs().max(1).values.median())
        lo.append(ev.real.min(1).values.median())
        hi.append(ev.real.max(1).values.median())
    return JacobianSpectrum(times, torch.stack(rad), torch.stack(lo), torch.stack(hi))


# --- truncation and tolerance studies ---


def nll_vs_eps(
    score: Score,
    sde: SDE,
    x: Tensor,
    eps_values: Sequence[float],
    *,
    mixture: GaussianMixture | None = None,
    **likelihood_kwargs: Any,
) -> list[dict[str, float]]:
    r"""Mean NLL (nats) of `x` under the model's $p_\epsilon$ for each eps: how the truncation moves it.

    Args:
        score: A `Score`.
        sde: The forward SDE.
        x: Points `(B, *event)`.
        eps_values: The start times to evaluate $\log p_\epsilon$ at.
        mixture: If given, also the analytic NLL of `x` under its $p_\epsilon$ and the error.
        **likelihood_kwargs: Passed on to `log_likelihood` (solver, tolerances, divergence, ...).

    Returns:
        One dict per eps: `eps`, `nll`, `nfe`, `seconds`, and with `mixture` also `nll_analytic`
        and `error`.
    """
    from .likelihood import log_likelihood

    rows = []
    for e in eps_values:
        res = log_likelihood(score, sde, x, eps=e, **likelihood_kwargs)
        row = {"eps": e, "nll": float(-res.log_prob.double().mean()), "nfe": res.nfe, "seconds": res.seconds}
        if mixture is not None:
            truth = mixture.log_prob_t(x.double(), e, sde)
            row["nll_analytic"] = float(-truth.mean())
            row["error"] = float((res.log_prob.double().cpu() - truth.cpu()).abs().mean())
        rows.append(row)
    return rows


def likelihood_work_precision(
    score: Score,
    sde: SDE,
    x: Tensor,
    mixture: GaussianMixture,
    *,
    adaptive: Sequence[str] = ("dopri5", "bosh3", "adaptive_heun"),
    tolerances: Sequence[float] = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6),
    fixed: Sequence[str] = ("rk4",),
    steps: Sequence[int] = (4, 8, 16, 32, 64),
    eps: float = 1e-5,
    exact_prior: bool = True,
) -> list[dict[str, Any]]:
    r"""Error of `log_likelihood` against the analytic log p_eps, with NFE and seconds, per solver and budget.

    With `exact_prior` (default) the solve ends on the mixture's exact log p_T, so the error is the
    solver's alone; otherwise the SDE's prior adds its fixed mismatch (about 2e-4 nats on ring2d/VP).
    Rows: solver, budget (tolerance or steps), error (mean |log p - analytic|, nats), nfe, seconds.

    Args:
        score: A `Score`.
        sde: The forward SDE.
        x: Points `(B, *event)`; float64 keeps round-off below the tightest tolerances.
        mixture: The analytic distribution whose $\log p_\epsilon$ is the answer.
        adaptive: Adaptive torchdiffeq methods to run at each of `tolerances` (rtol = atol).
        tolerances: Tolerances for the adaptive methods.
        fixed: Fixed-step torchdiffeq methods to run at each of `steps`.
        steps: Step counts for the fixed-step methods.
        eps: Start time of the likelihood solve.
        exact_prior: Use the mixture's exact $\log p_T$ as the prior term.

    Returns:
        A list of row dicts, adaptive methods first.
    """
    from .likelihood import log_likelihood

    truth = mixture.log_prob_t(x.double(), eps, sde).cpu()
    rows: list[dict[str, Any]] = []

    def add(solver: str, budget: float, **kw: Any) -> None:
        if exact_prior:
            kw["prior_log_prob"] = lambda z: mixture.log_prob_t(z, sde.T, sde).to(z.dtype)
        res = log_likelihood(score, sde, x, eps=eps, solver=solver, divergence="exact", **kw)
        err = float((res.log_prob.double().cpu() - truth).abs().mean())
        rows.append(
            {"solver": solver, "budget": budget, "error": err, "nfe": res.nfe, "seconds": res.seconds}
        )

    for solver in adaptive:
        for tol in tolerances:
            add(solver, tol, rtol=tol, atol=tol)
    for solver in fixed:
        for k in steps:
            add(solver, k, steps=k)
    return rows


def sample_error_vs_eps(
    score: Score,
    sde: SDE,
    mixture: GaussianMixture,
    eps_values: Sequence[float],
    *,
    solver: str = "ode:dopri5",
    n: int = 5000,
    seed: int = 0,
    **sample_kwargs: Any,
) -> list[dict[str, float]]:
    r"""Samples at each eps judged against p_0 (the data) and against p_eps: what stopping early costs.

    Rows: eps, gap_to_data (mean log p_0 gap, nats), gap_to_data_se, gap_to_p_eps, gap_to_p_eps_se, nfe.
    The gap to the data measures the truncation bias; the gap to p_eps the solver's own error.

    Args:
        score: A `Score`.
        sde: The forward SDE.
        mixture: The analytic data distribution ($p_0$ and every $p_\epsilon$ in closed form).
        eps_values: The final times to sample at.
        solver: Any solver `sample` accepts.
        n: Samples per eps.
        seed: Seed of the prior draws (the same for every eps).
        **sample_kwargs: Passed on to `sample` (steps or tolerances, ...).

    Returns:
        One row dict per eps.
    """
    from . import metrics

    rows = []
    for e in eps_values:
        out = sample(
            score, sde, n, event_shape=(mixture.dim,), solver=solver, eps=e, seed=seed, **sample_kwargs
        )
        to_eps = metrics.log_prob_gap(out.samples, mixture, e, sde)
        to_data = metrics.log_prob_gap(out.samples, mixture, 0.0, sde)  # p_0 is the data itself
        rows.append({
            "eps": e, "gap_to_data": to_data.value, "gap_to_data_se": to_data.se,
            "gap_to_p_eps": to_eps.value, "gap_to_p_eps_se": to_eps.se, "nfe": out.nfe,
        })  # fmt: skip
    return rows
