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
  `ode:dopri8` solve at rtol = atol = 1e-12 from the same prior draws (a float32 network: a float32
  solve at 1e-6, so errors below about 1e-5 are left out of the fit).

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

from .. import memory
from .._validation import check_positive, check_seed
from ..analytic import GaussianMixture
from ..samplers.registry import get_solver
from ..sampling import prior_draws, sample
from ..scores import Score
from ..sde import SDE

__all__ = ["KINDS", "ConvergenceResult", "convergence_order", "second_moment"]

KINDS = ("strong", "weak", "ode")


ASYMPTOTIC_SPREAD = 0.3
"""The most the local slopes of a fit may differ for `ConvergenceResult.asymptotic`."""


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
        local_orders: The slope between each pair of neighbouring step counts in the fit.
        asymptotic: Whether those local slopes agree (spread <= `ASYMPTOTIC_SPREAD`): if not, the step
            counts are still pre-asymptotic and the fitted "order" is a blend of regimes, which
            `to_markdown` says (the bootstrap interval covers sampling noise only, not that bias).
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
    local_orders: list[float] = field(default_factory=list)
    asymptotic: bool = True

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
        if not self.asymptotic:
            local = ", ".join(f"{v:.2f}" for v in self.local_orders)
            lines += [
                "",
                f"warning: not in the asymptotic range: the local slopes ({local}) still change by more than "
                f"{ASYMPTOTIC_SPREAD}, so the fit blends regimes and its interval (sampling noise only) does not "
                "cover that bias; add larger step counts",
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
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
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
        n: Sample paths (drawn from the prior with `seed`).
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
        dtype: dtype of the paths. Default: a network score's parameter dtype (a float32
            `ScoreModel` runs in float32, so its ode errors floor near 1e-5), else float64.
        device: Where the paths are solved. Default: a network score's device, else the CPU.
        progress: A progress bar over the solves (the reference and each step count); on by
            default, hidden where stderr is not a terminal.

    Raises:
        ValueError: On fewer than three step counts, counts not strictly increasing, a kind the
            solver cannot do (strong error of a deterministic solver, ode error of a stochastic
            one, anything for an adaptive one), a missing exact value, or a test function returning
            the wrong shape. All checks run before any solve.
    """
    info = get_solver(solver)
    steps, event_shape = _check_request(info, kind, steps, n, bootstrap, score, reference, event_shape)
    phi = second_moment if test_fn is None else test_fn
    if kind == "weak":
        exact_value = _weak_reference(reference, test_fn, exact_value, phi, eps, sde, event_shape)
    reference_steps = 16 * steps[-1] if reference_steps is None else reference_steps
    check_positive(reference_steps, "reference_steps", integer=True)

    seed = check_seed(seed)
    dtype, device = _placement(score, dtype, device)
    memory.check_solve(
        f"convergence_order(n={n})",
        n,
        math.prod(event_shape),
        dtype,
        device,
        adaptive=False,
        stochastic=info.stochastic,
        stored_states=2 * len(steps) + 2,
    )
    x_T = prior_draws(sde, (n, *event_shape), seed, dtype=dtype, device=device)
    per_path, nfe, ref_desc = _errors_per_path(
        score, sde, info, kind, x_T, steps, eps, seed, phi, exact_value, reference_steps, progress
    )
    errors = _errors(per_path, kind, exact_value)
    ses = [float(v.std() / math.sqrt(n)) for v in per_path]
    errors_ci = [(max(e - 1.96 * s, 0.0), e + 1.96 * s) for e, s in zip(errors, ses, strict=True)]
    h = [(sde.T - eps) / k for k in steps]
    floor = None if kind == "weak" else _reference_floor(kind, steps, errors, reference_steps, dtype)
    if kind == "weak":
        used = [i for i, (e, s) in enumerate(zip(errors, ses, strict=True)) if e > 3 * s]
    else:
        used = [i for i, e in enumerate(errors) if e > floor_factor * floor]
    if (
        len(used) < 3
    ):  # a line through two points fits them exactly, and its interval claims a precision it lacks
        raise ValueError(
            f"only {len(used)} of the step counts {steps} have an error above the "
            f"{'Monte-Carlo' if kind == 'weak' else 'reference'} floor, and an order needs three: use coarser "
            "steps or more paths"
        )
    order = _slope([h[i] for i in used], [errors[i] for i in used])
    local = [
        math.log(errors[i] / errors[j]) / math.log(h[i] / h[j])
        if errors[i] > 0 and errors[j] > 0
        else math.nan
        for i, j in zip(used[:-1], used[1:], strict=True)
    ]
    order_ci, resamples = _bootstrap_order(per_path, kind, exact_value, h, used, n, seed, bootstrap)
    settings = {
        "n": n, "seed": seed, "eps": eps, "reference_steps": reference_steps if kind == "strong" else None,
        "floor": floor, "floor_factor": floor_factor, "bootstrap": resamples,
        "dtype": str(dtype).removeprefix("torch."), "device": str(device),
    }  # fmt: skip
    spread = max(local) - min(local) if all(math.isfinite(v) for v in local) else math.inf
    return ConvergenceResult(
        solver, kind, steps, h, errors, errors_ci, nfe, order, order_ci, used, ref_desc, settings,
        local_orders=local, asymptotic=spread <= ASYMPTOTIC_SPREAD,
    )  # fmt: skip


def _placement(
    score: Score, dtype: torch.dtype | None, device: torch.device | str | None
) -> tuple[torch.dtype, torch.device]:
    """The paths' dtype and device: as given, else a network score's own, else float64 on the CPU."""
    param = None
    if isinstance(score, torch.nn.Module):
        param = next((p for p in score.parameters() if p.is_floating_point()), None)
    if dtype is None:
        dtype = param.dtype if param is not None else torch.float64
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a real floating-point torch dtype, got {dtype!r}")
    if device is None:
        device = param.device if param is not None else "cpu"
    return dtype, torch.device(device)


def _check_request(
    info: Any,
    kind: str,
    steps: Sequence[int],
    n: int,
    bootstrap: int,
    score: Score,
    reference: GaussianMixture | None,
    event_shape: tuple[int, ...] | None,
) -> tuple[list[int], tuple[int, ...]]:
    """Every check `convergence_order` makes before any solve; returns the steps and the event shape."""
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
        raise ValueError(f"{info.name} is adaptive: convergence orders are measured on fixed-step solvers")
    if kind == "strong" and not info.stochastic:
        raise ValueError(f"{info.name} is deterministic: it has no strong error; use kind='ode'")
    if kind == "ode" and info.stochastic:
        raise ValueError(f"{info.name} is stochastic: use kind='strong' or 'weak', not 'ode'")
    check_positive(n, "n", integer=True)
    check_positive(bootstrap, "bootstrap", integer=True)
    if event_shape is None:
        event_shape = getattr(score, "event_shape", None)
        if event_shape is None and reference is not None:
            event_shape = (reference.dim,)
    if event_shape is None:
        raise ValueError("event_shape is needed: this score does not say its event shape")
    return steps, tuple(event_shape)


def _weak_reference(
    reference: GaussianMixture | None,
    test_fn: Callable[[Tensor], Tensor] | None,
    exact_value: float | None,
    phi: Callable[[Tensor], Tensor],
    eps: float,
    sde: SDE,
    event_shape: tuple[int, ...],
) -> float:
    """The exact E[phi] under p_eps that weak errors read against, after checking `phi`'s shape."""
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
    return exact_value


