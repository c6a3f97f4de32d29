r"""`Comparison`: the table `compare()` returns, its summaries and its exports.

One row per (solver, budget, seed) with NFE, seconds and every metric; `aggregate()` averages over
seeds with Student-t intervals; `nfe_needed()` reads off the smallest budget that meets the
noise-aware criteria of docs/architecture.md ("How sample quality is judged"); CSV, JSON and
Markdown exports are written atomically (`diffsolve.io`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import metrics as M
from .io import atomic_write_bytes

__all__ = ["Comparison", "criteria_met", "METRICS", "TWO_SAMPLE", "ANALYTIC", "TESTS", "ALPHA", "Z_MAX"]

TWO_SAMPLE = {
    "sliced_w2": M.sliced_wasserstein, "mmd": M.mmd, "energy": M.energy_distance,
    "digits_fd": M.digits_frechet_distance,
}  # fmt: skip
EVENT_SHAPES = {"digits_fd": (1, 8, 8)}
"""Metrics that apply to one event shape only (the digits' Fréchet distance: 8x8 grey images)."""
ANALYTIC = ("log_prob_gap", "weight_tv")
TESTS = ("ks_logp", "tail_mass", "c2st")
"""Hypothesis tests of the whole distribution (`diffsolve.judge`): rows carry `<test>` (the statistic)
and `<test>_p` (its p-value). `ks_logp` and `tail_mass` need the exact density (analytic references);
`c2st` needs none."""
DENSITY_TESTS = ("ks_logp", "tail_mass")
Z_MAX = 5.0
"""The largest z-score of a two-sample distance (sliced W2, MMD, energy) against its exact-vs-exact
null that `criteria_met` accepts. The nulls are 20 exact pairs and right-skewed, so z <= 3 rejected
4.5% of exact 16-D sets; at 5 the distances catch gross failures and the tests below carry the power
(docs/benchmarks.md, "The judge")."""
ALPHA = 1e-3
"""Each test's level in `criteria_met`: with the other criteria, the whole battery rejects at most 1% of
exact sample sets (measured by `benchmarks/judge_calibration.py`; docs/benchmarks.md, "The judge")."""
METRICS = ("path_error", *TWO_SAMPLE, *ANALYTIC, *TESTS)
"""Every metric `compare` can report: path error, two-sample distances, the analytic ones, the tests."""


@dataclass
class Comparison:
    """What `compare` returns: one row per (solver, budget, seed), the nulls, and seed-0 samples.

    Attributes:
        rows: Dicts with `solver`, `family`, `budget` (steps or tolerance), `budget_kind`, `seed`,
            `nfe`, `seconds`, every metric, `<metric>_se` for the analytic ones, `<metric>_z`
            for the two-sample ones and `<test>_p` (the p-value) for the tests.
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
            if m in TESTS:
                cols.append(f"{m}_p")
        return cols

    def aggregate(self) -> list[dict[str, Any]]:
        """Per (solver, budget): the mean over seeds of NFE, seconds and every metric, with the
        half-width of a 95% Student-t interval (`<name>_ci`; 0 with one seed). A p-value column
        (`<test>_p`) holds the smallest p-value over the seeds instead: the worst seed decides."""
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
                if c.endswith("_p") and c[:-2] in TESTS:
                    agg[c], agg[f"{c}_ci"] = float(vals.min()), 0.0
                    continue
                agg[c] = float(vals.mean())
                agg[f"{c}_ci"] = (
                    _t95(len(rows)) * float(vals.std()) / math.sqrt(len(rows)) if len(rows) > 1 else 0.0
                )
            out.append(agg)
        return out

    def nfe_needed(
        self,
        *,
        path_tol: float = 1e-2,
        gap_tol: float = 0.02,
        tv_tol: float = 0.01,
        alpha: float = ALPHA,
        z_max: float = Z_MAX,
    ) -> list[dict[str, Any]]:
        """For every solver, the smallest mean NFE from which every larger budget tried meets (a) and (b).

        (a) indistinguishable from exact samples: `criteria_met(row, ...)` (every test of the battery
        the rows carry) for every seed;
        (b) paired path error <= `path_tol` for every seed. A budget that passes while a larger one
        fails does not count (a lucky pass is not a guarantee). `None` where the largest budget fails.
        """
        out = []
        by_solver: dict[str, dict[float, list[dict[str, Any]]]] = {}
        for row in self.rows:
            by_solver.setdefault(row["solver"], {}).setdefault(row["budget"], []).append(row)
        for solver, budgets in by_solver.items():
            a = b = None
            a_open = b_open = True  # every larger budget passed so far
            for rows in sorted(budgets.values(), key=lambda rs: -sum(r["nfe"] for r in rs)):
                nfe = sum(r["nfe"] for r in rows) / len(rows)
                a_open = a_open and all(
                    criteria_met(r, self.null, gap_tol=gap_tol, tv_tol=tv_tol, alpha=alpha, z_max=z_max)
                    for r in rows
                )
                b_open = b_open and "path_error" in rows[0] and all(r["path_error"] <= path_tol for r in rows)
                a = nfe if a_open else a
                b = nfe if b_open else b
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
            if m in TESTS:
                metric_cols.append(f"{m}_p")
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
                elif m.endswith("_p"):
                    cells.append(f"{v:.2g}")
                else:
                    cells.append(f"{v:.3g}")
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "(a): every test of the battery at every seed, at that budget and every larger one "
                  f"(`criteria_met`: tests at level {ALPHA:g}, distances at z <= {Z_MAX:g}).", "",
                  "| solver | NFE to be indistinguishable (a) | NFE to path error <= 1e-2 (b) |",
                  "| --- | ---: | ---: |"]  # fmt: skip
        for r in self.nfe_needed():
            a = "-" if r["nfe_indistinguishable"] is None else f"{r['nfe_indistinguishable']:.0f}"
            b = "-" if r["nfe_path_error"] is None else f"{r['nfe_path_error']:.0f}"
            lines.append(f"| {r['solver']} | {a} | {b} |")
        return _write(path, "\n".join(lines) + "\n")


def criteria_met(
    row: Mapping[str, Any],
    null: Mapping[str, M.Estimate],
    *,
    gap_tol: float = 0.02,
    tv_tol: float = 0.01,
    alpha: float = ALPHA,
    z_max: float = Z_MAX,
) -> bool:
    """Whether one row is indistinguishable from exact samples by every test of the battery.

    Mean log p gap within `gap_tol` + 3 SE (in absolute value), weight TV within the null's TV
    scale (its SE) + `tv_tol`, every two-sample distance within the null's mean + `z_max` std,
    and every hypothesis test (`TESTS`: KS of log p, tail mass, C2ST) with p-value >= `alpha`.
    Metrics a row lacks are skipped.

    Args:
        row: One row of a `Comparison`.
        null: The comparison's exact-vs-exact null distributions, by metric.
        gap_tol: Allowed mean log p gap in nats, on top of 3 standard errors.
        tv_tol: Allowed weight TV on top of its sampling-noise scale.
        alpha: The level of each hypothesis test.
        z_max: The largest accepted z-score of a two-sample distance.
    """
    if "log_prob_gap" in row and abs(row["log_prob_gap"]) > gap_tol + 3 * row["log_prob_gap_se"]:
        return False
    if "weight_tv" in row and row["weight_tv"] > row["weight_tv_se"] + tv_tol:
        return False
    if any(row[f"{m}_p"] < alpha for m in TESTS if f"{m}_p" in row):
        return False
    return all(row[f"{m}_z"] <= z_max for m in TWO_SAMPLE if f"{m}_z" in row and m in null)


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
