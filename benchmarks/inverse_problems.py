"""Inverse problems: how far each posterior sampler is from the exact posterior, per NFE.

For a Gaussian-mixture prior and y = A x0 + n, n ~ N(0, s^2 I), the posterior is a mixture in
closed form (`GaussianMixture.posterior`), so every method's samples are judged against it exactly
(`analysis.PosteriorJudge`: mean log p(x | y) gap, KS of log p, tail mass, kNN C2ST against exact
posterior draws, and the error of the sample mean). Every method gets the prior's exact score and
runs through `sample` on DDPM's ancestral step (`analysis.METHODS`), one seed, n samples, eps = 1e-3:

0. the judge's false-rejection rate on sets of exact posterior draws (100 per problem);
1. method x NFE on the three problems of `problems.INVERSE_PROBLEMS` (s = 0.2);
2. the noise level s (ring2d, NFE 200 and 1000);
3. DPS's guidance scale (ring2d, s = 0.2);
4. the start: the exact posterior score and replacement started at t0 < T from the noised observation
   A^+ y (score_sde#39's question), against the start from the prior at T.

Usage: `python benchmarks/inverse_problems.py [--small] [--figure docs/img/inverse_bias.png]`;
results in docs/benchmarks.md ("Inverse problems").
"""

from __future__ import annotations

import argparse
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import diffsolve as ds  # noqa: E402
from diffsolve import plotting  # noqa: E402
from diffsolve.analysis import METHODS, Method, PosteriorJudge, posterior_study  # noqa: E402
from diffsolve.problems import INVERSE_PROBLEMS, inverse_problem  # noqa: E402

EPS = 1e-3


def _cell(row: dict) -> str:
    mark = " ✓" if row["indistinguishable"] else ""
    gap, err = row["log_prob_gap"], row["mean_error"]
    if abs(gap) >= 1000 or err >= 1000:
        return f"{gap:+.0e} / {err:.0e} (diverged)"
    return f"{gap:+.2f} / {err:.2f}{mark}"


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def calibration(sde, sets, n):
    print(f"\n**The judge on exact posterior draws** ({sets} sets of n = {n} per problem, s = 0.2): sets judged "
          "distinguishable from the exact posterior (the false-rejection rate)\n")  # fmt: skip
    print("| problem | false rejections | by |")
    print("| --- | ---: | --- |")
    for name in INVERSE_PROBLEMS:
        prior, obs = inverse_problem(name, 0.2)
        post = obs.posterior(prior)
        judge, at_eps = PosteriorJudge(post, sde, eps=EPS), post.marginal(EPS, sde)
        failed = []
        for i in range(sets):
            row = judge(at_eps.sample(n, seed=10_000 + i, dtype=torch.float32)).as_row()
            if not row["indistinguishable"]:
                failed.append(
                    ", ".join(
                        k.removesuffix("_p") for k in ("ks_logp_p", "tail_mass_p", "c2st_p") if row[k] < 1e-3
                    )
                    or "gap/TV/mean"
                )
        print(f"| {name} | {len(failed)} of {sets} | {'; '.join(failed) or '-'} |")


def bias_tables(sde, nfe, n, figure, methods=None):
    fig, axes = plt.subplots(
        2, len(INVERSE_PROBLEMS), figsize=(5 * len(INVERSE_PROBLEMS), 7.5), layout="constrained"
    )
    for col, (name, text) in enumerate(INVERSE_PROBLEMS.items()):
        prior, obs = inverse_problem(name, 0.2)
        chosen = [METHODS[m] for m in methods] if methods else None
        rows = posterior_study(prior, sde, obs, methods=chosen, nfe=nfe, n=n, progress=_log)
        print(f"\n**{text}**, s = 0.2, n = {n}: mean log p(x | y) gap in nats / error of the sample mean "
              f"(noise scale {rows[0]['mean_error_se']:.3f}); ✓ = indistinguishable from exact posterior draws\n")  # fmt: skip
        print("| method | " + " | ".join(f"NFE {k}" for k in nfe) + " |")
        print("| --- | " + " | ".join("---:" for _ in nfe) + " |")
        for method in methods or METHODS:
            mine = [r for r in rows if r["method"] == method]
            print(f"| {method} | " + " | ".join(_cell(r) for r in mine) + " |")
            axes[0, col].loglog(
                [r["nfe"] for r in mine],
                [max(abs(r["log_prob_gap"]), 1e-3) for r in mine],
                "o-",
                label=method,
            )
            axes[1, col].loglog([r["nfe"] for r in mine], [r["mean_error"] for r in mine], "o-", label=method)
        axes[0, col].set(title=name, ylabel="|mean log p(x | y) gap| (nats)", ylim=(1e-3, 1e3))
        axes[1, col].set_ylim(top=1e2)  # diverged solves (DPS at low NFE) leave the plot
        axes[1, col].axhline(2 * rows[0]["mean_error_se"], color="0.6", ls="--", label="2 x noise scale")
        axes[1, col].set(xlabel="NFE", ylabel="error of the posterior mean")
    axes[0, 0].legend()
    axes[1, 0].legend()
    if figure:
        plotting.save_figure(fig, figure)


