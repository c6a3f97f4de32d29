r"""Exact log-likelihoods through the probability-flow ODE, and bits per dimension.

By the instantaneous change of variables, along a solution of $dx/dt = f(x, t)$,
$\frac{d}{dt}\log p_t(x(t)) = -\nabla\cdot f(x(t), t)$. Integrating from the data at $\epsilon$ up to $T$:

$$\log p_\epsilon(x) = \log p_T(x_T) + \int_\epsilon^T \nabla\cdot f(x(t), t)\,dt.$$

`log_likelihood` returns this density of the marginal at `eps` (not at 0); the two differ by
$O(\epsilon)$ and the tests report that distance separately. The integration runs data -> prior;
running it the other way (from a prior draw down to data) answers a different question.

References:
    Song et al., "Score-Based Generative Modeling through SDEs", ICLR 2021, Appendix D.2.
    Chen et al., "Neural Ordinary Differential Equations", NeurIPS 2018.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from . import distributed, memory
from ._keyed import fresh_seed, mix
from ._validation import check_batched, check_bool, check_positive, describe, seed_or_generator
from .adapters import LikelihoodODE, odeint
from .divergence import AUTO_EXACT_MAX_DIM, ESTIMATORS, Estimator, make_probes
from .errors import NonFiniteError
from .memory import format_bytes
from .samplers.registry import get_solver
from .sampling import _Progress
from .scores import Score, check_problem
from .sde import SDE

__all__ = [
    "LikelihoodResult", "log_likelihood", "bits_per_dim", "dataset_bits_per_dim", "DatasetBits", "standard_errors",
]  # fmt: skip


@dataclass
class LikelihoodResult:
    """What `log_likelihood` returns (all tensors `(B,)` unless noted).

    The tensors carry an autograd graph when grad mode was on and `x` or the score's parameters
    required grad (see `log_likelihood`'s `adjoint`); otherwise they are detached.

    Attributes:
        log_prob: $\\log p_\\epsilon(x)$ in nats (the mean over probes for Hutchinson).
        prior_term: $\\log p_T(x_T)$ under the prior used.
        delta_log_prob: $\\int_\\epsilon^T \\nabla\\cdot f\\,dt$ (mean over probes for Hutchinson).
        latent: $x_T$, shaped like `x`.
        nfe: Forward score evaluations (K probes share one).
        vjps: Vector-Jacobian products taken for the divergence.
        seconds: Wall-clock time of the solve.
        settings: Solver, tolerances, eps, divergence, probes, seed, dtype, device.
        std_error: Hutchinson or `"deflated"` with `probes > 1` (or `target_se`): the standard error of
            `log_prob` across probes, else None.
        per_probe: Hutchinson and `"deflated"`: `log_prob` for each probe, `(B, K)`; else None.
        probes_used: With `target_se`: the probes each point used, `(B,)` int64; else None.
    """

    log_prob: Tensor
    prior_term: Tensor
    delta_log_prob: Tensor
    latent: Tensor
    nfe: int
    vjps: int
    seconds: float
    settings: dict[str, Any]
    std_error: Tensor | None = None
    per_probe: Tensor | None = None
    probes_used: Tensor | None = None

    def __repr__(self) -> str:
        return (
            f"LikelihoodResult(log_prob={describe(self.log_prob)}, mean={self.log_prob.mean().item():.6g}, "
            f"nfe={self.nfe}, vjps={self.vjps}, seconds={self.seconds:.3g}, settings={self.settings})"
        )


def log_likelihood(
    score: Score,
    sde: SDE,
    x: Tensor,
    *,
    divergence: str = "exact",
    probes: int = 1,
    probe: str = "rademacher",
    solver: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    steps: int | None = None,
    eps: float = 1e-5,
    prior_log_prob: Callable[[Tensor], Tensor] | None = None,
    adjoint: bool = False,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
    progress: bool = True,
    gather: str = "all",
    target_se: float | None = None,
    max_probes: int = 1024,
) -> LikelihoodResult:
    r"""Log-density $\log p_\epsilon(x)$ in nats by integrating the PF-ODE from `eps` up to T.

    Args:
        score: A `Score`, `score(x, t)` with `t` of shape `(B,)`.
        sde: The forward SDE.
        x: Data `(B, *event)`, finite.
        divergence: `"exact"` (Jacobian trace), `"hutchinson"`, `"hutch++"` (Hutch++, Meyer et al.
            2021: a rank-k sketch taken exactly plus Hutchinson on the rest; 3k vector-Jacobian
            products per evaluation for `probes=k`), `"deflated"` (Rademacher Hutchinson with a
            rank-k control variate that keeps the diagonal exact, `divergence.deflated_divergence`;
            3k products for `probes=k`, k estimates), or `"auto"` (exact up to
            `AUTO_EXACT_MAX_DIM` = 64 dimensions, Hutchinson above).
        probes: Hutchinson probes per sample, fixed for the whole solve; their spread gives
            `std_error`. For `"hutch++"`: the sketch size k (one estimate, no `std_error`); for
            `"deflated"`: the sketch size k, with k residual probes whose spread gives `std_error`.
        probe: `"rademacher"` or `"gaussian"`.
        solver: A torchdiffeq method (`"dopri5"`, or with the `ode:` prefix). Fixed-step ones need `steps`.
        rtol: Relative tolerance (adaptive solvers).
        atol: Absolute tolerance (adaptive solvers).
        steps: Number of steps for a fixed-step solver.
        eps: Start time in (0, T); the result is the density of the marginal at `eps`.
        prior_log_prob: $\log p_T$; defaults to `sde.prior_log_prob`. The exact marginal at T
            (`lambda z: gm.log_prob_t(z, sde.T, sde)`) removes the prior mismatch.
        adjoint: How gradients flow when grad mode is on and `x` or the score's parameters require
            grad (the result then carries a graph; otherwise the solve runs under `no_grad`): False
            back-propagates through the solver's operations; True uses `torchdiffeq.odeint_adjoint`
            with the score's parameters as `adjoint_params` (memory independent of the number of
            steps). Gradients flow in one process (a distributed gather does not carry them).
            Evaluate a network under `torch.no_grad()`: its parameters require grad by default.
        seed: Seeds the Hutchinson probes: each point's are keyed by the seed and its index in `x`,
            so they do not depend on the batch around it.
        generator: A `torch.Generator` instead of `seed` (the seed is drawn from it; `settings["seed"]`
            reproduces the call).
        batch_size: Evaluate in chunks of at most this many points, in bounded memory. Fixed-step
            solvers give the same values (bit for bit on the CPU) as one batch; adaptive ones choose
            their steps per chunk (`nfe` is then the largest chunk's, `settings["nfe_per_chunk"]`
            has each).
        progress: A progress bar: over the points, chunk by chunk (with several chunks), else over
            the solve's time from `eps` to T. On by default; hidden where stderr is not a terminal.
        gather: Under `torch.distributed` (see `diffsolve.distributed`): each rank evaluates its
            shard of the points and the result is gathered on every rank (`"all"`) or on rank 0
            only (`"rank0"`; the others get their shard).
        target_se: With `"hutchinson"` or `"deflated"`: a standard error of about `target_se` nats per
            point, by Stein's two-stage procedure: a pilot of `SE_PILOT` (16) probes per point
            estimates its variance and so the number N it needs (at least `SE_MIN_PROBES` = 32, at
            most what `max_probes` leaves), then N fresh probes give `log_prob` and `std_error`, so
            that the error bar never comes from the draws that decided when to stop (a nominal 95%
            interval covers the exact value 94-95% of the time: docs/reliability.md). Probes come
            in rounds of `probes` (one solve of the points still short, its probes sharing each
            forward pass), keyed by the seed, the round and the point's global index.
            `probes_used` counts pilot and fresh probes, `per_probe` is None; no gradients.
        max_probes: The most probes (residual probes for `"deflated"`) a point may use with `target_se`,
            pilot included (at least 48: 16 pilot and 32 fresh).

    Returns:
        A `LikelihoodResult`.

    Raises:
        ValueError, TypeError: On bad arguments.
        NonFiniteError: If the score or the state becomes non-finite (names t and the solver).
        StepSizeError: If an adaptive solver's step underflows (names t and what to try).
    """
    if batch_size is not None:
        check_positive(batch_size, "batch_size", integer=True)
    x, divergence, info = _check_inputs(score, sde, x, eps, divergence, probes, probe, solver, batch_size)
    steps, rtol, atol = info.check_budget(
        steps, *((rtol, atol) if info.adaptive else (None, None)), fill_defaults=False
    )
    if prior_log_prob is None:
        prior_log_prob = sde.prior_log_prob
    elif not callable(prior_log_prob):
        raise TypeError(
            f"prior_log_prob must be callable as prior_log_prob(z) -> (B,), got {describe(prior_log_prob)}"
        )
    seed = seed_or_generator(seed, generator)
    check_bool(adjoint, "adjoint")
    check_bool(progress, "progress")
    estimator = ESTIMATORS.get(divergence)
    if target_se is not None:
        _check_target_se(target_se, max_probes, probes, estimator, divergence, _differentiable(score, x))
    if seed is None and estimator is not None:
        seed = fresh_seed()
    plan = _Plan(
        score=score, sde=sde, estimator=estimator, probes=probes, probe=probe, seed=seed, eps=eps,
        method=info.name.removeprefix("ode:"), name=info.name, adjoint=adjoint,
        budget={"rtol": rtol, "atol": atol} if info.adaptive else {"steps": steps},
        prior_log_prob=prior_log_prob, target_se=target_se, max_probes=max_probes,
    )  # fmt: skip
    settings = {
        "solver": info.name, "rtol": rtol, "atol": atol, "steps": steps, "eps": eps,
        "divergence": divergence, "probes": probes if estimator else None,
        "probe": probe if estimator else None, "seed": seed, "adjoint": adjoint,
        "dtype": str(x.dtype).removeprefix("torch."), "device": str(x.device), "sde": repr(sde),
    }  # fmt: skip
    if target_se is not None:
        settings.update(target_se=float(target_se), max_probes=int(max_probes))
    gather = distributed.check_gather(gather)
    chunks, ranks = distributed.local_chunks(x.shape[0], batch_size, f"x ({x.shape[0]} points)")
    if ranks > 1:
        settings["ranks"] = ranks
    if batch_size is not None:
        settings["batch_size"] = batch_size
    bar = _bar(chunks[-1][1] - chunks[0][0]) if progress and len(chunks) > 1 else None
    parts = []
    for r0, r1 in chunks:
        parts.append(_solve_chunk(plan, x[r0:r1], r0, time_bar=progress and len(chunks) == 1))
        if bar is not None:
            bar.update(r1 - r0)
            bar.set_postfix_str(f"nfe={parts[-1].nfe} per chunk", refresh=False)
    if bar is not None:
        bar.close()
    return _result(plan, parts, settings, x, gather, ranks)


@dataclass(frozen=True)
class _Plan:
    """A validated `log_likelihood` call: everything one chunk's solve reads.

    `estimator` is None for the exact trace; `method` is the torchdiffeq method, `name` the solver's
    name (for errors); `budget` is `{"rtol", "atol"}` or `{"steps"}`.
    """

    score: Score
    sde: SDE
    estimator: Estimator | None
    probes: int
    probe: str
    seed: int | None
    eps: float
    method: str
    name: str
    adjoint: bool
    budget: dict[str, Any]
    prior_log_prob: Callable[[Tensor], Tensor]
    target_se: float | None
    max_probes: int

    @property
    def divergence(self) -> str:
        return "exact" if self.estimator is None else self.estimator.name


@dataclass
class _Chunk:
    """One chunk's solve: `prior` (B,), `delta` (B,) or (B, width), `latent`; with `target_se`, each
    point's `mean` over all its probes, its standard error `se` and its probe `count`."""

    prior: Tensor
    delta: Tensor
    latent: Tensor
    nfe: int
    vjps: int
    seconds: float
    rounds: int = 1
    mean: Tensor | None = None
    se: Tensor | None = None
    count: Tensor | None = None


