"""Divergence estimators against known traces: Hutch++ is exact for Jacobians of rank <= k, unbiased
always, and at the same number of vector-Jacobian products has a much lower variance than
Hutchinson when the spectrum decays; in the likelihood ODE with k >= d it equals the exact trace."""

import math
import statistics

import torch

import diffsolve as ds
from diffsolve.divergence import hutchinson_divergence, hutchpp_divergence, make_probes


def _linear(m):
    return lambda x: x @ m.T  # Jacobian m for every sample


def test_hutchpp_is_exact_for_a_jacobian_of_rank_at_most_k():
    g = torch.Generator().manual_seed(0)
    u, v = (
        torch.randn(20, 3, generator=g, dtype=torch.float64),
        torch.randn(20, 3, generator=g, dtype=torch.float64),
    )
    m = u @ v.T  # rank 3 < k = 4
    x = torch.randn(5, 20, generator=g, dtype=torch.float64)
    for seed in range(3):
        _, est = hutchpp_divergence(_linear(m), x, make_probes(x, 8, seed=seed))
        torch.testing.assert_close(est[:, 0], torch.full((5,), float(torch.trace(m)), dtype=torch.float64))


def test_hutchpp_is_unbiased_and_beats_hutchinson_on_a_decaying_spectrum():
    # J = Q diag(2^-i) Q^T in 20 dimensions, trace ~2. Hutch++ with k = 4 (12 VJPs) against
    # Hutchinson with 12 Rademacher probes, 2000 independent draws each. Measured: SD 0.092 vs 0.409.
    g = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(20, 20, generator=g, dtype=torch.float64))
    m = q @ torch.diag(torch.tensor([2.0**-i for i in range(20)], dtype=torch.float64)) @ q.T
    x = torch.zeros(1, 20, dtype=torch.float64)
    pp = [hutchpp_divergence(_linear(m), x, make_probes(x, 8, seed=s))[1].item() for s in range(2000)]
    hu = [
        hutchinson_divergence(_linear(m), x, make_probes(x, 12, seed=s))[1].mean().item() for s in range(2000)
    ]
    trace = float(torch.trace(m))
    sd_pp, sd_hu = statistics.pstdev(pp), statistics.pstdev(hu)
    assert abs(statistics.fmean(pp) - trace) < 4 * sd_pp / 2000**0.5  # unbiased, within 4 standard errors
    assert sd_pp**2 < sd_hu**2 / 4  # at least 4x lower variance for the same VJPs (measured ~20x)


def test_hutchpp_with_k_at_least_d_gives_the_exact_trace_in_the_likelihood():
    sde, ring = ds.VPSDE(), ds.GaussianMixture.ring2d()
    x = ring.sample(6, seed=2)
    kw = dict(solver="rk4", steps=10)
    exact = ds.log_likelihood(ring.score_fn(sde), sde, x, divergence="exact", **kw)
    pp = ds.log_likelihood(ring.score_fn(sde), sde, x, divergence="hutch++", probes=2, seed=0, **kw)
    torch.testing.assert_close(pp.log_prob, exact.log_prob, rtol=1e-10, atol=1e-10)
    assert pp.vjps == 3 * 2 * exact.nfe and pp.std_error is None


def test_dataset_bits_per_dim_and_its_standard_errors():
    # Uniformly dequantised 8-level data are not needed here: bits/dim is a transform of log p, so
    # the exact trace's mean is checked against the closed form, and the Hutchinson part of the
    # standard error against the spread of the mean over independent probe seeds.
    from diffsolve.likelihood import dataset_bits_per_dim

    sde, ring = ds.VPSDE(), ds.GaussianMixture.ring2d()
    score, eps = ring.score_fn(sde), 1e-3
    x = ring.marginal(eps, sde).sample(200, seed=4)
    kw = dict(solver="rk4", steps=30, eps=eps, batch_size=64)
    exact = dataset_bits_per_dim(score, sde, x, bins=256, scale=2.0, divergence="exact", **kw)
    truth = -ring.log_prob_t(x, eps, sde) / (2 * math.log(2)) + math.log2(256 / 2.0)
    assert abs(exact.bpd - float(truth.mean())) < 1e-3  # the 30-step rk4 solve's error, measured ~1e-4
    assert exact.se_estimator == 0.0 and abs(exact.se - float(truth.std() / 200**0.5)) < 1e-3
    means, reported = [], []
    for seed in range(12):
        h = dataset_bits_per_dim(score, sde, x, divergence="hutchinson", probes=4, seed=seed, **kw)
        means.append(h.bpd)
        reported.append(h.se_estimator)
        assert h.se**2 >= h.se_estimator**2 - 1e-12
    # 12 seeds: the spread of the means estimates se_estimator to within a factor of ~1.5
    spread = statistics.stdev(means)
    assert 0.5 < spread / statistics.fmean(reported) < 2.0, (spread, statistics.fmean(reported))
    assert (
        dataset_bits_per_dim(score, sde, x, divergence="hutchinson", probes=1, seed=0, **kw).se_estimator
        is None
    )
