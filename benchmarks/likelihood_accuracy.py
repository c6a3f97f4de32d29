"""Likelihood error against the analytic log p_eps, for every SDE on ring2d and a 16-D mixture.

    python benchmarks/likelihood_accuracy.py

500 exact draws of p_eps (eps = 1e-5) per case; mean |log p - analytic log p_eps| in nats for:
float64 with the exact p_T as prior at rtol = atol = 1e-8; the same solve with the SDE's own prior
(the difference is the prior mismatch); float32 at the default tolerances with the exact prior.
"""

from __future__ import annotations

import torch

import diffsolve as ds

EPS = 1e-5


def main() -> None:
    problems = {
        "ring2d": ds.GaussianMixture.ring2d(),
        "random16": ds.GaussianMixture.random(dim=16, k=5, seed=0),
    }
    print(
        "| problem | SDE | float64, exact prior | SDE prior (mismatch) | float32 defaults | NFE (f64, f32) |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for name, gm in problems.items():
        for sde in (ds.VPSDE(), ds.SubVPSDE(), ds.VESDE()):
            x = gm.marginal(EPS, sde).sample(500, seed=0)
            ref = gm.log_prob_t(x, EPS, sde)

            def exact_prior(z, gm=gm, sde=sde):
                return gm.log_prob_t(z, sde.T, sde)

            score = gm.score_fn(sde)
            r = ds.log_likelihood(score, sde, x, rtol=1e-8, atol=1e-8, eps=EPS, prior_log_prob=exact_prior)
            own = r.log_prob - r.prior_term + sde.prior_log_prob(r.latent)
            r32 = ds.log_likelihood(score, sde, x.float(), prior_log_prob=exact_prior)
            print(
                f"| {name} | {type(sde).__name__} | {(r.log_prob - ref).abs().mean():.1e} | "
                f"{(own - ref).abs().mean():.1e} | {(r32.log_prob.double() - ref).abs().mean():.1e} | "
                f"{r.nfe}, {r32.nfe} |"
            )


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