MAX_PROBES = 65_536
"""The most probes `target_se` may spend on a point (`max_probes` above it is refused: it would not end)."""


def _check_target_se(target_se, max_probes, probes, estimator, divergence, differentiable) -> None:
    """`target_se` needs an estimator with a spread, enough `max_probes`, and no gradients."""
    check_positive(target_se, "target_se")
    check_positive(max_probes, "max_probes", integer=True)
    if estimator is None or not estimator.has_spread:
        spread = " or ".join(repr(k) for k, e in ESTIMATORS.items() if e.has_spread)
        raise ValueError(f"target_se needs divergence={spread} (estimates with a spread), got {divergence!r}")
    least = probes * -(-SE_PILOT // probes) + probes * -(-SE_MIN_PROBES // probes)
    if max_probes < least:
        raise ValueError(
            f"max_probes must be at least {least} with target_se (a pilot of {SE_PILOT} probes and "
            f"{SE_MIN_PROBES} fresh ones, in rounds of probes={probes}), got {max_probes}"
        )
    if max_probes > MAX_PROBES:
        raise ValueError(
            f"max_probes must be at most {MAX_PROBES:,} (each round of probes is one more solve of the "
            f"likelihood ODE per point: {max_probes:,} would not end), got {max_probes:,}"
        )
    if differentiable:
        raise ValueError(
            "target_se gives no gradients (each point takes its own rounds): call it under torch.no_grad(), "
            "or use a fixed number of probes"
        )


def _result(plan: _Plan, parts: list[_Chunk], settings: dict[str, Any], x: Tensor, gather: str, ranks: int):
    """One `LikelihoodResult` from this rank's chunks (gathered from every rank under torch.distributed)."""
    if len(parts) > 1:
        settings["nfe_per_chunk"] = [p.nfe for p in parts]
    keys = ("prior", "delta", "latent") + (("mean", "se", "count") if plan.target_se is not None else ())
    cat = {k: torch.cat([getattr(p, k) for p in parts]) for k in keys}
    nfe, vjps = max(p.nfe for p in parts), sum(p.vjps for p in parts)
    seconds = sum(p.seconds for p in parts)
    if ranks > 1:  # the only collective: after every rank has solved its shard
        cat = {k: distributed.gather_rows(v, x.shape[0], gather) for k, v in cat.items()}
        per_rank = distributed.gather_numbers([nfe, vjps, seconds], x.device)
        nfe, vjps = int(max(r[0] for r in per_rank)), int(sum(r[1] for r in per_rank))
        seconds = max(r[2] for r in per_rank)
        settings["nfe_per_rank"] = [int(r[0]) for r in per_rank]
    per_probe = std_error = used = None
    delta = cat["delta"]
    if plan.target_se is not None:
        std_error, used = cat["se"], cat["count"]
        delta = cat["mean"] - cat["prior"]
        settings["rounds"] = max(p.rounds for p in parts)
    elif plan.estimator is not None and plan.estimator.has_spread:
        per_probe = cat["prior"][:, None] + delta
        if plan.probes > 1:
            std_error = per_probe.std(1) / math.sqrt(plan.probes)
        delta = delta.mean(1)
    elif plan.estimator is not None:
        delta = delta[:, 0]
    keep = _differentiable(plan.score, x)  # else detach: no graph is kept by accident

    def out(v: Tensor) -> Tensor:
        return v if keep else v.detach()

    return LikelihoodResult(
        log_prob=out(cat["prior"] + delta),
        prior_term=out(cat["prior"]),
        delta_log_prob=out(delta),
        latent=out(cat["latent"]),
        nfe=nfe,
        vjps=vjps,
        seconds=seconds,
        settings=settings,
        std_error=std_error,
        per_probe=None if per_probe is None else out(per_probe),
        probes_used=used,
    )


def _parameters(score: object) -> list[Tensor]:
    return list(score.parameters()) if isinstance(score, torch.nn.Module) else []


def _differentiable(score: object, x: Tensor) -> bool:
    """Whether the result should carry a graph: grad mode on, and `x` or the score's parameters need one."""
    return torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in _parameters(score)))