def _errors_per_path(
    score: Score,
    sde: SDE,
    info: Any,
    kind: str,
    x_T: Tensor,
    steps: list[int],
    eps: float,
    seed: int,
    phi: Callable[[Tensor], Tensor],
    exact_value: float | None,
    reference_steps: int,
    progress: bool = True,
) -> tuple[list[Tensor], list[int], str]:
    """Per path and step count: phi(X_h) (weak) or |X_h - X_ref| (strong, ode); the NFE; the reference."""
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(steps) + (kind != "weak"), desc="convergence", unit="solve", dynamic_ncols=True,
                   disable=None)  # fmt: skip

    def solve(**kw: Any) -> Any:
        if kind == "strong" and "noise_removal" in get_solver(kw["solver"]).options:
            kw["noise_removal"] = False  # the plain scheme: every step a step of the SDE
        if bar is not None:
            bar.set_postfix_str(f"{kw['solver']} {kw.get('steps', 'adaptive')} steps", refresh=True)
        out = sample(score, sde, x_T=x_T, eps=eps, seed=seed, progress=False, **kw)
        if bar is not None:
            bar.update(1)
        return out

    if kind == "weak":
        ref, ref_desc = None, f"E[test_fn] under the exact p_eps = {exact_value:.6g}"
    elif kind == "strong":
        ref = solve(solver=info.reference, steps=reference_steps).samples
        ref_desc = f"{info.reference} at {reference_steps} steps on the same Brownian path"
    else:
        tol = 1e-12 if x_T.dtype == torch.float64 else 1e-6  # float32 cannot resolve more
        ref = solve(solver="ode:dopri8", rtol=tol, atol=tol).samples
        ref_desc = f"{str(x_T.dtype).removeprefix('torch.')} ode:dopri8 at rtol = atol = {tol:g}"
    per_path, nfe = [], []
    for k in steps:
        out = solve(solver=info.name, steps=k)
        value = phi(out.samples) if ref is None else (out.samples - ref).flatten(1).norm(dim=1)
        per_path.append(value.to(torch.float64))
        nfe.append(out.nfe)
    if bar is not None:
        bar.close()
    return per_path, nfe, ref_desc


