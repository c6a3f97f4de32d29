r"""`compare()`: many samplers on one score, with honest accounting of cost and accuracy.

Every solver in a comparison starts from the same prior draws (one set per seed), and the
stochastic ones are driven by one Brownian path per seed, so that differences between rows come
from the solvers, not from the noise. Each row is one (solver, budget, seed); its NFE is counted by
a wrapper around the score (every call on a batch is one), its seconds are wall-clock.

Accuracy, as docs/architecture.md ("How sample quality is judged") sets out:

- `path_error`: RMS distance to a reference solve from the same $x_T$ (deterministic samplers:
  float64 `ode:dopri5` at rtol = atol = 1e-8; stochastic ones: the same Brownian path solved by
  the solver's `Solver.reference` (`sde:euler`; `sde:srk` for `sde:srk`, whose path differs) at
  `reference_steps` steps). It
  measures discretisation error alone, with no sampling noise.
- `sliced_w2`, `mmd`, `energy`: two-sample distances to the reference set (exact samples of
  $p_\epsilon$ or held-out data), each with a z-score against its exact-vs-exact null distribution
  (`null_pairs` pairs of independent exact sets of the same size).
- `log_prob_gap` and `weight_tv` (analytic references only): the mean $\log p_\epsilon$ gap and the
  component-weight TV, each with its standard error.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import metrics as M
from ._validation import check_positive, describe
from .analytic import GaussianMixture
from .io import atomic_write_bytes
from .samplers.registry import get_solver
from .sampling import sample
from .scores import Score
from .sde import SDE

__all__ = ["Comparison", "compare", "METRICS", "DEFAULT_SOLVERS", "criteria_met"]

TWO_SAMPLE = {"sliced_w2": M.sliced_wasserstein, "mmd": M.mmd, "energy": M.energy_distance}
ANALYTIC = ("log_prob_gap", "weight_tv")
METRICS = ("path_error", *TWO_SAMPLE, *ANALYTIC)
"""Every metric `compare` can report: path error, two-sample distances, and the analytic ones."""

DEFAULT_SOLVERS = (
    "sde:euler",
    "sde:srk",
    "pc",
    "ode:euler",
    "ode:rk4",
    "ode:dopri5",
    "ddim",
    "dpm_solver++2m",
    "edm_heun",
    "adaptive_sde",
)
"""The ten samplers of the main job, `diffsolve compare` with no arguments."""


@dataclass
class Comparison:
    """What `compare` returns: one row per (solver, budget, seed), the nulls, and seed-0 samples.

    Attributes:
        rows: Dicts with `solver`, `family`, `budget` (steps or tolerance), `budget_kind`, `seed`,
            `nfe`, `seconds`, every metric, `<metric>_se` for the analytic ones and `<metric>_z`
            for the two-sample ones.
        null: The exact-vs-exact mean and standard deviation of every two-sample metric
            (`Estimate(value=mean, se=std)`).
        settings: n, eps, seeds, reference kind, metrics.
        samples: `(solver, budget) -> samples` of the first seed, for plots.
        reference_samples: The reference set the two-sample metrics read against.
    """

    rows: list[dict[str, Any]]
    null: dict[str, M.Estimate]
    settings: dict[str, Any]
    samples: dict[tuple[str, float], Tensor] = field(default_factory=dict, repr=False)
    reference_samples: Tensor | None = field(default=None, repr=False)

    def columns(self) -> list[str]:
        """The row fields in table order: identity, cost, then each metric with its SE or z-score."""
        cols = ["solver", "family", "budget_kind", "budget", "seed", "nfe", "seconds"]
        for m in self.settings["metrics"]:
            cols.append(m)
            if m in ANALYTIC:
                cols.append(f"{m}_se")
            if m in TWO_SAMPLE:
                cols.append(f"{m}_z")
        return cols

    def aggregate(self) -> list[dict[str, Any]]:
        """Per (solver, budget): the mean over seeds of NFE, seconds and every metric, with the
        half-width of a 95% Student-t interval (`<name>_ci`; 0 with one seed)."""
        groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
        for row in self.rows:
            groups.setdefault((row["solver"], row["budget"]), []).append(row)
        out = []
        numeric = [
            c for c in self.columns() if c not in ("solver", "family", "budget_kind", "budget", "seed")
        ]
        for (solver, budget), rows in groups.items():
            agg: dict[str, Any] = {
                "solver": solver,
                "family": rows[0]["family"],
                "budget_kind": rows[0]["budget_kind"],
                "budget": budget,
                "seeds": len(rows),
            }
            for c in numeric:
                vals = torch.tensor([float(r[c]) for r in rows], dtype=torch.float64)
                agg[c] = float(vals.mean())
                agg[f"{c}_ci"] = (
                    _t95(len(rows)) * float(vals.std()) / math.sqrt(len(rows)) if len(rows) > 1 else 0.0
                )
            out.append(agg)
        return out

    def nfe_needed(
        self, *, path_tol: float = 1e-2, gap_tol: float = 0.02, tv_tol: float = 0.01
    ) -> list[dict[str, Any]]:
        """For every solver, the smallest mean NFE over its budgets that meets (a) and (b).

        (a) indistinguishable from exact samples: `criteria_met(row, ...)` for every seed;
        (b) paired path error <= `path_tol` for every seed. `None` where no budget met it.
        """
        out = []
        by_solver: dict[str, dict[float, list[dict[str, Any]]]] = {}
        for row in self.rows:
            by_solver.setdefault(row["solver"], {}).setdefault(row["budget"], []).append(row)
        for solver, budgets in by_solver.items():
            a = b = None
            for rows in sorted(budgets.values(), key=lambda rs: sum(r["nfe"] for r in rs)):
                nfe = sum(r["nfe"] for r in rows) / len(rows)
                if a is None and all(
                    criteria_met(r, self.null, gap_tol=gap_tol, tv_tol=tv_tol) for r in rows
                ):
                    a = nfe
                if b is None and "path_error" in rows[0] and all(r["path_error"] <= path_tol for r in rows):
                    b = nfe
            out.append({"solver": solver, "nfe_indistinguishable": a, "nfe_path_error": b})
        return out

    # --- export ---

    def to_csv(self, path: str | os.PathLike | None = None) -> str:
        """The rows as CSV (written atomically to `path` when given); returns the text."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns(), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow(row)
        return _write(path, buf.getvalue())

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """Rows, aggregate, nulls and settings as JSON (written atomically when `path` is given)."""
        doc = {
            "settings": self.settings,
            "null": {k: {"mean": v.value, "std": v.se} for k, v in self.null.items()},
            "rows": self.rows,
            "aggregate": self.aggregate(),
            "nfe_needed": self.nfe_needed(),
        }
        return _write(path, json.dumps(doc, indent=2, default=str) + "\n")

    def to_markdown(self, path: str | os.PathLike | None = None, *, aggregate: bool = True) -> str:
        """A Markdown table (the aggregate over seeds by default), plus the nulls and what each
        solver needs; written atomically when `path` is given."""
        lines = [
            f"{self.settings['problem']}, {self.settings['sde']}, n = {self.settings['n']}, "
            f"eps = {self.settings['eps']}, seeds = {self.settings['seeds']}; two-sample distances on "
            f"{self.settings['two_sample_n']} points per set",
            "",
        ]
        if self.null:
            lines.append(
                "exact-vs-exact null: "
                + ", ".join(f"{k} {v.value:.3g} ± {v.se:.2g}" for k, v in self.null.items())
            )
            lines.append("")
        metric_cols = []
        for m in self.settings["metrics"]:
            metric_cols.append(m)
            if m in TWO_SAMPLE:
                metric_cols.append(f"{m}_z")
        header = ["solver", "budget", "NFE", "seconds", *metric_cols]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("| --- | --- | " + " | ".join("---:" for _ in header[2:]) + " |")
        source = self.aggregate() if aggregate else self.rows
        for r in source:
            cells = [r["solver"], _budget_str(r), f"{r['nfe']:.0f}", f"{r['seconds']:.2f}"]
            for m in metric_cols:
                v = r[m]
                if m in ANALYTIC:
                    cells.append(f"{v:+.4f} ± {r[f'{m}_se']:.4f}" if m == "log_prob_gap" else f"{v:.4f}")
                elif m.endswith("_z"):
                    cells.append(f"{v:.1f}")
                else:
                    cells.append(f"{v:.3g}")
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "| solver | NFE to be indistinguishable (a) | NFE to path error <= 1e-2 (b) |",
                  "| --- | ---: | ---: |"]  # fmt: skip
        for r in self.nfe_needed():
            a = "-" if r["nfe_indistinguishable"] is None else f"{r['nfe_indistinguishable']:.0f}"
            b = "-" if r["nfe_path_error"] is None else f"{r['nfe_path_error']:.0f}"
            lines.append(f"| {r['solver']} | {a} | {b} |")
        return _write(path, "\n".join(lines) + "\n")