def _bar(total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=total, desc="log-likelihood", unit="point", leave=False, dynamic_ncols=True, disable=None
    )


SE_PILOT = 16
"""Probes per point of `target_se`'s pilot stage, whose spread chooses how many fresh probes a point needs."""
SE_MIN_PROBES = 32
"""The fewest fresh probes a `target_se` standard error is computed from (t with 31 degrees of freedom:
a nominal 95% interval of +-1.96 SE covers 94%)."""


def _solve_chunk(plan: _Plan, x: Tensor, row_start: int, time_bar: bool = False) -> _Chunk:
    """One chunk's solve: its probes keyed by global row index, the augmented ODE, the prior term;
    with `target_se`, Stein's two-stage procedure (`_two_stage`)."""
    est = plan.estimator
    rows = 0 if est is None else est.probe_rows(plan.probes)
    v = None if est is None else make_probes(x, rows, plan.probe, seed=plan.seed, row_start=row_start)
    first = _solve_once(plan, x, v, time_bar)
    return first if plan.target_se is None else _two_stage(plan, x, row_start, rows, first)


def _two_stage(plan: _Plan, x: Tensor, row_start: int, rows: int, first: _Chunk) -> _Chunk:
    """`target_se` without optional-stopping bias (Stein 1945): a pilot of `SE_PILOT` probes per point
    estimates its variance s^2 and so the count it needs, N = s^2 / target_se^2 (at least
    `SE_MIN_PROBES`, at most what `max_probes` leaves); then N **fresh** probes give the estimate and its
    standard error. The stopping rule never sees the values it reports, so the SE is an honest one (a
    rule that stops when the running SE first dips below the target reports the dips: 0.0 from two
    identical Rademacher estimates)."""
    k = plan.probes
    pilot_n = k * -(-SE_PILOT // k)
    shift = (first.prior[:, None] + first.delta).double().mean(1)  # for float64 sums of deviations
    full = torch.full((x.shape[0],), pilot_n, dtype=torch.int64, device=x.device)
    p1, p2, pc, cost, r = _rounds(plan, x, row_start, rows, full, 0, shift, first)
    var0 = ((p2 - p1.square() / pc) / (pc - 1)).clamp_min(0)
    fresh_max = (plan.max_probes - pilot_n) // k * k
    need = (var0 / plan.target_se**2).ceil().clamp(min=SE_MIN_PROBES, max=fresh_max)
    need = (k * (need / k).ceil()).clamp(max=fresh_max).to(torch.int64)
    s1, s2, count, more, r = _rounds(plan, x, row_start, rows, need, r, shift, None)
    n = count.double()
    se = (((s2 - s1.square() / n) / (n - 1)).clamp_min(0) / n).sqrt()
    first.mean, first.se, first.count = (shift + s1 / n).to(x.dtype), se.to(x.dtype), count + pc
    first.nfe, first.vjps, first.seconds = cost[0] + more[0], cost[1] + more[1], cost[2] + more[2]
    first.rounds = r
    return first


def _rounds(plan, x, row_start, rows, need, r, shift, first):
    """Rounds of `probes` probes, from round `r`, on the points that still have fewer than `need[i]`
    values: each point's float64 sums of deviations from `shift`, its count, the cost
    `[nfe, vjps, seconds]`, and the next round's index. Round r's probes are keyed by the seed, r and
    the point's global index (round 0 by the seed alone: `first`, already solved on every point)."""
    b = x.shape[0]
    s1 = torch.zeros(b, dtype=torch.float64, device=x.device)
    s2, count = torch.zeros_like(s1), torch.zeros(b, dtype=torch.int64, device=x.device)
    cost = [0, 0, 0.0]
    while True:
        pending = (count < need).nonzero().squeeze(1)
        if pending.numel() == 0:
            return s1, s2, count, cost, r
        if r == 0 and first is not None:
            out, pending = first, torch.arange(b, device=x.device)
        else:
            v = make_probes(x[pending], rows, plan.probe, seed=mix(plan.seed, r), rows=pending + row_start)
            out = _solve_once(plan, x[pending], v, False)
        dev = (out.prior[:, None] + out.delta).double() - shift[pending, None]
        s1[pending] += dev.sum(1)
        s2[pending] += dev.square().sum(1)
        count[pending] += plan.probes
        cost = [cost[0] + out.nfe, cost[1] + out.vjps, cost[2] + out.seconds]
        r += 1


def _solve_once(plan: _Plan, x: Tensor, v: Tensor | None, time_bar: bool) -> _Chunk:
    """One solve of the augmented ODE with the given probes."""
    sde, eps = plan.sde, plan.eps
    func = LikelihoodODE(plan.score, sde, plan.divergence, probes=v, eps=eps)
    width = None if plan.estimator is None else plan.estimator.width(plan.probes)
    delta0 = x.new_zeros((x.shape[0],) if width is None else (x.shape[0], width))
    ts = torch.tensor([eps, sde.T], dtype=torch.float64, device=x.device)
    start = time.perf_counter()
    graph = _differentiable(plan.score, x)
    params = tuple(p for p in _parameters(plan.score) if p.requires_grad) if graph else ()
    budget = _graph_budget(plan, x, width) if graph and not plan.adjoint else contextlib.nullcontext()
    bar = _Progress.shown(eps, sde.T, "log-likelihood") if time_bar else None
    func.pf.callback = bar
    try:
        with contextlib.nullcontext() if graph else torch.no_grad(), budget:
            out = odeint(
                func, (x, delta0), ts, method=plan.method, adjoint=plan.adjoint, adjoint_params=params,
                **plan.budget,
            )  # fmt: skip
            xs, deltas = out.ys
            latent, delta = xs[-1], deltas[-1]
            prior = plan.prior_log_prob(latent)
    finally:
        if bar is not None:
            bar.close()
    if not isinstance(prior, Tensor) or prior.shape != (x.shape[0],):
        got = tuple(prior.shape) if isinstance(prior, Tensor) else type(prior).__name__
        raise ValueError(f"prior_log_prob must return shape ({x.shape[0]},), one value per point; got {got}")
    if not bool(torch.isfinite(prior).all()):
        bad = int((~torch.isfinite(prior)).sum())
        raise NonFiniteError(
            f"the prior log-density log p_T(z) ({bad} of {x.shape[0]} points)", sde.T, plan.name
        )
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    return _Chunk(prior, delta, latent, func.nfe, func.vjps, time.perf_counter() - start)


def _graph_budget(plan: _Plan, x: Tensor, width: int | None) -> memory.GraphBudget:
    """The memory limit on a solve differentiated through: a fixed-step solve whose graph cannot fit
    (at least the augmented state and its drift per evaluation) is refused before it starts, and any
    solve is stopped when its graph passes the limit (`memory.GraphBudget`)."""
    what = f"log_likelihood(x of {x.shape[0]} points with gradients, solver={plan.name!r}, {plan.budget})"
    hint = "pass adjoint=True (memory independent of the steps), fewer points per call (batch_size=)"
    if "steps" in plan.budget:
        hint += " or fewer steps"
        calls = get_solver(plan.name).nfe(accepted=plan.budget["steps"])
        state = x[0].numel() + (1 if width is None else width)
        least = calls * x.shape[0] * 2 * state * x.element_size()
        memory.check_memory(
            what, least, device=x.device, hint=hint,
            detail=f"{calls:,} evaluations x {x.shape[0]:,} points x the state and its drift ({state:,} values each), at least",
        )  # fmt: skip
    else:
        hint += " or a looser tolerance"
    return memory.GraphBudget(what, x.device, hint)


def _check_inputs(
    score: Score,
    sde: SDE,
    x: object,
    eps: float,
    divergence: str,
    probes: int,
    probe: str,
    solver: str,
    batch_size: int | None = None,
) -> tuple[Tensor, str, Any]:
    """The checks `log_likelihood` makes before any work; returns x, the divergence ("auto" resolved)
    and the solver, which must be a torchdiffeq method on the PF-ODE."""
    check_problem(score, sde, eps)
    x = check_batched(x, "x")
    if divergence not in ("exact", *ESTIMATORS, "auto"):
        names = ", ".join(repr(k) for k in ("exact", *ESTIMATORS))
        raise ValueError(f"divergence must be {names} or 'auto', got {divergence!r}")
    if divergence == "auto":
        divergence = "exact" if x[0].numel() <= AUTO_EXACT_MAX_DIM else "hutchinson"
    check_positive(probes, "probes", integer=True)
    if probe not in ("rademacher", "gaussian"):
        raise ValueError(f"probe must be 'rademacher' or 'gaussian', got {probe!r}")
    method = solver.removeprefix("ode:") if isinstance(solver, str) else solver
    info = get_solver(f"ode:{method}" if isinstance(method, str) else method)
    if info.backend != "torchdiffeq":
        raise ValueError(f"solver must be a torchdiffeq method on the PF-ODE ('ode:...'), got {solver!r}")
    d = x[0].numel()
    k = 0 if divergence == "exact" else ESTIMATORS[divergence].vjps(probes, d)
    basis = min(d, 64) if divergence == "exact" else k  # vectors per batched backward pass
    work = x.shape[0] if batch_size is None else min(batch_size, x.shape[0])
    itemsize = x.element_size()
    per_point = (memory.working_copies(info.adaptive, False) * (d + k) + 3 * basis * d) * itemsize
    kept = (2 * d + k + 2) * itemsize  # per point: the latent, the log-densities, per-probe values
    memory.check_chunked(
        f"log_likelihood(x of {x.shape[0]} points, divergence={divergence!r}, probes={probes}"
        f"{'' if batch_size is None else f', batch_size={batch_size}'})", x.shape[0], batch_size, per_point, kept,
        device=x.device,
        detail=f"{work:,} points at a time x {format_bytes(per_point)} each, plus {format_bytes(kept)} per point of results",
    )  # fmt: skip
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x must be finite; it holds NaN or Inf")
    return x, divergence, info


def bits_per_dim(log_prob: Tensor, event_size: int, *, bins: int = 256, scale: float = 1.0) -> Tensor:
    r"""Convert a continuous log-density of dequantised data to bits per dimension.

    Data with `bins` levels mapped to an interval of width `scale` has density on that interval;
    its discrete probability is $p(x)\,(\text{scale}/\text{bins})^D$, so

    $$\text{bpd} = -\frac{\log p(x)}{D \ln 2} + \log_2 \frac{\text{bins}}{\text{scale}}.$$

    For 8-bit data in [0, 1] the offset is $\log_2 256 = 8$; in [-1, 1] it is $\log_2 128 = 7$. This is
    Song et al.'s `offset = 7 - inverse_scaler(-1)`: 8 when the scaler is the identity
    (`inverse_scaler(-1) = -1`), 7 for centred data (`inverse_scaler(-1) = 0`).

    Args:
        log_prob: log p(x) in nats, shape `(batch,)`, of uniformly dequantised data.
        event_size: D, the number of dimensions of one sample.
        bins: Levels of the original data (256 for 8-bit images).
        scale: Width of the interval the levels were mapped to (1 for [0, 1], 2 for [-1, 1]).
    """
    check_positive(event_size, "event_size", integer=True)
    check_positive(bins, "bins", integer=True)
    check_positive(scale, "scale")
    if not isinstance(log_prob, Tensor) or not log_prob.is_floating_point():
        raise TypeError(f"log_prob must be a floating-point tensor, got {describe(log_prob)}")
    if not bool(torch.isfinite(log_prob).all()):
        raise ValueError("log_prob must be finite; it holds NaN or Inf")
    return -log_prob / (event_size * math.log(2)) + math.log2(bins / scale)


@dataclass
class DatasetBits:
    """What `dataset_bits_per_dim` returns: a data set's bits/dim with its uncertainty, split by source.

    Attributes:
        bpd: The mean bits/dim over the points.
        se: The standard error of `bpd` (from the spread of the per-point values).
        se_data: The part due to which points the data set holds (sampling of the data).
        se_estimator: The part due to the Hutchinson probes: 0 for the exact trace, None for one probe
            (which gives no per-point spread to estimate it from).
        per_point: Each point's bits/dim, `(N,)`.
        result: The `LikelihoodResult` behind them.
    """

    bpd: float
    se: float
    se_data: float | None
    se_estimator: float | None
    per_point: Tensor
    result: LikelihoodResult


def dataset_bits_per_dim(
    score: Score, sde: SDE, data: Tensor, *, bins: int = 256, scale: float = 1.0, **likelihood: Any
) -> DatasetBits:
    r"""Bits/dim of a (dequantised) data set, streamed with `log_likelihood`, with its standard error.

    The per-point values $b_i$ vary for two reasons: the points differ (the data set is a sample)
    and, with Hutchinson, each point's estimate carries probe noise of variance $v_i$ (its
    `std_error` squared, in bits/dim). The standard error of the mean splits as
    $\text{se}^2 = \text{se}_{data}^2 + \text{se}_{est}^2$ with
    $\text{se}_{est}^2 = \overline{v}/N$ and $\text{se}^2 = s_b^2/N$.

    Args:
        score: The score.
        sde: The forward SDE.
        data: Dequantised data `(N, *event)` (see `datasets.dequantize`).
        bins: Levels of the original data (256 for 8-bit images).
        scale: Width of the interval the levels were mapped to (2 for [-1, 1]).
        **likelihood: Passed to `log_likelihood` (`batch_size=`, `progress=`, `divergence=`,
            `probes=`, `seed=`, tolerances...); it runs under `torch.no_grad()`.

    Returns:
        A `DatasetBits`.
    """
    with torch.no_grad():
        res = log_likelihood(score, sde, data, **likelihood)
    d = data[0].numel()
    b = bits_per_dim(res.log_prob.double(), d, bins=bins, scale=scale)
    se, se_data, se_est = standard_errors(b, res, unit=1 / (d * math.log(2)))
    return DatasetBits(
        bpd=float(b.mean()), se=se, se_data=se_data, se_estimator=se_est, per_point=b, result=res,
    )  # fmt: skip


def standard_errors(
    values: Tensor, result: LikelihoodResult, unit: float = 1.0
) -> tuple[float, float | None, float | None]:
    r"""The standard error of the mean of per-point `values`, split into data sampling and estimator noise.

    $\text{se}^2 = s^2/N$ from the values' spread; the estimator's part is $\overline{v}/N$ with
    $v_i$ each point's squared `std_error` (0 for the exact trace, unknown for one probe); the data's
    part is what remains, $\text{se}_{data}^2 = \text{se}^2 - \text{se}_{est}^2$.

    Args:
        values: Per-point values `(N,)` (log-densities, or a transform such as bits/dim).
        result: The `LikelihoodResult` behind them (its divergence and `std_error`).
        unit: The factor from nats to the values' unit (1 / (D ln 2) for bits/dim; its sign is ignored).

    Returns:
        `(se, se_data, se_estimator)`; the last two are None when one probe gives no per-point spread.
    """
    v = values.double()
    n = v.numel()
    total = float(v.var() / n) if n > 1 else float("nan")
    if result.settings["divergence"] == "exact":
        est: float | None = 0.0
    elif result.std_error is not None:
        est = float((result.std_error.double() * abs(unit)).square().mean() / n)
    else:
        est = None
    if est is None:
        return math.sqrt(total), None, None
    return math.sqrt(total), math.sqrt(max(total - est, 0.0)), math.sqrt(est)
