"""Figures: work–precision diagrams, sample grids, trajectories. matplotlib is imported on first use.

Colours are the Okabe–Ito palette (safe for the common colour-vision deficiencies); each solver
also gets its own marker and line style, so the lines stay apart in greyscale and past 8 solvers.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .analysis import ConvergenceResult, JacobianSpectrum, StepDiagnostics
    from .compare import Comparison
    from .sampling import SampleResult

__all__ = [
    "OKABE_ITO",
    "style",
    "work_precision",
    "sample_grid",
    "image_grid",
    "trajectories",
    "convergence",
    "step_sizes",
    "jacobian_spectrum",
    "save_figure",
]

OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
"""The Okabe–Ito palette, distinguishable under the common colour-vision deficiencies."""
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
_LINES = ("-", "--", "-.", ":")

_LABELS = {
    "path_error": "paired path error (RMS)",
    "sliced_w2": "sliced W2 to reference",
    "mmd": "MMD² to reference",
    "energy": "energy distance to reference",
    "log_prob_gap": "|mean log p gap| (nats)",
    "weight_tv": "component-weight TV",
}


def _figure(ax: Axes | None, size: tuple[float, float]) -> tuple[Figure, Axes]:
    """The figure of `ax`, or a new figure and axes of `size` inches when `ax` is None."""
    import matplotlib.pyplot as plt

    if ax is None:
        return plt.subplots(figsize=size, layout="constrained")
    return ax.figure, ax


def style(i: int) -> dict[str, Any]:
    """Colour, marker and line style of the i-th line.

    Args:
        i: Index of the line; colours (Okabe–Ito) and markers cycle.

    Returns:
        Keyword arguments for `Axes.plot`: `color`, `marker`, `linestyle`.
    """
    return {
        "color": OKABE_ITO[i % len(OKABE_ITO)],
        "marker": _MARKERS[i % len(_MARKERS)],
        "linestyle": _LINES[(i // len(OKABE_ITO)) % len(_LINES)],
    }


def work_precision(
    comparison: Comparison,
    metric: str = "path_error",
    *,
    x: str = "nfe",
    ax: Axes | None = None,
    target: float | None = None,
) -> Figure:
    """Error against cost, log–log, one line per solver (means over seeds, 95% intervals as bars).

    The noise floor is drawn where there is one: the exact-vs-exact mean and mean + 3 std for the
    two-sample distances, 3 SE for the log p gap and the TV's sampling scale for the weight TV.

    Args:
        comparison: What `compare` returned.
        metric: One of the comparison's metrics.
        x: `"nfe"` or `"seconds"`.
        ax: Axes to draw on (default: a new figure).
        target: Also draw a horizontal line at this error (e.g. 1e-2 for the path error).

    Raises:
        ValueError: On a metric the comparison lacks, or another `x`.
    """
    if metric not in comparison.settings["metrics"]:
        raise ValueError(f"metric must be one of {comparison.settings['metrics']}; got {metric!r}")
    if x not in ("nfe", "seconds"):
        raise ValueError(f"x must be 'nfe' or 'seconds', got {x!r}")
    fig, ax = _figure(ax, (6.4, 4.6))
    agg = comparison.aggregate()
    floor_se = []
    for i, solver in enumerate(dict.fromkeys(r["solver"] for r in agg)):
        rows = sorted((r for r in agg if r["solver"] == solver), key=lambda r: r[x])
        xs = [r[x] for r in rows]
        ys = [abs(r[metric]) for r in rows]
        err = [r[f"{metric}_ci"] for r in rows]
        ax.errorbar(xs, ys, yerr=err if any(err) else None, label=solver, markersize=5, capsize=2, **style(i))
        if f"{metric}_se" in rows[0]:
            floor_se += [r[f"{metric}_se"] for r in rows]
    if metric in comparison.null:
        null = comparison.null[metric]
        ax.axhspan(max(null.value - null.se, 1e-300), null.value + 3 * null.se, color="0.85", zorder=0,
                   label="exact vs exact (mean ± std, to +3 std)")  # fmt: skip
        ax.axhline(null.value, color="0.5", linewidth=0.8, zorder=0)
    elif floor_se:
        scale = (
            3 * sum(floor_se) / len(floor_se) if metric == "log_prob_gap" else sum(floor_se) / len(floor_se)
        )
        ax.axhline(scale, color="0.5", linestyle=":", label="sampling-noise scale", zorder=0)
    if target is not None:
        ax.axhline(target, color="0.2", linestyle="--", linewidth=0.8, label=f"target {target:g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("score evaluations (NFE)" if x == "nfe" else "wall-clock seconds")
    ax.set_ylabel(_LABELS.get(metric, metric))
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    ax.set_title(f"{comparison.settings['problem']}: {_LABELS.get(metric, metric)} vs {x.upper() if x == 'nfe' else x}",
                 fontsize=10)  # fmt: skip
    return fig


def sample_grid(
    comparison: Comparison,
    *,
    budget: str = "smallest",
    max_points: int = 3000,
    dims: tuple[int, int] = (0, 1),
) -> Figure:
    """Scatter plots of each solver's samples (first seed) beside the reference set (image-shaped
    samples: a grid of the first 16 images per panel, `image_grid`).

    Args:
        comparison: What `compare` returned.
        budget: Which budget of each solver to show: `"smallest"` or `"largest"` (by NFE).
        max_points: Points drawn per panel.
        dims: The two coordinates to plot (the event is flattened).
    """
    import matplotlib.pyplot as plt

    if budget not in ("smallest", "largest"):
        raise ValueError(f"budget must be 'smallest' or 'largest', got {budget!r}")
    panels: list[tuple[str, Tensor]] = []
    if comparison.reference_samples is not None:
        panels.append(("reference", comparison.reference_samples))
    nfe = {(r["solver"], r["budget"]): r["nfe"] for r in comparison.aggregate()}
    for solver in dict.fromkeys(s for s, _ in comparison.samples):
        keys = sorted((k for k in comparison.samples if k[0] == solver), key=lambda k: nfe[k])
        key = keys[0] if budget == "smallest" else keys[-1]
        panels.append((f"{solver}, NFE {nfe[key]:.0f}", comparison.samples[key]))
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(2.6 * cols, 2.6 * rows), squeeze=False, layout="constrained"
    )
    ref = panels[0][1].flatten(1)[:max_points]
    lo, hi = ref[:, list(dims)].min(0).values, ref[:, list(dims)].max(0).values
    pad = 0.15 * (hi - lo)
    for ax, (title, pts) in zip(axes.flat, panels, strict=False):
        if pts.dim() == 4 and pts.shape[1] in (1, 3):  # images: a tile of the first 16, not a scatter
            image_grid(pts[:16], ax=ax, title=title)
            continue
        p = pts.flatten(1)[:max_points].cpu()
        ax.scatter(p[:, dims[0]], p[:, dims[1]], s=1, alpha=0.4, color=OKABE_ITO[0], rasterized=True)
        ax.set_title(title, fontsize=8)
        ax.set_xlim(float(lo[0] - pad[0]), float(hi[0] + pad[0]))
        ax.set_ylim(float(lo[1] - pad[1]), float(hi[1] + pad[1]))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_aspect("equal")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    return fig


def image_grid(
    images: Tensor,
    *,
    nrow: int | None = None,
    value_range: tuple[float, float] = (-1.0, 1.0),
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Image-shaped samples `(B, C, H, W)` (C = 1 or 3) tiled in a grid, one pixel per pixel.

    Values are clipped to `value_range` (the data's scale: [-1, 1] for diffsolve's image datasets)
    and shown in grey (C = 1) or colour (C = 3); a one-pixel gap separates the tiles.

    Args:
        images: The samples, `(B, C, H, W)`.
        nrow: Images per row (default: about the square root of B).
        value_range: The values mapped to black and white.
        ax: Axes to draw into (default: a new figure).
        title: A title for the axes.

    Raises:
        ValueError: If `images` is not `(B, 1 or 3, H, W)` or `value_range` is empty.
    """
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] not in (1, 3):
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor (B, C, H, W) with C = 1 or 3, got {got}")
    lo, hi = (float(v) for v in value_range)
    if not hi > lo:
        raise ValueError(f"value_range must be (low, high) with high > low, got {value_range!r}")
    b, c, h, w = images.shape
    nrow = max(1, int(nrow) if nrow is not None else math.ceil(math.sqrt(b)))
    rows = -(-b // nrow)
    canvas = torch.ones(c, rows * (h + 1) + 1, nrow * (w + 1) + 1)
    x = ((images.detach().float().cpu() - lo) / (hi - lo)).clamp(0, 1)
    for i in range(b):
        r, col = divmod(i, nrow)
        canvas[:, 1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + col * (w + 1) : 1 + col * (w + 1) + w] = x[i]
    inches = [min(12.0, max(2.0, n / 14)) for n in (canvas.shape[2], canvas.shape[1])]  # ~14 pixels an inch
    fig, ax = _figure(ax, (inches[0], inches[1]))
    if c == 1:
        ax.imshow(canvas[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(canvas.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=9)
    return fig


def trajectories(result: SampleResult, *, paths: int = 50, dim: int = 0, ax: Axes | None = None) -> Figure:
    """One coordinate of `paths` sample paths against forward time (from `sample(..., return_trajectory=True)`).

    Args:
        result: A `SampleResult` with a trajectory.
        paths: How many paths to draw (the first ones).
        dim: Which coordinate of the flattened event to plot.
        ax: Axes to draw on; None makes a new figure.

    Returns:
        The figure.

    Raises:
        ValueError: If the result holds no trajectory.
    """
    if result.trajectory is None or result.times is None:
        raise ValueError("the result has no trajectory: call sample(..., return_trajectory=True)")
    fig, ax = _figure(ax, (6.4, 4))
    traj = result.trajectory.flatten(2)[:, :paths, dim].cpu()
    t = result.times.cpu()
    for i in range(traj.shape[1]):
        ax.plot(t, traj[:, i], color=OKABE_ITO[i % len(OKABE_ITO)], linewidth=0.7, alpha=0.7)
    ax.set_xlabel("forward time t (the solve runs from T down to eps)")
    ax.set_ylabel(f"x[{dim}]")
    ax.invert_xaxis()
    ax.set_title(f"{result.settings['solver']}: {traj.shape[1]} paths", fontsize=10)
    return fig


def convergence(results: ConvergenceResult | list[ConvergenceResult], *, ax: Axes | None = None) -> Figure:
    """Error against step size h, log–log, with 95% intervals and the fitted slope drawn over the
    points the fit used (labelled with the measured order and its interval).

    Args:
        results: One `ConvergenceResult` or several, one line each.
        ax: Axes to draw on; None makes a new figure.

    Returns:
        The figure.
    """
    results = results if isinstance(results, list) else [results]
    fig, ax = _figure(ax, (6.4, 4.6))
    for i, r in enumerate(results):
        st = style(i)
        lo = [e - c[0] for e, c in zip(r.errors, r.errors_ci, strict=True)]
        hi = [c[1] - e for e, c in zip(r.errors, r.errors_ci, strict=True)]
        ax.errorbar(r.step_sizes, r.errors, yerr=[lo, hi], color=st["color"], marker=st["marker"], linestyle="none",
                    capsize=2, markersize=5)  # fmt: skip
        h = [r.step_sizes[j] for j in r.used]
        e = [r.errors[j] for j in r.used]
        # the fitted line through the used points' geometric centre
        hc = math.exp(sum(math.log(v) for v in h) / len(h))
        ec = math.exp(sum(math.log(v) for v in e) / len(e))
        ax.plot([min(h), max(h)], [ec * (min(h) / hc) ** r.order, ec * (max(h) / hc) ** r.order],
                color=st["color"], linestyle=st["linestyle"],
                label=f"{r.solver} ({r.kind}): {r.order:.2f} [{r.order_ci[0]:.2f}, {r.order_ci[1]:.2f}]")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("step size h")
    ax.set_ylabel("error")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, title="measured order [95% interval]", title_fontsize=8)
    return fig


def step_sizes(diagnostics: StepDiagnostics | list[StepDiagnostics], *, ax: Axes | None = None) -> Figure:
    """Accepted (filled) and rejected (open) step sizes of adaptive PF-ODE solves against forward time.

    Args:
        diagnostics: One `StepDiagnostics` or several, one colour each.
        ax: Axes to draw on; None makes a new figure.

    Returns:
        The figure.
    """
    diagnostics = diagnostics if isinstance(diagnostics, list) else [diagnostics]
    fig, ax = _figure(ax, (6.4, 4.6))
    for i, d in enumerate(diagnostics):
        st = style(i)
        label = f"{d.settings['solver']} rtol={d.settings['rtol']:g}, eps={d.settings['eps']:g} (NFE {d.nfe})"
        if d.accepted:
            t, h = zip(*d.accepted, strict=True)
            ax.plot(t, h, color=st["color"], marker=st["marker"], markersize=4, linestyle="-", linewidth=0.8,
                    label=label)  # fmt: skip
        if d.rejected:
            t, h = zip(*d.rejected, strict=True)
            ax.plot(t, h, color=st["color"], marker=st["marker"], markersize=5, linestyle="none",
                    markerfacecolor="none")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("forward time t at the step's start (the solve runs from T down to eps)")
    ax.set_ylabel("step size h (open markers: rejected)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def jacobian_spectrum(spectra: dict[str, JacobianSpectrum], *, ax: Axes | None = None) -> Figure:
    """Spectral radius (solid) and most negative real part (dashed, as |.|) of the PF-ODE drift's
    Jacobian against forward time, one colour per labelled spectrum.

    Args:
        spectra: `JacobianSpectrum` results by label (the legend).
        ax: Axes to draw on; None makes a new figure.

    Returns:
        The figure.
    """
    fig, ax = _figure(ax, (6.4, 4.6))
    for i, (label, sp) in enumerate(spectra.items()):
        c = OKABE_ITO[i % len(OKABE_ITO)]
        ax.plot(sp.times, sp.spectral_radius, color=c, label=f"{label}: spectral radius")
        ax.plot(sp.times, sp.min_real.abs(), color=c, linestyle="--", label=f"{label}: |most negative Re|")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("forward time t")
    ax.set_ylabel("eigenvalue magnitude of the drift's Jacobian")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike, **kwargs: Any) -> Path:
    """`fig.savefig` through a temporary file and an atomic rename: no half-written image on disk.

    Args:
        fig: The figure.
        path: Where to write; matplotlib picks the format from the suffix (`.png`, `.pdf`, `.svg`, ...).
        **kwargs: Passed on to `savefig` (default `dpi=150`).

    Returns:
        The path written.
    """
    from .io import atomic_write

    return atomic_write(path, lambda tmp: fig.savefig(tmp, **{"dpi": 150, **kwargs}), keep_suffix=True)