def criteria_met(
    row: Mapping[str, Any], null: Mapping[str, M.Estimate], *, gap_tol: float = 0.02, tv_tol: float = 0.01
) -> bool:
    """Whether one row is indistinguishable from exact samples by the distributional tests.

    Mean log p gap within `gap_tol` + 3 SE (in absolute value), weight TV within the null's TV
    scale (its SE) + `tv_tol`, and every two-sample distance within the null's mean + 3 std (z <= 3).
    Metrics a row lacks are skipped.

    Args:
        row: One row of a `Comparison`.
        null: The comparison's exact-vs-exact null distributions, by metric.
        gap_tol: Allowed mean log p gap in nats, on top of 3 standard errors.
        tv_tol: Allowed weight TV on top of its sampling-noise scale.
    """
    if "log_prob_gap" in row and abs(row["log_prob_gap"]) > gap_tol + 3 * row["log_prob_gap_se"]:
        return False
    if "weight_tv" in row and row["weight_tv"] > row["weight_tv_se"] + tv_tol:
        return False
    return all(row[f"{m}_z"] <= 3 for m in TWO_SAMPLE if f"{m}_z" in row and m in null)


def compare(
    score: Score,
    sde: SDE,
    *,
    reference: GaussianMixture | Tensor,
    solvers: Sequence[str] | None = None,
    budgets: Mapping[str, Sequence[float]] | Sequence[float] | None = None,
    n: int = 5000,
    seeds: Sequence[int] = (0,),
    metrics: Sequence[str] | None = None,
    eps: float = 1e-3,
    null_pairs: int = 10,
    reference_steps: int = 2048,
    two_sample_n: int = 2000,
    problem: str | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> Comparison:
    r"""Run every solver at every budget and seed on `score`, and measure cost and accuracy.

    Args:
        score: The score (its `event_shape` is taken from `reference`).
        sde: The forward SDE.
        reference: A `GaussianMixture` (the exact $p_0$: exact samples of $p_\epsilon$ are drawn, and
            the analytic metrics are available) or a tensor of held-out data `(N, *event)` (two-sample
            metrics only; the null pairs are disjoint halves of it).
        solvers: Names from `solvers()`; default `DEFAULT_SOLVERS`.
        budgets: `{solver: [budget, ...]}` or one list for every solver: integers are steps (fixed-step
            solvers), floats below 1 are tolerances rtol = atol (adaptive ones). Default: each
            solver's own `Solver.budgets`.
        n: Samples per solve.
        seeds: One row per seed; each seed fixes the prior draws and the Brownian path.
        metrics: A subset of `METRICS`; default all that apply to the reference.
        eps: Final time of every solve (and of the exact reference $p_\epsilon$).
        null_pairs: Exact-vs-exact pairs for the two-sample nulls (>= 2; docs/architecture.md asks for >= 10).
        reference_steps: Steps of the fine `sde:euler` / `sde:srk` solve that stochastic solvers'
            path errors read against.
        two_sample_n: Points of each set the two-sample distances use (MMD and energy cost
            O(n^2)); their nulls are computed at the same size, so z-scores stay comparable.
        problem: A name for the tables (default: the reference's description).
        device: Where the solves run (default: the data reference's device, else CPU).
        progress: A progress bar over the solves.

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
    infos = {name: get_solver(name) for name in solvers}
    if isinstance(reference, GaussianMixture):
        event_shape: tuple[int, ...] = (reference.dim,)
        analytic = True
    elif isinstance(reference, Tensor):
        if reference.dim() < 2 or reference.shape[0] < 4:
            raise ValueError(
                f"reference must be held-out data (N >= 4, *event), got shape {tuple(reference.shape)}"
            )
        event_shape = tuple(reference.shape[1:])
        analytic = False
    else:
        raise TypeError(f"reference must be a GaussianMixture or a tensor of data, got {describe(reference)}")
    score_shape = getattr(score, "event_shape", None)
    if score_shape is not None and tuple(score_shape) != event_shape:
        raise ValueError(f"reference has event shape {event_shape} but the score's is {tuple(score_shape)}")
    available = METRICS if analytic else ("path_error", *TWO_SAMPLE)
    metrics = list(available if metrics is None else metrics)
    for m in metrics:
        if m not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}; got {m!r}")
        if m not in available:
            raise ValueError(f"metric {m!r} needs an analytic reference (a GaussianMixture), not data")
    plan = _plan(solvers, infos, budgets)
    check_positive(n, "n", integer=True)
    check_positive(null_pairs, "null_pairs", integer=True)
    check_positive(reference_steps, "reference_steps", integer=True)
    check_positive(two_sample_n, "two_sample_n", integer=True)
    seeds = [int(s) for s in seeds]
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct non-negative integers, got {seeds!r}")
    if null_pairs < 2:
        raise ValueError(f"null_pairs must be >= 2, got {null_pairs}")

    if device is None:
        device = reference.device if isinstance(reference, Tensor) else torch.device("cpu")
    device = torch.device(device)

    # The reference set and the exact-vs-exact nulls of the two-sample metrics.
    two_sample = [m for m in metrics if m in TWO_SAMPLE]
    if analytic:
        p_eps = reference.marginal(eps, sde)

        m_two = min(n, two_sample_n)

        def draw(i: int) -> Tensor:
            return p_eps.sample(m_two, seed=1_000_003 + i, dtype=torch.float32)

        ref_set = draw(-1)
    else:
        data = reference.to(torch.float32).cpu()
        m_two = min(n, two_sample_n, data.shape[0] // 2)

        def draw(i: int) -> Tensor:
            g = torch.Generator().manual_seed(1_000_003 + i // 2)
            perm = torch.randperm(data.shape[0], generator=g)
            half = perm[:m_two] if i % 2 == 0 else perm[m_two : 2 * m_two]
            return data[half]

        ref_set = data[:m_two]
    null = {m: M.null_distribution(TWO_SAMPLE[m], draw, pairs=null_pairs) for m in two_sample}

    total = sum(len(b) for _, b in plan) * len(seeds)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="compare", dynamic_ncols=True, disable=None)
    rows: list[dict[str, Any]] = []
    kept: dict[tuple[str, float], Tensor] = {}
    counted = _CountingScore(score)
    try:
        for seed in seeds:
            gen = torch.Generator().manual_seed(seed)
            x_T = sde.prior_sample((n, *event_shape), generator=gen, dtype=torch.float32).to(device)
            refs: dict[str, Tensor] = {}
            for solver, budget_list in plan:
                info = infos[solver]
                for budget in budget_list:
                    if bar is not None:
                        bar.set_postfix_str(f"{solver} {_fmt_budget(budget)} seed {seed}", refresh=True)
                    kwargs = {"steps": int(budget)} if not info.adaptive else {"rtol": budget, "atol": budget}
                    counted.nfe = 0
                    res = sample(counted, sde, x_T=x_T, solver=solver, eps=eps, seed=seed, **kwargs)
                    if counted.nfe != res.nfe:  # the ledger and an independent counter must agree
                        raise RuntimeError(
                            f"{solver}: sample() reported {res.nfe} NFE, the score saw {counted.nfe}"
                        )
                    x = res.samples
                    row: dict[str, Any] = {
                        "solver": solver,
                        "family": info.family,
                        "budget_kind": "tolerance" if info.adaptive else "steps",
                        "budget": budget,
                        "seed": seed,
                        "nfe": res.nfe,
                        "seconds": res.seconds,
                    }
                    for m in metrics:
                        if m == "path_error":
                            key = info.reference or "ode"
                            if key not in refs:
                                refs[key] = _reference_solve(score, sde, x_T, key, eps, seed, reference_steps)
                            row[m] = M.path_error(x, refs[key])
                        elif m in TWO_SAMPLE:
                            val = TWO_SAMPLE[m](x[:m_two], ref_set)
                            row[m] = val
                            row[f"{m}_z"] = (val - null[m].value) / null[m].se if null[m].se > 0 else math.inf
                        elif m == "log_prob_gap":
                            est = M.log_prob_gap(x, reference, eps, sde)
                            row[m], row[f"{m}_se"] = est.value, est.se
                        else:
                            est = M.weight_tv(x, reference, eps, sde)
                            row[m], row[f"{m}_se"] = est.value, est.se
                    rows.append(row)
                    if seed == seeds[0]:
                        kept[(solver, budget)] = x
                    if bar is not None:
                        bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    settings = {
        "problem": problem or (f"GaussianMixture({reference.dim}-D, {reference.n_components} components)"
                               if analytic else f"data {tuple(reference.shape)}"),
        "sde": repr(sde),
        "n": n,
        "eps": eps,
        "seeds": seeds,
        "metrics": metrics,
        "reference": "analytic" if analytic else "data",
        "null_pairs": null_pairs,
        "reference_steps": reference_steps,
        "two_sample_n": m_two,
        "budgets": {s: list(b) for s, b in plan},
    }  # fmt: skip
    return Comparison(rows, null, settings, kept, ref_set)


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
    score: Score, sde: SDE, x_T: Tensor, key: str, eps: float, seed: int, steps: int
) -> Tensor:
    if key == "ode":
        x = x_T.to(torch.float64)
        out = sample(_Float64Score(score), sde, x_T=x, solver="ode:dopri5", rtol=1e-8, atol=1e-8, eps=eps)
        return out.samples.to(x_T.dtype)
    return sample(score, sde, x_T=x_T, solver=key, steps=steps, eps=eps, seed=seed).samples


class _Float64Score:
    """Runs a float32 score on float64 states (for the float64 reference solve of learned scores)."""

    def __init__(self, score: Score) -> None:
        self.score = score

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        try:
            out = self.score(x, t)
        except (RuntimeError, TypeError):
            return self.score(x.float(), t.float()).double()
        return out if out.dtype == x.dtype else out.to(x.dtype)


def _fmt_budget(b: float) -> str:
    return f"{b:g}" if isinstance(b, float) else str(b)


def _budget_str(row: Mapping[str, Any]) -> str:
    return f"tol={row['budget']:g}" if row["budget_kind"] == "tolerance" else f"steps={row['budget']:g}"


_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086)  # fmt: skip


def _t95(k: int) -> float:
    """The 97.5% quantile of Student's t with k - 1 degrees of freedom (table to 20; then 1.96 + 2.4/df,
    within 0.003 of the exact value)."""
    df = k - 1
    return _T975[df - 1] if df <= len(_T975) else 1.96 + 2.4 / df


def _write(path: str | os.PathLike | None, text: str) -> str:
    if path is not None:
        atomic_write_bytes(Path(path), text.encode())
    return text
