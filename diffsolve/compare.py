r"""`compare()`: many samplers on one score, with honest accounting of cost and accuracy.

This module runs the grid; `diffsolve.comparison` holds the table it returns.

Every solver in a comparison starts from the same prior draws (one set per seed), and the
stochastic ones are driven by one Brownian path per seed, so that differences between rows come
from the solvers, not from the noise. Each row is one (solver, budget, seed); its NFE is counted by
a wrapper around the score (every call on a batch is one), its seconds are wall-clock.

Accuracy, as docs/architecture.md ("How sample quality is judged") sets out:

- `path_error`: RMS distance to a reference solve from the same $x_T$ (deterministic samplers:
  float64 `ode:dopri5` at rtol = atol = 1e-8; stochastic ones: the same Brownian path solved by
  the solver's `Solver.reference` (`sde:euler`; `sde:srk` for `sde:srk`, whose path differs) at
  `reference_steps` steps, or, for `adaptive_sde_per_sample`, whose path is its own, that solver at
  a twentieth of its tightest default tolerance). It
  measures discretisation error alone, with no sampling noise.
- `sliced_w2`, `mmd`, `energy`: two-sample distances to the reference set (exact samples of
  $p_\epsilon$ or held-out data), each with a z-score against its exact-vs-exact null distribution
  (`null_pairs` pairs of independent exact sets of the same size).
- `digits_fd` (held-out 8x8 digit images): the Fréchet distance in the shipped digits classifier's
  features (`metrics.digits_frechet_distance`), with its z-score against the same null.
- `log_prob_gap` and `weight_tv` (analytic references only): the mean $\log p_\epsilon$ gap and the
  component-weight TV, each with its standard error.
- `ks_logp`, `tail_mass` (analytic references only) and `c2st`: hypothesis tests of the whole
  distribution (`diffsolve.judge`), each with its p-value: a KS test of $\log p_\epsilon(X)$ against
  200 000 exact draws, the mass below the exact 0.2% quantile of $\log p_\epsilon$, and a kNN
  classifier two-sample test against an independent exact (or held-out) set of n points.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from . import judge as J
from . import memory
from . import metrics as M
from ._validation import SEED_LIMIT, check_device, check_positive, describe
from .analytic import GaussianMixture
from .comparison import (
    ANALYTIC,
    DENSITY_TESTS,
    EVENT_SHAPES,
    METRICS,
    TESTS,
    TWO_SAMPLE,
    Comparison,
    criteria_met,
)
from .memory import format_bytes
from .samplers.registry import get_solver
from .sampling import prior_draws, sample
from .scores import Score, check_problem
from .sde import SDE

__all__ = [
    "Comparison", "compare", "METRICS", "DEFAULT_SOLVERS", "criteria_met", "ANALYTIC", "TWO_SAMPLE", "TESTS",
    "build_judge", "converged_reference",
]  # fmt: skip

DEFAULT_SOLVERS = (
    "sde:euler",
    "pc",
    "dpm_solver++2m_sde",
    "euler_ancestral",
    "ode:rk4",
    "ode:dopri5",
    "ddim",
    "dpm_solver++2m",
    "dpm_solver++3m",
    "dpm_solver_fast",
    "unipc",
    "deis",
    "ipndm",
    "edm_heun",
)
"""The fourteen samplers of the main job, `diffsolve compare` with no arguments."""


def compare(
    score: Score,
    sde: SDE,
    *,
    reference: GaussianMixture | Tensor | str,
    solvers: Sequence[str] | None = None,
    budgets: Mapping[str, Sequence[float]] | Sequence[float] | None = None,
    n: int = 5000,
    seeds: Sequence[int] = (0,),
    metrics: Sequence[str] | None = None,
    eps: float = 1e-3,
    null_pairs: int = 20,
    reference_steps: int = 2048,
    two_sample_n: int = 2000,
    problem: str | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    grids: Mapping[str, Mapping[int, Tensor]] | None = None,
    batch_size: int | None = None,
    event_shape: Sequence[int] | None = None,
) -> Comparison:
    r"""Run every solver at every budget and seed on `score`, and measure cost and accuracy.

    Args:
        score: The score (its `event_shape` is taken from `reference`).
        sde: The forward SDE.
        reference: A `GaussianMixture` (the exact $p_0$: exact samples of $p_\epsilon$ are drawn, and
            the analytic metrics are available) or a tensor of held-out data `(N, *event)` (two-sample
            metrics only; the null pairs are disjoint halves of it), or `"converged"` for a score with no
            closed form (a learned model): 2n samples of a float64 `ode:dopri5` solve at rtol = atol =
            1e-8 of the same score from x_T that no row uses (`converged_reference`), judged by the
            density-free metrics (two-sample distances, C2ST).
        solvers: Names from `solvers()`; default `DEFAULT_SOLVERS`.
        budgets: `{solver: [budget, ...]}` or one list for every solver: integers are steps (fixed-step
            solvers), floats below 1 are tolerances rtol = atol (adaptive ones). Default: each
            solver's own `Solver.budgets`.
        n: Samples per solve.
        seeds: One row per seed; each seed fixes the prior draws and the Brownian path.
        metrics: A subset of `METRICS`; default all that apply to the reference.
        eps: Final time of every solve (and of the exact reference $p_\epsilon$).
        null_pairs: Exact-vs-exact pairs for the two-sample nulls (>= 2; docs/architecture.md asks for >= 10;
            20 keeps the battery's false-rejection rate under 1%, docs/benchmarks.md "The judge").
        reference_steps: Steps of the fine `sde:euler` / `sde:srk` solve that stochastic solvers'
            path errors read against (an adaptive reference runs at a twentieth of its tightest
            default tolerance instead).
        two_sample_n: Points of each set the two-sample distances use (MMD and energy cost
            O(n^2)); their nulls are computed at the same size, so z-scores stay comparable.
        problem: A name for the tables (default: the reference's description).
        device: Where the solves run (default: the data reference's device, else CPU).
        progress: A progress bar over the solves.
        grids: `{solver: {steps: grid}}`: explicit time grids (e.g. from `analysis.optimize_grid`)
            that replace a solver's default grid at those step counts.
        batch_size: Solve in chunks of at most this many samples (`sample`'s `batch_size`): the
            fixed-step rows are unchanged, adaptive solvers choose their steps per chunk.
        event_shape: The shape of one sample, for `reference="converged"` with a score that does not
            say (a `ScoreModel`); other references give it.

    Returns:
        A `Comparison`.

    Raises:
        ValueError: On an unknown solver or metric (listing the valid ones), a budget that does not
            fit its solver, or a reference whose event shape differs from the score's. All checks
            run before any solve.
    """
    solvers = list(DEFAULT_SOLVERS if solvers is None else solvers)
    if not solvers:
        raise ValueError("solvers is empty; give at least one name from diffsolve.solvers()")
    infos = {}
    for name in solvers:
        try:
            infos[name] = get_solver(name)
        except (ValueError, TypeError) as err:
            raise type(err)(f"solvers: {err}") from None
    check_problem(score, sde, eps)
    if isinstance(reference, str):
        reference, problem = _converged(
            score, sde, reference, problem, n, eps, batch_size, device, event_shape
        )
    event_shape, analytic = _check_reference(reference, score)
    metrics = _check_metrics(metrics, event_shape, analytic)
    plan = _plan(solvers, infos, budgets)
    for value, name in ((n, "n"), (null_pairs, "null_pairs"), (reference_steps, "reference_steps"),
                        (two_sample_n, "two_sample_n")):  # fmt: skip
        check_positive(value, name, integer=True)
    if batch_size is not None:
        check_positive(batch_size, "batch_size", integer=True)
    seeds = _check_seeds(seeds)
    if null_pairs < 2:
        raise ValueError(f"null_pairs must be >= 2, got {null_pairs}")
    if device is None:
        device = reference.device if isinstance(reference, Tensor) else torch.device("cpu")
    device = check_device(device)
    _check_memory(n, batch_size, event_shape, device, infos, plan)

    judge = build_judge(reference, sde, eps=eps, n=n, metrics=metrics, null_pairs=null_pairs,
                        two_sample_n=two_sample_n)  # fmt: skip
    bar = _progress_bar(sum(len(b) for _, b in plan) * len(seeds)) if progress else None
    rows: list[dict[str, Any]] = []
    kept: dict[tuple[str, float], Tensor] = {}
    counted = _CountingScore(score)
    try:
        for seed in seeds:
            x_T = prior_draws(sde, (n, *event_shape), seed, dtype=torch.float32, device=device)
            refs: dict[str, Tensor] = {}
            for solver, budget_list in plan:
                for budget in budget_list:
                    if bar is not None:
                        bar.set_postfix_str(f"{solver} {_fmt_budget(budget)} seed {seed}", refresh=True)
                    grid = (grids or {}).get(solver, {}).get(int(budget))
                    res = _counted_solve(
                        counted, sde, x_T, infos[solver], budget, grid, eps, seed, batch_size
                    )
                    key = infos[solver].reference or "ode"
                    if "path_error" in metrics and key not in refs:
                        refs[key] = _reference_solve(
                            score, sde, x_T, key, eps, seed, reference_steps, batch_size
                        )
                    rows.append({
                        "solver": solver, "family": infos[solver].family,
                        "budget_kind": "tolerance" if infos[solver].adaptive else "steps", "budget": budget,
                        "seed": seed, "nfe": res.nfe, "seconds": res.seconds,
                        **judge(res.samples, refs.get(key)),
                    })  # fmt: skip
                    if seed == seeds[0]:
                        kept[(solver, budget)] = res.samples
                    if bar is not None:
                        bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    default_name = (
        f"GaussianMixture({reference.dim}-D, {reference.n_components} components)"
        if analytic
        else f"data {tuple(reference.shape)}"
    )
    settings = {
        "problem": problem or default_name, "sde": repr(sde), "n": n, "eps": eps, "seeds": seeds,
        "metrics": metrics, "reference": "analytic" if analytic else "data", "null_pairs": null_pairs,
        "reference_steps": reference_steps, "two_sample_n": judge.m_two, "budgets": {s: list(b) for s, b in plan},
        "ode_reference": f"float64 ode:dopri5 at rtol = atol = {_reference_tol(score):g}, score in "
        f"{_reference_score(score)[1]}",
    }  # fmt: skip
    return Comparison(rows, judge.null, settings, kept, judge.ref_set)


def _converged(
    score, sde, reference: str, problem, n, eps, batch_size, device, event_shape
) -> tuple[Tensor, str]:
    """`reference="converged"`: the converged solve of `score` itself, and the problem's name saying so."""
    if reference != "converged":
        raise ValueError(
            f"reference must be a GaussianMixture, a tensor of data or 'converged', got {reference!r}"
        )
    check_positive(n, "n", integer=True)
    data = converged_reference(
        score, sde, 2 * n, eps=eps, batch_size=batch_size, device=device, event_shape=event_shape
    )
    return (
        data,
        f"{problem or 'score'}, judged against a converged float64 dopri5 reference of {2 * n} points",
    )


def _check_metrics(metrics: Sequence[str] | None, event_shape: tuple[int, ...], analytic: bool) -> list[str]:
    """The metrics asked for (default: every one that applies), each checked against the reference."""
    available = [m for m in (METRICS if analytic else ("path_error", *TWO_SAMPLE, "c2st"))
                 if EVENT_SHAPES.get(m, event_shape) == event_shape]  # fmt: skip
    metrics = list(available if metrics is None else metrics)
    for m in metrics:
        if m not in METRICS:
            raise ValueError(f"metrics must name metrics from {', '.join(METRICS)}; got {m!r}")
        if EVENT_SHAPES.get(m, event_shape) != event_shape:
            raise ValueError(
                f"metric {m!r} applies to samples of event shape {EVENT_SHAPES[m]}, not {event_shape}"
            )
        if m not in available:
            raise ValueError(f"metric {m!r} needs an analytic reference (a GaussianMixture), not data")
    return metrics


def _counted_solve(counted: _CountingScore, sde: SDE, x_T: Tensor, info, budget: float, grid: Tensor | None,
                   eps: float, seed: int, batch_size: int | None):  # fmt: skip
    """One row's solve, its score calls counted independently of `sample`'s own ledger (they must agree)."""
    kwargs: dict[str, Any] = {"rtol": budget, "atol": budget} if info.adaptive else {"steps": int(budget)}
    if grid is not None:
        kwargs["time_grid"] = grid
    counted.nfe = 0
    res = sample(
        counted,
        sde,
        x_T=x_T,
        solver=info.name,
        eps=eps,
        seed=seed,
        batch_size=batch_size,
        progress=False,
        **kwargs,
    )
    calls = res.settings.get("score_calls", res.nfe)
    if counted.nfe != calls:
        raise RuntimeError(f"{info.name}: sample() reported {calls} score calls, the score saw {counted.nfe}")
    return res


CONVERGED_SEED = 2**62 + 1
"""The seed of a converged reference's prior draws: one no `compare` row uses (rows use the user's seeds)."""


def converged_reference(
    score: Score,
    sde: SDE,
    n: int,
    *,
    eps: float = 1e-3,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    event_shape: Sequence[int] | None = None,
) -> Tensor:
    """n samples of a converged PF-ODE solve of `score`: the reference for a model with no closed form.

    Float64 `ode:dopri5` at rtol = atol = 1e-8, or 1e-5 for a float32 network (which runs in its own
    dtype on the float64 state, as `compare`'s path-error reference does: its round-off, ~1e-7 per
    call, would hold a 1e-8 error control to ever smaller steps) from the keyed prior draws of `CONVERGED_SEED`,
    which no row of a comparison starts from. The samples are returned in float32 on the CPU.

    Args:
        score: The score.
        sde: The forward SDE.
        n: Samples.
        eps: The final time.
        batch_size: Solve in chunks of at most this many.
        device: Where the solve runs (default CPU).
        event_shape: The shape of one sample (default: the score's `event_shape`).
    """
    event_shape = event_shape if event_shape is not None else getattr(score, "event_shape", None)
    if event_shape is None:
        raise ValueError("reference='converged' needs event_shape= for a score that does not say its shape")
    event_shape = tuple(int(v) for v in event_shape)
    x_T = prior_draws(sde, (n, *event_shape), CONVERGED_SEED, dtype=torch.float64, device=device)
    tol = _reference_tol(score)
    out = sample(_reference_score(score)[0], sde, x_T=x_T, solver="ode:dopri5", rtol=tol, atol=tol, eps=eps,
                 batch_size=batch_size, progress=False)  # fmt: skip
    return out.samples.to(torch.float32).cpu()


def _check_reference(reference: object, score: Score) -> tuple[tuple[int, ...], bool]:
    """The event shape the reference gives, and whether it is analytic (a mixture) or held-out data."""
    if isinstance(reference, GaussianMixture):
        event_shape: tuple[int, ...] = (reference.dim,)
    elif isinstance(reference, Tensor):
        if reference.dim() < 2 or reference.shape[0] < 4:
            raise ValueError(
                f"reference must be held-out data (N >= 4, *event), got shape {tuple(reference.shape)}"
            )
        event_shape = tuple(reference.shape[1:])
    else:
        raise TypeError(f"reference must be a GaussianMixture or a tensor of data, got {describe(reference)}")
    score_shape = getattr(score, "event_shape", None)
    if score_shape is not None and tuple(score_shape) != event_shape:
        raise ValueError(f"reference has event shape {event_shape} but the score's is {tuple(score_shape)}")
    return event_shape, isinstance(reference, GaussianMixture)


def _check_memory(n: int, batch_size: int | None, event_shape, device, infos, plan) -> None:
    """Refuse a comparison whose working states (per chunk) and kept samples (all n) do not fit."""
    per_point = math.prod(event_shape) * 8  # float64: the reference solves
    copies = memory.working_copies(
        any(i.adaptive for i in infos.values()), any(i.stochastic for i in infos.values())
    )
    kept = sum(len(b) for _, b in plan) + 4  # the solves kept for the figures, x_T, the references
    work = n if batch_size is None else min(n, batch_size)
    memory.check_chunked(
        f"compare(n={n}{'' if batch_size is None else f', batch_size={batch_size}'})", n, batch_size,
        copies * per_point, kept * per_point, device=device,
        detail=f"{work:,} points at a time x {copies} working states, plus {kept} kept states of all {n:,} points, "
        f"{format_bytes(per_point)} each",
        too_many="use a smaller n",
    )  # fmt: skip


def _check_seeds(seeds: Sequence[int]) -> list[int]:
    """Distinct non-negative integers (numpy integers too); a float such as 1.7 is refused, not truncated."""
    seeds = list(seeds)
    if (
        not seeds
        or len(set(seeds)) != len(seeds)
        or any(
            isinstance(s, bool) or not isinstance(s, numbers.Integral) or not 0 <= s < SEED_LIMIT
            for s in seeds
        )
    ):
        raise ValueError(f"seeds must be distinct non-negative integers below 2^63, got {seeds!r}")
    return [int(s) for s in seeds]


def _reference_draws(
    reference: GaussianMixture | Tensor, sde: SDE, eps: float, n: int, two_sample_n: int, analytic: bool
) -> tuple[Callable[[int | None], Tensor], int]:
    """`draw(i)`: the i-th independent reference set for the nulls (None: the one rows are read
    against), and the size m of every set (two-sample distances cost O(m^2))."""
    if analytic:
        p_eps = reference.marginal(eps, sde)
        m_two = min(n, two_sample_n)
        return (lambda i: p_eps.sample(m_two, seed=1_000_003 + i, dtype=torch.float32)), m_two
    data = reference.to(torch.float32).cpu()
    m_two = min(n, two_sample_n, data.shape[0] // 2)

    def draw(i: int | None) -> Tensor:
        if i is None:
            return data[:m_two]
        perm = torch.randperm(data.shape[0], generator=torch.Generator().manual_seed(1_000_003 + i // 2))
        return data[perm[:m_two] if i % 2 == 0 else perm[m_two : 2 * m_two]]

    return draw, m_two


def build_judge(
    reference: GaussianMixture | Tensor,
    sde: SDE,
    *,
    eps: float = 1e-3,
    n: int = 5000,
    metrics: Sequence[str] | None = None,
    null_pairs: int = 20,
    two_sample_n: int = 2000,
) -> _Judge:
    """The judge `compare` applies to every solve: `judge(samples, path_reference) -> row fields`.

    Its references and nulls are those of a `compare` call with the same arguments, so that
    `benchmarks/judge_calibration.py` measures the false-rejection rate of exactly this judge.
    `judge.null` holds the two-sample nulls (for `criteria_met`).

    Args:
        reference: A `GaussianMixture` or held-out data `(N, *event)`, as for `compare`.
        sde: The forward SDE.
        eps: The time whose marginal judges the samples.
        n: Samples per solve (the C2ST's exact set has as many).
        metrics: The metrics to compute (default: every one the reference allows but the path error).
        null_pairs: Exact-vs-exact pairs for the two-sample nulls.
        two_sample_n: Points per set of the two-sample distances.
    """
    analytic = isinstance(reference, GaussianMixture)
    if metrics is None:
        metrics = [m for m in METRICS if m != "path_error" and (analytic or m in (*TWO_SAMPLE, "c2st"))]
        metrics = [m for m in metrics if m not in EVENT_SHAPES]
    draw, m_two = _reference_draws(reference, sde, eps, n, two_sample_n, analytic)
    ref_set = draw(-1) if analytic else draw(None)
    null = {m: M.null_distribution(TWO_SAMPLE[m], draw, pairs=null_pairs) for m in metrics if m in TWO_SAMPLE}
    return _Judge(list(metrics), reference, sde, eps, ref_set, m_two, null, n)


class _Judge:
    """Every requested metric of one solve: path error, two-sample distances (with z-scores against
    their nulls) and the analytic ones (with standard errors)."""

    def __init__(self, metrics: list[str], reference: object, sde: SDE, eps: float, ref_set: Tensor,
                 m_two: int, null: dict[str, M.Estimate], n: int) -> None:  # fmt: skip
        self.metrics, self.reference, self.sde, self.eps = metrics, reference, sde, eps
        self.ref_set, self.m_two, self.null = ref_set, m_two, null
        analytic = isinstance(reference, GaussianMixture)
        # One exact reference of log p_eps for the mean gap and both density tests (drawn once, not per row).
        self.density = J.ExactLogDensity(reference, eps, sde) if analytic else None
        # The C2ST reads against its own exact set of n points, independent of the rows' x_T.
        self.c2st_set = None
        if "c2st" in metrics:
            self.c2st_set = (
                reference.marginal(eps, sde).sample(n, seed=2_000_003, dtype=torch.float32)
                if analytic
                else reference
            )

    def __call__(self, x: Tensor, path_reference: Tensor | None) -> dict[str, Any]:
        row: dict[str, Any] = {}
        for m in self.metrics:
            if m == "path_error":
                row[m] = M.path_error(x, path_reference)
            elif m in TWO_SAMPLE:
                val, null = TWO_SAMPLE[m](x[: self.m_two], self.ref_set), self.null[m]
                row[m], row[f"{m}_z"] = val, (val - null.value) / null.se if null.se > 0 else math.inf
            elif m in TESTS:
                if m in DENSITY_TESTS:
                    test = (J.log_prob_ks if m == "ks_logp" else J.tail_mass)(x, self.density)
                else:
                    test = J.c2st(x, self.c2st_set.to(x.device))
                row[m], row[f"{m}_p"] = test.statistic, test.p_value
            else:
                est = (
                    M.log_prob_gap(x, self.reference, self.eps, self.sde, reference=self.density)
                    if m == "log_prob_gap"
                    else M.weight_tv(x, self.reference, self.eps, self.sde)
                )
                row[m], row[f"{m}_se"] = est.value, est.se
        return row


def _progress_bar(total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="compare", dynamic_ncols=True, disable=None)


class _CountingScore:
    """Counts calls independently of the solvers' own ledgers."""

    def __init__(self, score: Score) -> None:
        self.score = score
        self.nfe = 0
        self.event_shape = getattr(score, "event_shape", None)

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        self.nfe += 1
        return self.score(x, t)


def _plan(
    solvers: list[str], infos: dict, budgets: Mapping[str, Sequence[float]] | Sequence[float] | None
) -> list[tuple[str, list[float]]]:
    plan = []
    if budgets is not None and isinstance(budgets, Mapping):
        unknown = [s for s in budgets if s not in solvers]
        if unknown:
            raise ValueError(f"budgets names solvers that are not compared: {unknown}; solvers are {solvers}")
    for solver in solvers:
        info = infos[solver]
        if budgets is None:
            chosen = info.budgets
        elif isinstance(budgets, Mapping):
            if solver not in budgets:
                raise ValueError(f"budgets has no entry for {solver!r}")
            chosen = budgets[solver]
        else:
            chosen = budgets
        chosen = list(chosen)
        if not chosen:
            raise ValueError(f"no budgets for {solver!r}")
        for b in chosen:
            if info.adaptive:
                if isinstance(b, bool) or not isinstance(b, float) or not 0 < b < 1:
                    raise ValueError(
                        f"{solver} is adaptive: its budgets are tolerances in (0, 1) (floats), got {b!r}"
                    )
            elif isinstance(b, bool) or not float(b).is_integer() or b < 1 or isinstance(b, float) and b < 1:
                raise ValueError(
                    f"{solver} is fixed-step: its budgets are step counts (integers >= 1), got {b!r}"
                )
        plan.append((solver, [b if info.adaptive else int(b) for b in chosen]))
    return plan


def _reference_solve(
    score: Score, sde: SDE, x_T: Tensor, key: str, eps: float, seed: int, steps: int, batch_size: int | None
) -> Tensor:
    if key == "ode":
        x = x_T.to(torch.float64)
        out = sample(
            _reference_score(score)[0], sde, x_T=x, solver="ode:dopri5", rtol=_reference_tol(score),
            atol=_reference_tol(score), eps=eps,
            batch_size=batch_size, progress=False,
        )  # fmt: skip
        return out.samples.to(x_T.dtype)
    info = get_solver(key)
    budget = (
        {"rtol": min(info.budgets) / 20, "atol": min(info.budgets) / 20}
        if info.adaptive
        else {"steps": steps}
    )
    return sample(
        score, sde, x_T=x_T, solver=key, eps=eps, seed=seed, batch_size=batch_size, progress=False, **budget
    ).samples


def _reference_tol(score: Score) -> float:
    """The reference solves' rtol = atol: 1e-8 for a float64 score, 1e-5 for a network in a lower precision."""
    return 1e-8 if _reference_score(score)[1] == "float64" else 1e-5


def _reference_score(score: Score) -> tuple[Score, str]:
    """The score the float64 reference solve calls, and the dtype it computes in.

    A network whose parameters are another dtype (a float32 `ScoreModel`) is run in its own dtype
    on the float64 state, by an explicit cast of its input and output, and the Comparison's settings
    say so; any other score is called on float64 states as it is (a score that cannot take them
    fails with its own error, never a silent retry in another dtype)."""
    if isinstance(score, torch.nn.Module):
        param = next((p for p in score.parameters() if p.is_floating_point()), None)
        if param is not None and param.dtype != torch.float64:
            return _CastScore(score, param.dtype), str(param.dtype).removeprefix("torch.")
    return score, "float64"


class _CastScore:
    """A network score in its own dtype on states of another: input cast to `dtype`, output back."""

    def __init__(self, score: Score, dtype: torch.dtype) -> None:
        self.score, self.dtype = score, dtype
        self.event_shape = getattr(score, "event_shape", None)

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        return self.score(x.to(self.dtype), t.to(self.dtype)).to(x.dtype)


def _fmt_budget(b: float) -> str:
    return f"{b:g}" if isinstance(b, float) else str(b)
