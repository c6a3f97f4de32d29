"""The exact Jacobian trace by four routes, against the floor of d forward-and-backward passes.

One evaluation of the likelihood ODE's divergence (drift + trace) at t = 0.5, batch 500 (64 for the
1x8x8 U-Net, 8 for the 3x16x16 one), float32, medians over repeats in one process:

- `vjp-batched`: `exact_divergence(method="batched")`, d vector-Jacobian products in batched
  backward passes (`is_grads_batched`, 64 basis vectors per pass);
- `vjp-loop`: `exact_divergence(method="loop")`, d plain backward passes through one forward graph
  (the default on the CPU);
- `jvp-vmap`: forward mode, `torch.func.jvp` under `torch.func.vmap` over the d basis vectors;
- `jacrev-vmap`: `torch.func.jacrev` of one sample under `vmap` over the batch, then the trace.

Each is printed as a multiple of the floor, d x (one forward and one backward pass) = d x a
one-probe Hutchinson evaluation, and the last column names the fastest. Problems: a 3x256 MLP at
d = 2, 16, 64, 256 (random weights), the analytic score of `GaussianMixture.random(d, 8)` at d = 64,
and `ScoreUNet` at 1x8x8 and 3x16x16 (random weights).

Part 2 answers the question that matters for a likelihood: a whole solve on the 64-D mixture with
the exact p_T prior (float64, 200 points), the exact trace (in closed form, as the analytic score
provides it, and by D vector-Jacobian products) against one-probe Hutchinson at the same tolerance,
seconds and per-point error against the closed-form log-density.

Usage: `python benchmarks/exact_trace.py [--small]`; results in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from likelihood import MLP  # benchmarks/likelihood.py's 3x256 MLP (this script's folder is on sys.path)
from torch import nn

import diffsolve as ds
from diffsolve.divergence import exact_divergence, hutchinson_divergence, make_probes
from diffsolve.nn import ScoreUNet


def _median(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def jvp_vmap(fn, x):
    d = x[0].numel()
    basis = torch.eye(d, dtype=x.dtype).view(d, 1, *x.shape[1:]).expand(d, *x.shape)

    def column(e):
        return torch.func.jvp(fn, (x,), (e,))[1]

    cols = torch.func.vmap(column, chunk_size=64)(basis)  # (d, B, *event): J e_i
    return fn(x), torch.einsum("ibi->b", cols.flatten(2))


def jacrev_vmap(fn, x, per_sample):
    def one(z, t):
        return per_sample(z[None], t[None])[0]

    t = torch.full((x.shape[0],), 0.5, dtype=x.dtype)
    jac = torch.func.vmap(torch.func.jacrev(one))(x, t)
    d = x[0].numel()
    return fn(x), jac.reshape(x.shape[0], d, d).diagonal(dim1=1, dim2=2).sum(-1)


ROUTES = {
    "vjp-batched": lambda fn, x, _: exact_divergence(fn, x, method="batched"),
    "vjp-loop": lambda fn, x, _: exact_divergence(fn, x, method="loop"),
    "jvp-vmap": lambda fn, x, _: jvp_vmap(fn, x),
    "jacrev-vmap": jacrev_vmap,
}


def problems(small: bool):
    sde = ds.VPSDE()
    torch.manual_seed(0)
    for d in (2, 16, 64) if small else (2, 16, 64, 256):
        yield f"MLP d = {d}", ds.ScoreModel(MLP(d), sde, "eps"), torch.randn(500, d), sde
    gm = ds.GaussianMixture.random(64, 8, seed=0)
    yield (
        "mixture d = 64 (analytic, float64)",
        gm.score_fn(sde),
        gm.marginal(0.5, sde).sample(500, seed=0),
        sde,
    )
    for shape in ((1, 8, 8),) if small else ((1, 8, 8), (3, 16, 16)):
        unet = ds.ScoreModel(ScoreUNet(channels=shape[0], base=16), sde, "eps")
        batch = 64 if shape[0] == 1 else 8  # 3x16x16: d = 768 products per route, each repeated
        yield f"ScoreUNet {'x'.join(map(str, shape))}", unet, torch.randn(batch, *shape), sde


def part1(small: bool, repeats: int) -> None:
    print("| problem | d | batch | floor: d x (fwd + bwd) (ms) | " + " | ".join(ROUTES) + " | fastest |")
    print("| --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in ROUTES) + " | --- |")
    for name, score, x, sde in problems(small):
        if isinstance(score, nn.Module):
            for p in score.parameters():
                p.requires_grad_(False)
        tb = torch.full((x.shape[0],), 0.5, dtype=x.dtype)

        def per_sample(z, t, score=score, sde=sde):
            return sde.pf_drift(z, t, score(z, t))

        def drift(z, tb=tb, per_sample=per_sample):
            return per_sample(z, tb)

        d = x[0].numel()
        probes = make_probes(x, 1, seed=0)
        with torch.no_grad():
            floor = d * _median(lambda x=x, v=probes: hutchinson_divergence(drift, x, v), repeats)
            ref = exact_divergence(drift, x)[1]
            cells, best = [], None
            for route, fn in ROUTES.items():
                if route == "vjp-loop" and d > 256:
                    cells.append("-")
                    continue
                try:
                    div = fn(drift, x, per_sample)[1]
                except Exception as err:  # a route torch.func cannot take for this score
                    cells.append(f"fails ({type(err).__name__})")
                    print(f"{name}, {route}: {type(err).__name__}: {str(err).splitlines()[0][:150]}")
                    continue
                assert torch.allclose(div, ref, rtol=1e-3, atol=1e-3 * float(ref.abs().max())), route
                reps = max(1, repeats // (4 if d >= 256 else 1))
                ratio = _median(lambda fn=fn, x=x, ps=per_sample: fn(drift, x, ps), reps) / floor
                cells.append(f"{ratio:.2f}")
                if best is None or ratio < best[1]:
                    best = (route, ratio)
        print(f"| {name} | {d} | {x.shape[0]} | {floor * 1e3:.1f} | " + " | ".join(cells) + f" | {best[0]} |")


def part2(small: bool) -> None:
    sde, eps = ds.VPSDE(), 1e-3
    gm = ds.GaussianMixture.random(64, 8, seed=0)
    score = gm.score_fn(sde)

    def hidden(x, t):  # the same score without its closed-form divergence: the trace by D VJPs
        return score(x, t)

    x = gm.marginal(eps, sde).sample(50 if small else 200, seed=1)
    truth = gm.log_prob_t(x, eps, sde)

    def prior(z):
        return gm.log_prob_t(z, sde.T, sde)

    print(f"\n64-D mixture, {x.shape[0]} points, float64, dopri5, exact p_T prior\n")
    print(
        "| rtol = atol | divergence | NFE | VJPs | seconds | vs one-probe Hutchinson | mean abs error (nats) | max |"
    )
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for tol in (1e-5, 1e-7):
        kw = dict(rtol=tol, atol=tol, eps=eps, prior_log_prob=prior)
        rows = []
        for label, s, div in (
            ("Hutchinson, 1 probe", score, "hutchinson"),
            ("exact, closed-form trace", score, "exact"),
            ("exact, D VJPs (loop)", hidden, "exact"),
        ):
            start = time.perf_counter()
            res = ds.log_likelihood(s, sde, x, divergence=div, probes=1, seed=0, **kw)
            seconds = time.perf_counter() - start
            err = (res.log_prob - truth).abs()
            rows.append((label, res.nfe, res.vjps, seconds, float(err.mean()), float(err.max())))
        for label, nfe, vjps, seconds, mean, worst in rows:
            print(f"| {tol:g} | {label} | {nfe} | {vjps} | {seconds:.2f} | {seconds / rows[0][3]:.2f} | "
                  f"{mean:.2e} | {worst:.2e} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="fewer problems and repeats")
    parser.add_argument("--part", type=int, choices=[1, 2], default=None, help="run only part 1 or part 2")
    args = parser.parse_args()
    if args.part in (None, 1):
        part1(args.small, 3 if args.small else 10)
    if args.part in (None, 2):
        part2(args.small)


if __name__ == "__main__":
    main()
