r"""Truncation and tolerance studies: how the likelihood and the samples depend on eps and on the
solver's tolerance, against the analytic answer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .. import metrics
from ..analytic import GaussianMixture
from ..likelihood import log_likelihood
from ..sampling import sample
from ..scores import Score
from ..sde import SDE

__all__ = ["nll_vs_eps", "likelihood_work_precision", "sample_error_vs_eps"]


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
    rows = []
    for e in eps_values:
        with torch.no_grad():  # a measurement: no graph through the network's parameters
            res = log_likelihood(score, sde, x, eps=e, **{"progress": False, **likelihood_kwargs})
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
    truth = mixture.log_prob_t(x.double(), eps, sde).cpu()
    rows: list[dict[str, Any]] = []

    def add(solver: str, budget: float, **kw: Any) -> None:
        if exact_prior:
            kw["prior_log_prob"] = lambda z: mixture.log_prob_t(z, sde.T, sde).to(z.dtype)
        with torch.no_grad():
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
    rows = []
    for e in eps_values:
        out = sample(
            score,
            sde,
            n,
            event_shape=(mixture.dim,),
            solver=solver,
            eps=e,
            seed=seed,
            **{"progress": False, **sample_kwargs},
        )
        to_eps = metrics.log_prob_gap(out.samples, mixture, e, sde)
        to_data = metrics.log_prob_gap(out.samples, mixture, 0.0, sde)  # p_0 is the data itself
        rows.append({
            "eps": e, "gap_to_data": to_data.value, "gap_to_data_se": to_data.se,
            "gap_to_p_eps": to_eps.value, "gap_to_p_eps_se": to_eps.se, "nfe": out.nfe,
        })  # fmt: skip
    return rows
