"""Cost of the divergence in a likelihood solve, and peak memory of the solve modes.

    python benchmarks/likelihood.py            # all figures
    python benchmarks/likelihood.py --quick    # fewer repeats

Part 1, for d = 2, 16, 64 with a 3x256 MLP score (random weights) at batch 500: the seconds of one
evaluation of the augmented dynamics (drift + divergence), as a multiple of one plain score
evaluation of the PF-ODE drift, for the exact trace and for Hutchinson (per probe, K = 1 and 4),
and for the exact trace as a multiple of d plain evaluations. Medians over repeats, one process.

Part 2, at d = 64, batch 500: the peak memory (max RSS of a fresh subprocess) of an exact and a
Hutchinson log-likelihood solve (no gradients), and of a gradient of the mean log-likelihood with
respect to the network's weights, back-propagated through the solver and with the adjoint method.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

import diffsolve as ds
from diffsolve.adapters import LikelihoodODE
from diffsolve.divergence import make_probes


class MLP(nn.Module):
    """3 hidden layers of 256 with SiLU; time enters as sin/cos features."""

    def __init__(self, d: int, width: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d + 16, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
            nn.Linear(width, width), nn.SiLU(), nn.Linear(width, d),
        )  # fmt: skip
        self.register_buffer("freqs", torch.exp(torch.linspace(0, math.log(1000), 8)))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        arg = t[:, None] * self.freqs
        return self.net(torch.cat([x, arg.sin(), arg.cos()], dim=1))


def _median_seconds(fn, args: tuple, repeats: int) -> float:
    fn(*args)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def part1(repeats: int) -> None:
    torch.manual_seed(0)
    sde = ds.VPSDE()
    print(
        "| d | plain eval (ms) | exact / plain | exact / (d x plain) | Hutchinson K=1 / plain | K=4 / plain / K |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for d in (2, 16, 64):
        score = ds.ScoreModel(MLP(d), sde, "eps")
        x = torch.randn(500, d)
        t = torch.tensor(0.5)
        plain_ode = ds.ProbabilityFlowODE(score, sde)
        with torch.no_grad():
            plain = _median_seconds(plain_ode, (t, x), repeats)
        exact = LikelihoodODE(score, sde, "exact")
        h1 = LikelihoodODE(score, sde, "hutchinson", probes=make_probes(x, 1))
        h4 = LikelihoodODE(score, sde, "hutchinson", probes=make_probes(x, 4))
        state = (x, torch.zeros(500))
        with torch.no_grad():
            t_exact = _median_seconds(exact, (t, state), repeats)
            t_h1 = _median_seconds(h1, (t, (x, torch.zeros(500, 1))), repeats)
            t_h4 = _median_seconds(h4, (t, (x, torch.zeros(500, 4))), repeats)
        print(
            f"| {d} | {plain * 1e3:.3f} | {t_exact / plain:.1f} | {t_exact / (d * plain):.2f} | "
            f"{t_h1 / plain:.2f} | {t_h4 / plain / 4:.2f} |"
        )


def child(mode: str) -> None:
    """Run one solve in this (fresh) process and print its peak RSS in MiB as JSON."""
    import resource

    torch.manual_seed(0)
    d, sde = 64, ds.VPSDE()
    score = ds.ScoreModel(MLP(d), sde, "eps")
    x = torch.randn(500, d)
    if mode in ("exact", "hutchinson"):
        with torch.no_grad():  # no gradient wanted: no graph, although the parameters require grad
            res = ds.log_likelihood(
                score, sde, x, divergence=mode, probes=1, seed=0, rtol=1e-3, atol=1e-3, eps=1e-3
            )
        nfe = res.nfe
    else:  # the public API: a graph when the score's parameters require grad
        res = ds.log_likelihood(
            score, sde, x, divergence="hutchinson", probes=1, seed=0, rtol=1e-3, atol=1e-3, eps=1e-3,
            adjoint=mode == "adjoint",
        )  # fmt: skip
        (-res.log_prob.mean()).backward()
        nfe = res.nfe
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"mode": mode, "peak_mib": peak, "nfe": nfe}))


def part2() -> None:
    print("\n| d = 64, batch 500 | peak RSS (MiB) | NFE (forward) |")
    print("| --- | ---: | ---: |")
    labels = {
        "baseline": "import + model only",
        "exact": "exact divergence, no gradient",
        "hutchinson": "Hutchinson (1 probe), no gradient",
        "backprop": "gradient through the solver (Hutchinson)",
        "adjoint": "gradient by the adjoint method (Hutchinson)",
    }
    for mode, label in labels.items():
        out = subprocess.run(
            [sys.executable, __file__, "--child", mode], capture_output=True, text=True, check=True
        )
        rec = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {label} | {rec['peak_mib']:.0f} | {rec['nfe'] if rec['nfe'] else '-'} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="5 repeats instead of 30")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "baseline":
        import resource

        torch.manual_seed(0)
        ds.ScoreModel(MLP(64), ds.VPSDE(), "eps")
        print(
            json.dumps(
                {
                    "mode": "baseline",
                    "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                    "nfe": 0,
                }
            )
        )
    elif args.child:
        child(args.child)
    else:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
        part1(5 if args.quick else 30)
        part2()
