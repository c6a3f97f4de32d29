"""Work–precision for likelihood: error against the analytic log p_eps vs NFE and seconds.

    python benchmarks/likelihood_work_precision.py [--out docs/img/likelihood_work_precision.png]

ring2d, VP SDE, exact score, 500 exact points of p_eps (eps = 1e-5) in float64, exact divergence,
the exact prior log p_T (so the error is the solver's alone). Adaptive dopri5, bosh3, adaptive_heun
at rtol = atol = 1e-2 .. 1e-7; fixed-step rk4 at 4 .. 128 steps. Prints the table, saves the plot.
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import diffsolve as ds  # noqa: E402
from diffsolve import analysis, plotting  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="docs/img/likelihood_work_precision.png")
    args = parser.parse_args()
    gm, sde = ds.GaussianMixture.ring2d(), ds.VPSDE()
    x = gm.marginal(1e-5, sde).sample(500, seed=4, dtype=torch.float64)
    rows = analysis.likelihood_work_precision(
        gm.score_fn(sde),
        sde,
        x,
        gm,
        tolerances=(1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7),
        steps=(4, 8, 16, 32, 64, 128),
    )
    print("| solver | budget | mean abs error (nats) | NFE | seconds |\n| --- | --- | ---: | ---: | ---: |")
    for r in rows:
        budget = f"tol={r['budget']:g}" if isinstance(r["budget"], float) else f"steps={r['budget']}"
        print(f"| {r['solver']} | {budget} | {r['error']:.2e} | {r['nfe']} | {r['seconds']:.3f} |")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), layout="constrained")
    for i, solver in enumerate(dict.fromkeys(r["solver"] for r in rows)):
        rs = [r for r in rows if r["solver"] == solver]
        for ax, key in zip(axes, ("nfe", "seconds"), strict=True):
            ax.loglog([r[key] for r in rs], [r["error"] for r in rs], label=solver, **plotting.style(i))
    for ax, key in zip(axes, ("NFE (augmented-ODE evaluations)", "seconds"), strict=True):
        ax.set_xlabel(key)
        ax.set_ylabel("mean |log p - analytic log p_eps| (nats)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Likelihood work–precision: ring2d, VP, exact score, 500 points, float64")
    plotting.save_figure(fig, args.out)
    print(f"plot: {args.out}")


if __name__ == "__main__":
    main()
