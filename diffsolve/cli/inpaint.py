"""`diffsolve inpaint`: complete partly observed samples with an inverse-problem method; judge and plot them."""

from __future__ import annotations

import argparse
import dataclasses
import io

from ._common import (
    HelpFormatter,
    UsageError,
    add_problem_args,
    output_file,
    positive_float,
    positive_int,
    problem_from_args,
    seed_int,
    write_file,
)

NAME = "inpaint"

REGIONS = ("top", "bottom", "left", "right", "center")
"""Named observed regions of an image (the rest is filled in)."""


CLI_METHODS = ("exact", "dps", "pigdm", "dps_ddpm", "pigdm_ddim", "replacement", "repaint")
"""The methods `--method` takes (`analysis.METHODS` by name); the score methods take `--solver`."""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `diffsolve inpaint` and its options."""
    p = sub.add_parser(
        NAME,
        help="fill in the unobserved part of samples (DPS, PiGDM, replacement, RePaint); judge and plot",
        description="Observe part of each of some held-out samples (y = A x0 + n, n ~ N(0, s^2 I): the "
        "--observe region of a digit, or some coordinates of a mixture draw) and sample the rest with "
        "an inverse-problem method. On an analytic problem the completions are judged against the "
        "exact posterior (docs/how-to/inverse-problems.md); on the digits by the shipped classifier "
        "(do the completions keep the digit?) and the digits Frechet distance to the test images. "
        "Completions are saved (atomically) as a .npy array (images, n, *event).",
        formatter_class=HelpFormatter,
    )
    add_problem_args(p)
    p.add_argument(
        "--method",
        choices=CLI_METHODS,
        default="repaint",
        help="exact: the exact posterior score (analytic problems only); dps, pigdm: the papers' likelihood "
        "terms as scores (any --solver); dps_ddpm, pigdm_ddim: the papers' own loops; replacement, repaint: "
        "projection solvers",
    )
    p.add_argument(
        "--solver",
        default=None,
        help="the solver of a score method (exact, dps, pigdm; default ddim_eta, DDPM's ancestral "
        "sampler); e.g. dpm_solver++2m_sde",
    )
    p.add_argument("--nfe", type=positive_int, default=200, help="score evaluations per completion")
    p.add_argument(
        "--observe",
        default=None,
        help=f"what is observed: an image region ({', '.join(REGIONS)}; default top) or comma-separated "
        "coordinate indices of a flat sample (default: its first half)",
    )
    p.add_argument("--noise-std", type=positive_float, default=0.05, help="the observation noise s (> 0)")
    p.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="guidance scale of dps, pigdm, dps_ddpm (zeta') and pigdm_ddim (1: the method's own)",
    )
    p.add_argument(
        "--images",
        type=positive_int,
        default=8,
        help="held-out samples to observe and complete (test images for image data, exact draws otherwise)",
    )
    p.add_argument(
        "--n", type=positive_int, default=None,
        help="completions of each observed sample (default: 8 for image data, 2000 on analytic problems)",
    )  # fmt: skip
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the solves and of the observation noise")
    p.add_argument("--out", default="inpainted.npy", help="where to save the completions (.npy)")
    p.add_argument("--plot", default=None, help="also save a figure: truth, observation and completions")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def _mask(text: str | None, shape: tuple[int, ...]):
    """The boolean mask of observed values, shaped like one sample."""
    import torch

    mask = torch.zeros(shape, dtype=torch.bool)
    if len(shape) == 3 and (text is None or text in REGIONS):
        h, w = shape[1:]
        region = text or "top"
        if region == "top":
            mask[:, : h // 2] = True
        elif region == "bottom":
            mask[:, h // 2 :] = True
        elif region == "left":
            mask[:, :, : w // 2] = True
        elif region == "right":
            mask[:, :, w // 2 :] = True
        else:
            mask[:, h // 4 : h - h // 4, w // 4 : w - w // 4] = True
        return mask
    flat = mask.view(-1)
    if text is None:
        flat[: max(1, flat.numel() // 2)] = True
        return mask
    try:
        idx = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(
            NAME,
            f"--observe must be a region ({', '.join(REGIONS)}) for images or indices like 0,2,5; got {text!r}",
        ) from None
    if not idx or any(not 0 <= i < flat.numel() for i in idx):
        raise UsageError(NAME, f"--observe indices must lie in 0..{flat.numel() - 1}, got {text!r}")
    flat[idx] = True
    return mask


def _truths(prob, count: int, seed: int):
    """`count` held-out samples to observe (and their digit labels, if the data are the digits)."""
    import torch

    from .. import datasets

    if prob.analytic:
        return prob.reference.sample(count, seed=seed, dtype=torch.float32), None
    if count > prob.reference.shape[0]:
        raise UsageError(
            NAME, f"--images {count} is more than the {prob.reference.shape[0]} held-out samples"
        )
    labels = None
    if tuple(prob.event_shape) == (1, 8, 8):
        labels = datasets.digits("test", return_labels=True)[1][:count]
    return prob.reference[:count].to(torch.float32), labels


def _complete(prob, args, method, truth, mask, k: int):
    """`args.n` completions of one observed sample: `(samples, nfe, seconds, observation, posterior)`."""
    from .. import sample
    from ..inverse import Observation, ObservationGuided
    from ..samplers import get_solver

    base = Observation.inpainting(mask, truth)
    obs = Observation.of(base.A, truth, args.noise_std, seed=args.seed + 1 + k)
    posterior = obs.posterior(prob.reference) if prob.analytic else None
    score = method.make_score(prob.score, obs, posterior, prob.sde)
    if isinstance(score, ObservationGuided):
        score.scale = float(args.scale)  # checked by run(): finite, >= 0
    options = dict(method.options)
    if "observation" in get_solver(method.solver).options:
        options["observation"] = obs
    if "scale" in get_solver(method.solver).options:
        options["scale"] = float(args.scale)
    out = sample(score, prob.sde, args.n, event_shape=prob.event_shape, solver=method.solver,
                 steps=method.steps(args.nfe), seed=args.seed + k, device=prob.device,
                 progress=not args.no_progress, **options)  # fmt: skip
    return out, obs, posterior


def _report_digits(x, labels, truths) -> None:
    import torch

    from .. import datasets, metrics
    from ..features import digits_classifier

    flat = x.reshape(-1, *x.shape[2:])
    with torch.no_grad():
        read = digits_classifier()(flat.clamp(-1, 1)).argmax(1).view(x.shape[0], x.shape[1])
    keep = (read == labels[:, None]).float().mean().item()
    print(f"digits classifier: {100 * keep:.0f}% of the completions read as the observed digit's class")
    # One completion per observed image: over the observations, posterior samples are distributed
    # as the data, so they are compared with the test images (and real training images give the floor).
    test = datasets.digits("test", scale="[-1, 1]")
    if x.shape[0] >= 100:
        train = datasets.digits("train", scale="[-1, 1]")[: x.shape[0]]
        fd, null = (
            metrics.digits_frechet_distance(x[:, 0], test),
            metrics.digits_frechet_distance(train, test),
        )
        print(f"digits Frechet distance to the test images, one completion per image: {fd:.2f} (as many "
              f"training images: {null:.2f})")  # fmt: skip
    else:
        print("digits Frechet distance: needs at least 100 observed images (--images)")


def _plot(x, truths, masks, prob, posterior_draws, path, title) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from ..plotting import OKABE_ITO, image_grid, save_figure

    if x.dim() == 5:  # images: per observed sample (the first 10), truth | observed | completions
        cols = min(x.shape[1], 6)
        x, truths, masks = x[:10], truths[:10], masks[:10]
        observed = torch.where(masks, truths, torch.zeros_like(truths))
        tiles = torch.cat([truths[:, None], observed[:, None], x[:, :cols]], 1)
        fig = image_grid(tiles.reshape(-1, *x.shape[2:]), nrow=cols + 2, title=title)
    else:
        fig, ax = plt.subplots(figsize=(4.8, 4.5), layout="constrained")
        if posterior_draws is not None:
            ax.scatter(
                posterior_draws[:, 0], posterior_draws[:, 1], s=1, color="0.7", label="exact posterior"
            )
        p = x[0].flatten(1).cpu()
        ax.scatter(p[:, 0], p[:, 1 if p.shape[1] > 1 else 0], s=1, color=OKABE_ITO[0], label="completions")
        ax.scatter(truths[0, 0].item(), truths[0, 1].item() if truths.shape[1] > 1 else 0, marker="x", color="k",
                   label="observed sample")  # fmt: skip
        ax.set(title=title, xlabel="x[0]", ylabel="x[1]")
        ax.legend(markerscale=6, fontsize=8)
    save_figure(fig, path)
    plt.close(fig)
    print(f"plot: {path}")


def run(args: argparse.Namespace) -> int:
    """Run `diffsolve inpaint`; returns the exit status."""
    import numpy as np
    import torch

    from ..analysis import METHODS, PosteriorJudge
    from ..samplers import get_solver

    prob = problem_from_args(args, NAME)
    out_path = output_file(args.out, NAME)
    method = METHODS[args.method]
    if args.solver is not None:
        if "observation" in get_solver(method.solver).options:
            raise UsageError(
                NAME, f"--solver is for the score methods (exact, dps, pigdm); {args.method} is a solver"
            )
        try:
            get_solver(args.solver)
        except (TypeError, ValueError) as err:
            raise UsageError(NAME, f"--solver: {err}") from None
        method = dataclasses.replace(method, solver=args.solver)
    if method.needs_posterior and not prob.analytic:
        raise UsageError(
            NAME, f"--method {args.method!r} needs an analytic problem (its posterior has a closed form)"
        )
    if args.n is None:
        args.n = 2000 if prob.analytic else 8
    if not (0 <= args.scale < float("inf")):
        raise UsageError(NAME, f"--scale must be a finite number >= 0, got {args.scale}")
    guided = args.method in ("dps", "pigdm") or "scale" in get_solver(method.solver).options
    if args.scale != 1.0 and not guided:
        raise UsageError(
            NAME,
            f"--scale is the guidance scale of the DPS and PiGDM methods; --method {args.method} has none",
        )
    mask = _mask(args.observe, tuple(prob.event_shape))
    if isinstance(prob.score, torch.nn.Module):
        prob.score.requires_grad_(False)  # DPS/PiGDM differentiate in x only
    truths, labels = _truths(prob, args.images, args.seed)
    runs = []
    try:
        for k, truth in enumerate(truths):
            runs.append(_complete(prob, args, method, truth, mask, k))
    except (TypeError, ValueError) as err:
        raise UsageError(NAME, str(err)) from None
    x = torch.stack([r[0].samples.detach().cpu() for r in runs])
    nfe, seconds = runs[0][0].nfe, sum(r[0].seconds for r in runs)
    solver = "" if method.solver == args.method else f" on {method.solver}"
    print(f"{prob.name}, {prob.sde!r}: {args.method}{solver}, {mask.sum().item()} of {mask.numel()} "
          f"values observed, s = {args.noise_std:g}; {args.images} x {args.n} completions, NFE {nfe} each, "
          f"{seconds:.2f} s")  # fmt: skip
    posterior_draws = None
    if prob.analytic:
        for k, (_, _, posterior) in enumerate(runs[: min(3, len(runs))]):
            verdict = PosteriorJudge(posterior, prob.sde, n=50_000)(x[k])
            print(f"observed sample {k}: mean log p(x | y) gap {verdict.log_prob_gap} nats, posterior-mean error "
                  f"{verdict.mean_error}; KS p = {verdict.ks.p_value:.2g}, C2ST p = {verdict.c2st.p_value:.2g}; "
                  f"{'indistinguishable from' if verdict.indistinguishable else 'distinguishable from'} the "
                  "exact posterior")  # fmt: skip
        posterior_draws = runs[0][2].marginal(1e-3, prob.sde).sample(5000, seed=0)
    elif labels is not None:
        _report_digits(x, labels, truths)
    buf = io.BytesIO()
    np.save(buf, x.numpy())
    write_file(out_path, buf.getvalue())
    print(f"completions: {args.out} {tuple(x.shape)}")
    if args.plot:
        masks = mask.expand_as(truths.cpu())
        _plot(x, truths.cpu(), masks, prob, posterior_draws, args.plot, f"{args.method}, NFE {nfe}")
    return 0
