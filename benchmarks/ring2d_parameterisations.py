"""A 1-minute training budget per setting on ring2d (VP): which parameterisation and weighting learn fastest.

    python benchmarks/ring2d_parameterisations.py

For each (parameterisation, weighting): a ScoreMLP 256x3 trained for 60 s wall clock, then the
held-out NLL gap (500 exact points of p_eps, eps = 1e-5, exact divergence) and the RMS score error
against the analytic score at t = 1e-3.
"""

import torch

import diffsolve as ds
from diffsolve.nn import ScoreMLP
from diffsolve.training import train


def main() -> None:
    gm, sde = ds.GaussianMixture.ring2d(), ds.VPSDE()
    data = gm.sample(100_000, seed=0, dtype=torch.float32)
    held = gm.marginal(1e-5, sde).sample(500, seed=123, dtype=torch.float32)
    true = -gm.log_prob_t(held.double(), 1e-5, sde).mean().item()
    for param, weighting, imp in [
        ("eps", "likelihood", True),
        ("x0", "likelihood", True),
        ("score", "likelihood", True),
        ("eps", "eps", False),
    ]:
        torch.manual_seed(0)
        m = ds.ScoreModel(ScoreMLP(2, width=256, depth=3), sde, param)
        r = train(
            m,
            data,
            steps=10**9,
            batch_size=512,
            lr=2e-3,
            weighting=weighting,
            importance_sampling=imp,
            seed=0,
            progress=False,
            max_seconds=60,
        )
        ll = ds.log_likelihood(r.ema_model, sde, held)
        x = gm.marginal(1e-3, sde).sample(2000, seed=7, dtype=torch.float32)
        tt = torch.full((2000,), 1e-3)
        with torch.no_grad():
            err = (r.ema_model(x, tt) - gm.score_t(x, tt, sde)).square().sum(1).mean().sqrt().item()
        print(
            param,
            weighting,
            imp,
            r.steps,
            "NLL gap",
            round(-ll.log_prob.double().mean().item() - true, 4),
            "score err t=1e-3",
            round(err, 3),
            flush=True,
        )


if __name__ == "__main__":
    main()
