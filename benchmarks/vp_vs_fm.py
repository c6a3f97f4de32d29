"""VP path vs flow-matching (straight) path for the same data: the NFE each sampler needs, and where the
stiffness sits.

    python benchmarks/vp_vs_fm.py                  # ring2d, 3-D and 16-D mixtures, 3 seeds (about 40 min)
    python benchmarks/vp_vs_fm.py --problem ring2d # one problem
    python benchmarks/vp_vs_fm.py --small          # ring2d, one seed, n = 2000, four samplers (2 min)

The same mixture, exact score, on two paths: `VPSDE()` (eps = 1e-3) and `RectifiedFlow()` (T = 0.999),
which ends at the same noise level (the eps whose log-SNR equals VP's at 1e-3: sigma/alpha = 0.0105
on both), so both are judged against exact samples of the same p_eps up to the scaling of x. Every
sampler runs on its own default grid on each path; `ode:euler` also on SD3's shifted grid (shift 3,
`samplers.grids.shifted_grid`) on the straight path, what flow-matching pipelines run. `compare`'s
judge (every test of its battery on every seed, at that budget and every larger one tried, and a
paired path error <= 1e-2) gives the NFE each needs (`Comparison.nfe_needed`).

Then the stiffness: `analysis.jacobian_spectrum` along both paths (32 float64 PF-ODE trajectories),
drawn against each path's own time t and against the log-SNR lambda, where the two paths' PF-ODEs are
one ODE (`tests/test_flow.py`: the log-SNR samplers give the same y = x/alpha on both paths to 1e-14).
The figure goes to `--figure` (default docs/img/vp_vs_fm.png).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import diffsolve as ds
from diffsolve.analysis import jacobian_spectrum
from diffsolve.compare import compare
from diffsolve.samplers.grids import shifted_grid, t_of_log_snr

PROBLEMS = {
    "ring2d": lambda: ds.GaussianMixture.ring2d(),
    "3": lambda: ds.GaussianMixture.random(3, 8, seed=0),
    "16": lambda: ds.GaussianMixture.random(16, 8, seed=0),
}
BUDGETS = {  # steps; the same on both paths
    "ode:euler": [10, 20, 30, 50, 75, 100, 150, 200, 300, 500],
    "ode:heun2": [5, 10, 15, 20, 30, 40, 50, 75, 100, 150],
    "ode:rk4": [3, 5, 8, 10, 15, 20, 30, 40],
    "ode:dopri5": [1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5],
    "ddim": [10, 20, 30, 50, 75, 100, 150, 300],
    "dpm_solver++2m": [5, 10, 15, 20, 30, 40, 50, 75, 100],
    "deis": [5, 8, 10, 12, 15, 20, 25, 30, 40, 50, 75],
    "unipc": [5, 8, 10, 12, 15, 20, 25, 30, 40, 50, 75],
}
SMALL = ("ode:euler", "ode:rk4", "dpm_solver++2m", "unipc")
SHIFT = 3.0
VP_EPS = 1e-3


def matched_eps(vp: ds.SDE, path: ds.SDE) -> float:
    """The time on `path` with VP's log-SNR at VP_EPS: the same noise level sigma/alpha."""
    lam = vp.log_snr(torch.tensor([VP_EPS], dtype=torch.float64))
    return float(t_of_log_snr(path, lam, lo=1e-9, hi=path.T)[0])


def nfe_needed(table) -> dict[str, float | None]:
    return {r["solver"]: r["nfe_indistinguishable"] for r in table.nfe_needed()}


def study(mixture, solvers, seeds, n) -> tuple[dict, dict, dict, float]:
    vp, rf = ds.VPSDE(), ds.RectifiedFlow()
    fm_eps = matched_eps(vp, rf)
    budgets = {s: BUDGETS[s] for s in solvers}
    common = {
        "reference": mixture,
        "solvers": list(solvers),
        "budgets": budgets,
        "seeds": seeds,
        "n": n,
        "progress": False,
    }
    on_vp = nfe_needed(compare(mixture.score_fn(vp), vp, eps=VP_EPS, **common))
    on_fm = nfe_needed(compare(mixture.score_fn(rf), rf, eps=fm_eps, **common))
    steps = BUDGETS["ode:euler"]
    grids = {"ode:euler": {k: shifted_grid(rf, k, fm_eps, SHIFT) for k in steps}}
    shifted = compare(
        mixture.score_fn(rf), rf, eps=fm_eps, grids=grids,
        **(common | {"solvers": ["ode:euler"], "budgets": {"ode:euler": steps}}),
    )  # fmt: skip
    return on_vp, on_fm, nfe_needed(shifted), fm_eps


