"""Path error of the diffusion samplers against a float64 reference, as the step count doubles.

    python benchmarks/diffusion_orders.py

ring2d, VP SDE, exact score, 500 prior draws in float64, eps = 1e-3; the reference is float64
dopri5 at rtol = atol = 1e-10 from the same draws. Prints the mean distance (p = 1) and the RMS
(p = 2) for 8..512 steps, and the observed order log2(e(h) / e(h/2)) between successive counts.
"""

from __future__ import annotations

import math

import torch

import diffsolve as ds
from diffsolve import metrics

STEPS = (8, 16, 32, 64, 128, 256, 512)


def main() -> None:
    gm, sde = ds.GaussianMixture.ring2d(), ds.VPSDE()
    score = gm.score_fn(sde)
    x_T = sde.prior_sample((500, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = ds.sample(score, sde, x_T=x_T, solver="ode:dopri5", rtol=1e-10, atol=1e-10).samples
    print("| sampler | p | " + " | ".join(f"{s} steps" for s in STEPS) + " | observed orders |")
    print("| --- | ---: | " + " | ".join("---:" for _ in STEPS) + " | --- |")
    for name in (
        "ddim", "dpm_solver2", "dpm_solver3", "dpm_solver++2m", "edm_heun", "dpm_solver++2s", "dpm_solver++3m",
        "unipc", "deis", "ipndm", "dpm_solver_fast",
    ):  # fmt: skip
        for p in (1, 2):
            errs = [
                metrics.path_error(ds.sample(score, sde, x_T=x_T, solver=name, steps=s).samples, ref, p=p)
                for s in STEPS
            ]
            orders = " ".join(f"{math.log2(a / b):.2f}" for a, b in zip(errs, errs[1:], strict=False))
            print(f"| {name} | {p} | " + " | ".join(f"{e:.1e}" for e in errs) + f" | {orders} |")


if __name__ == "__main__":
    main()