def noise_sweep(sde, nfe, n):
    print(
        f"\n**The noise level s** (ring2d, n = {n}): gap / mean error at NFE {' and '.join(map(str, nfe))}\n"
    )
    print("| s | " + " | ".join(f"{m} @ {k}" for m in METHODS for k in nfe) + " |")
    print("| ---: | " + " | ".join("---:" for _ in METHODS for _ in nfe) + " |")
    for s in (0.05, 0.2, 0.5):
        prior, obs = inverse_problem("ring2d", s)
        rows = posterior_study(prior, sde, obs, nfe=nfe, n=n, progress=_log)
        print(f"| {s:g} | " + " | ".join(_cell(r) for r in rows) + " |")


def scale_sweep(sde, nfe, n):
    prior, obs = inverse_problem("ring2d", 0.2)
    methods = [Method(f"dps x{z:g}", "ddim_eta", lambda s, o, p, e, z=z: ds.dps(s, o, scale=z, sde=e))
               for z in (0.1, 0.3, 1.0, 3.0)]  # fmt: skip
    rows = posterior_study(prior, sde, obs, methods=methods, nfe=nfe, n=n, progress=_log)
    print(f"\n**DPS's guidance scale** (ring2d, s = 0.2, n = {n}): gap / mean error\n")
    print("| scale | " + " | ".join(f"NFE {k}" for k in nfe) + " |")
    print("| ---: | " + " | ".join("---:" for _ in nfe) + " |")
    for m in methods:
        print(
            f"| {m.name.split('x')[1]} | "
            + " | ".join(_cell(r) for r in rows if r["method"] == m.name)
            + " |"
        )


def start_sweep(sde, steps, n):
    prior, obs = inverse_problem("ring2d", 0.2)
    post = obs.posterior(prior)
    judge = PosteriorJudge(post, sde, eps=EPS)
    print(f"\n**The start** (ring2d, s = 0.2, n = {n}, {steps} steps from t0): from the prior at T, or from "
          "the noised observation x_t0 = alpha A^+ y + sigma z at t0 < T\n")  # fmt: skip
    print("| t0 | exact posterior score | replacement |")
    print("| ---: | ---: | ---: |")
    pinv = torch.linalg.pinv(obs.A)
    for t0 in (1.0, 0.5, 0.2):
        grid = torch.linspace(t0, EPS, steps + 1, dtype=torch.float64)
        alpha, sigma = sde.marginal(torch.tensor(t0, dtype=torch.float64))
        z = torch.randn(n, prior.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        start = (alpha * (pinv @ obs.y) + sigma * z).float()
        cells = []
        for score, solver, kw in (
            (post.score_fn(sde), "ddim_eta", {}),
            (prior.score_fn(sde), "replacement", {"observation": obs}),
        ):
            out = ds.sample(score, sde, x_T=start, solver=solver, time_grid=grid, eps=EPS, seed=0, **kw)
            cells.append(_cell(judge(out.samples).as_row()))
        print(f"| {t0:g} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="two budgets, 1000 samples (a smoke run)")
    parser.add_argument("--figure", default=None, help="where to save the bias-per-NFE figure (PNG)")
    parser.add_argument(
        "--methods", default=None,
        help="comma-separated names of analysis.METHODS: only their bias tables (no calibration or sweeps)",
    )  # fmt: skip
    args = parser.parse_args()
    sde = ds.VPSDE()
    n = 1000 if args.small else 5000
    nfe = (10, 100) if args.small else (10, 20, 50, 100, 200, 500, 1000)
    print(f"VP SDE, eps = {EPS:g}, seed 0, n = {n}; every method gets the prior's exact score")
    if args.methods:
        bias_tables(sde, nfe, n, args.figure, [m.strip() for m in args.methods.split(",")])
        return
    calibration(sde, 10 if args.small else 100, n)
    bias_tables(sde, nfe, n, args.figure)
    sweep = (100,) if args.small else (200, 1000)
    noise_sweep(sde, sweep, n)
    scale_sweep(sde, sweep, n)
    start_sweep(sde, 50 if args.small else 500, n)


if __name__ == "__main__":
    main()