def fmt(v: float | None) -> str:
    return "never" if v is None else f"{v:.0f}"


def ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None else f"{b / a:.2f}"


def figure(mixture, path: Path, small: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from diffsolve.plotting import save_figure

    vp, rf = ds.VPSDE(), ds.RectifiedFlow()
    paths = {"VP": (vp, VP_EPS), "straight (flow matching)": (rf, matched_eps(vp, rf))}
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for (label, (sde, eps)), color in zip(paths.items(), ("C0", "C3"), strict=True):
        spec = jacobian_spectrum(
            mixture.score_fn(sde), sde, n=8 if small else 32, points=20 if small else 60, eps=eps
        )
        t = spec.times.double()
        ax0.loglog(t, spec.spectral_radius, color=color, label=label)
        # In y = x / alpha and lambda the PF-ODE's Jacobian is (J - f I) / (d lambda / dt), f = alpha'/alpha;
        # J is symmetric (f I minus g^2/2 times the score's Hessian-like Jacobian), so its eigenvalues are
        # real and lie in [min_real, max_real].
        h = 1e-6 * t
        dlam = (sde.log_snr(t + h) - sde.log_snr(t - h)).abs() / (2 * h)
        f = sde.drift(torch.ones(t.numel(), 1, dtype=torch.float64), t)[:, 0]
        radius = torch.maximum((spec.min_real.double() - f).abs(), (spec.max_real.double() - f).abs()) / dlam
        ax1.semilogy(sde.log_snr(t), radius, color=color, label=label, lw=3 if color == "C0" else 1.5)
    ax0.set(xlabel="t (each path's own time)", ylabel="spectral radius of the PF-ODE Jacobian (median)",
            title="in t: where an explicit solver in t must take small steps")  # fmt: skip
    ax1.set(xlabel=r"log-SNR $\lambda$", ylabel=r"spectral radius of $\partial (dy/d\lambda) / \partial y$",
            title=r"in $y = x/\alpha$ and $\lambda$: one ODE for both paths")  # fmt: skip
    for ax in (ax0, ax1):
        ax.legend()
    out = save_figure(fig, path, dpi=110)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", action="store_true", help="ring2d only, one seed, n = 2000, four samplers")
    parser.add_argument("--problem", choices=list(PROBLEMS), help="one problem only (default: all three)")
    parser.add_argument("--figure", default="docs/img/vp_vs_fm.png", help="where the stiffness figure goes")
    parser.add_argument("--no-figure", action="store_true", help="skip the stiffness figure")
    args = parser.parse_args()
    names = ["ring2d"] if args.small else [args.problem] if args.problem else list(PROBLEMS)
    solvers = SMALL if args.small else tuple(BUDGETS)
    seeds, n = ((0,), 2000) if args.small else ((0, 1, 2), 5000)
    print(f"seeds {list(seeds)}, n = {n}; NFE from which the samples are indistinguishable from exact ones\n")
    print("| problem | sampler | VP | straight path | straight / VP |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name in names:
        start = time.perf_counter()
        label = name if name == "ring2d" else f"{name}-D mixture"
        on_vp, on_fm, shifted, _ = study(PROBLEMS[name](), solvers, seeds, n)
        for solver in solvers:
            print(
                f"| {label} | {solver} | {fmt(on_vp[solver])} | {fmt(on_fm[solver])} | {ratio(on_vp[solver], on_fm[solver])} |"
            )
        euler = shifted["ode:euler"]
        print(
            f"| {label} | ode:euler, SD3 shift {SHIFT:g} grid | - | {fmt(euler)} | {ratio(on_vp['ode:euler'], euler)} |"
        )
        print(f"<!-- {label}: {time.perf_counter() - start:.0f} s -->", flush=True)
    if not args.no_figure:
        figure(PROBLEMS["ring2d"](), Path(args.figure), args.small)


if __name__ == "__main__":
    main()