def _errors(
    per_path: list[Tensor], kind: str, exact_value: float | None, idx: Tensor | None = None
) -> list[float]:
    """The error at each step count (optionally over a resample `idx` of the paths)."""
    vals = []
    for v in per_path:
        w = v if idx is None else v[idx]
        vals.append(abs(float(w.mean()) - exact_value) if kind == "weak" else float(w.mean()))
    return vals


def _reference_floor(
    kind: str, steps: list[int], errors: list[float], reference_steps: int, dtype: torch.dtype
) -> float:
    """The reference's own error scale: strong errors are extrapolated to the reference's step with
    the slope of the two finest points; dopri8 at 1e-12 in float64 is at 1e-9, at 1e-6 in float32
    (with float32 round-off in every step) at about 1e-5."""
    if kind != "strong":
        return 1e-9 if dtype == torch.float64 else 1e-5
    slope = math.log(errors[-2] / errors[-1]) / math.log(steps[-1] / steps[-2]) if errors[-1] > 0 else 1.0
    return errors[-1] * (steps[-1] / reference_steps) ** max(slope, 0.5)


def _bootstrap_order(
    per_path: list[Tensor],
    kind: str,
    exact_value: float | None,
    h: list[float],
    used: list[int],
    n: int,
    seed: int,
    bootstrap: int,
) -> tuple[tuple[float, float], int]:
    """A 95% interval of the fitted order from resampling the paths; returns it and the resamples used."""
    g = torch.Generator().manual_seed(seed + 1)
    boots = []
    for _ in range(bootstrap):
        e = _errors(per_path, kind, exact_value, torch.randint(0, n, (n,), generator=g))
        if all(e[i] > 0 for i in used):
            boots.append(_slope([h[i] for i in used], [e[i] for i in used]))
    if len(boots) <= 10:
        return (math.nan, math.nan), len(boots)
    b = torch.tensor(boots, dtype=torch.float64)
    return (float(b.quantile(0.025)), float(b.quantile(0.975))), len(boots)


def _slope(h: list[float], e: list[float]) -> float:
    """Least-squares slope of log e against log h."""
    x = torch.tensor([math.log(v) for v in h], dtype=torch.float64)
    y = torch.tensor([math.log(v) for v in e], dtype=torch.float64)
    x = x - x.mean()
    return float((x * (y - y.mean())).sum() / (x * x).sum())
