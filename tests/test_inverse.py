"""Inverse problems: the exact posterior oracle against independent answers, and the samplers on it."""

import math

import numpy as np
import pytest
import torch

import diffsolve as ds
from diffsolve.analysis import PosteriorJudge, posterior_error
from diffsolve.inverse import Observation

VP = ds.VPSDE()


def _grid_posterior(prior, A, y, s, lim=8.0, n=1201):
    """Brute force in 2-D: prior density times likelihood on a grid, normalised by the grid sum."""
    g = torch.linspace(-lim, lim, n, dtype=torch.float64)
    pts = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    resid = y - pts @ torch.as_tensor(A, dtype=torch.float64).T
    log_joint = prior.log_prob(pts) - 0.5 * (resid**2).sum(1) / s**2
    cell = (g[1] - g[0]) ** 2
    log_post = log_joint - torch.logsumexp(log_joint, 0) - math.log(cell)
    return pts, log_post, cell


@pytest.mark.parametrize(
    "A, y",
    [([[1.0, 0.0]], [2.0]), ([[1.0, 1.0]], [3.0]), ([[0.6, -0.8], [1.0, 0.3]], [1.0, -2.0])],
    ids=["one coordinate", "a sum (full covariance)", "a 2x2 matrix"],
)
def test_posterior_equals_brute_force_integration_in_2d(ring, A, y):
    s = 0.4
    post = ring.posterior(A, y, s)
    pts, log_post, cell = _grid_posterior(
        ring, torch.tensor(A, dtype=torch.float64), torch.tensor(y, dtype=torch.float64), s
    )
    dens = log_post.exp()
    assert (post.log_prob(pts).exp() - dens).abs().max() < 1e-9 * dens.max()
    assert torch.allclose(post.mean, (dens[:, None] * pts).sum(0) * cell, atol=1e-9)
    cov = ((pts - post.mean)[:, :, None] * (pts - post.mean)[:, None, :] * dens[:, None, None]).sum(0) * cell
    exact_cov = (
        post.weights[:, None, None] * (post.covariances + post.means[:, :, None] * post.means[:, None, :])
    ).sum(0)
    assert torch.allclose(cov, exact_cov - post.mean[:, None] * post.mean[None], atol=1e-8)


def test_a_mask_on_a_diagonal_prior_keeps_the_posterior_diagonal(ring):
    post = ring.posterior([[1.0, 0.0]], [2.0], 0.3)
    assert post.bases is None  # observed coordinate: precision 1/0.3^2 + 1/0.3^2
    assert torch.allclose(
        post.stds[:, 0], torch.full((post.n_components,), 0.3 / math.sqrt(2), dtype=torch.float64)
    )
    assert torch.allclose(post.stds[:, 1], torch.full((post.n_components,), 0.3, dtype=torch.float64))
    mixed = ring.posterior([[1.0, 1.0]], [2.0], 0.3)
    assert mixed.bases is not None and "full covariances" in repr(mixed)


def _posterior_log_density_at_t(prior, A, y, s, x, t, sde):
    r"""log p_t(x) + log p(y | x_t) by Bayes at time t (independent of `posterior`): each prior
    component given x_t is Gaussian in x_0, so p(y | x_t) = sum_k r_k(x_t) N(y; A m_k, A C_k A^T + s^2 I)."""
    alpha, sigma = sde.marginal(torch.as_tensor(t, dtype=torch.float64))
    resp = prior.responsibilities(x, t, sde)
    total = []
    for k in range(prior.n_components):
        cov0 = prior.covariances[k]
        gain = (
            alpha
            * cov0
            @ torch.linalg.inv(alpha**2 * cov0 + sigma**2 * torch.eye(prior.dim, dtype=torch.float64))
        )
        m = prior.means[k] + (x - alpha * prior.means[k]) @ gain.T
        c = cov0 - gain @ (alpha * cov0)
        dist = torch.distributions.MultivariateNormal(
            m @ A.T, A @ c @ A.T + s**2 * torch.eye(A.shape[0], dtype=torch.float64)
        )
        total.append(torch.log(resp[:, k]) + dist.log_prob(y))
    return prior.log_prob_t(x, t, sde) + torch.logsumexp(torch.stack(total, 1), 1)


@pytest.mark.parametrize("sde", [ds.VPSDE(), ds.VESDE(), ds.RectifiedFlow()], ids=lambda s: type(s).__name__)
def test_noised_posterior_score_is_bayes_at_time_t(sde):
    prior = ds.GaussianMixture.random(3, 4, seed=1)
    A = torch.tensor([[0.5, -1.0, 0.3], [1.2, 0.1, -0.7]], dtype=torch.float64)
    y = torch.tensor([1.0, -0.5], dtype=torch.float64)
    post = prior.posterior(A, y, 0.2)
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2
    for t in (0.05, 0.4, 0.9):
        xg = x.clone().requires_grad_(True)
        bayes = _posterior_log_density_at_t(prior, A, y, 0.2, xg, t, sde)
        (grad,) = torch.autograd.grad(bayes.sum(), xg)
        assert torch.allclose(post.score_t(x, t, sde), grad, atol=1e-9, rtol=1e-9)
        lp = post.log_prob_t(x, t, sde)
        offset = bayes.detach() - lp  # p(y) normalises the posterior: the same constant at every x
        assert float(offset.max() - offset.min()) < 1e-9


def test_full_covariance_scores_divergence_and_samples_agree_with_their_density():
    prior = ds.GaussianMixture.random(3, 4, seed=2)
    post = prior.posterior(torch.tensor([[1.0, 2.0, -1.0]]), [0.5], 0.3)
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = torch.tensor([0.01, 0.2, 0.5, 0.7, 0.99], dtype=torch.float64)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(post.log_prob_t(xg, t, VP).sum(), xg)
    assert torch.allclose(post.score_t(x, t, VP), grad, atol=1e-12)
    score, div = post.score_and_divergence_t(x, t, VP)
    jac = torch.autograd.functional.jacobian(lambda z: post.score_t(z, t, VP).sum(0), x)
    assert torch.allclose(div, torch.einsum("ibi->b", jac), atol=1e-10)
    draws = post.sample(200_000, seed=0)
    # The sample covariance of 2e5 draws is within 5 standard errors of the exact one, entrywise.
    mix_cov = (
        post.weights[:, None, None] * (post.covariances + post.means[:, :, None] * post.means[:, None, :])
    ).sum(0)
    exact = mix_cov - post.mean[:, None] * post.mean[None]
    se = (exact.diagonal()[:, None] * exact.diagonal()[None] / 2e5).sqrt() * 2
    assert ((torch.cov(draws.T) - exact).abs() < 5 * se).all()
    assert ((draws.mean(0) - post.mean).abs() < 5 * (exact.diagonal() / 2e5).sqrt()).all()


def test_from_covariances_and_bases_are_checked():
    with pytest.raises(ValueError, match="orthonormal"):
        ds.GaussianMixture([1.0], [[0.0, 0.0]], [1.0], bases=[[[1.0, 1.0], [0.0, 1.0]]])
    with pytest.raises(ValueError, match="positive definite"):
        ds.GaussianMixture.from_covariances([1.0], [[0.0, 0.0]], [[[1.0, 2.0], [2.0, 1.0]]])
    with pytest.raises(ValueError, match="symmetric"):
        ds.GaussianMixture.from_covariances([1.0], [[0.0, 0.0]], [[[1.0, 0.5], [0.0, 1.0]]])
    with pytest.raises(ValueError, match="A must have shape"):
        ds.GaussianMixture.ring2d().posterior([[1.0, 0.0, 0.0]], [1.0], 0.1)
    with pytest.raises(ValueError, match="y must have shape"):
        ds.GaussianMixture.ring2d().posterior([[1.0, 0.0]], [1.0, 2.0], 0.1)
    with pytest.raises(ValueError, match="noise_std must be > 0"):
        ds.GaussianMixture.ring2d().posterior([[1.0, 0.0]], [1.0], 0.0)
    with pytest.raises(ValueError, match="noise_std = 1e-09 is too small"):
        ds.GaussianMixture.ring2d().posterior([[1.0, 1.0]], [1.0], 1e-9)


def test_observation_constructors_and_their_errors():
    mask = torch.tensor([[True, False], [False, True]])
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    obs = Observation.inpainting(mask, x, 0.1)
    assert obs.m == 2 and obs.event_shape == (2, 2)
    assert torch.equal(obs.y, torch.tensor([1.0, 4.0], dtype=torch.float64))
    assert torch.allclose(obs.residual(x[None]), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="observes nothing"):
        Observation.inpainting(torch.zeros(2, dtype=torch.bool), torch.zeros(2))
    with pytest.raises(TypeError, match="mask must be a boolean"):
        Observation.inpainting(torch.ones(2), torch.zeros(2))
    with pytest.raises(ValueError, match="event_shape"):
        Observation(np.eye(4), np.zeros(4), 0.1, event_shape=(3,))
    with pytest.raises(ValueError, match="noise_std must be >= 0"):
        Observation(np.eye(2), np.zeros(2), -1.0)
    with pytest.raises(ValueError, match="noise_std > 0"):
        ds.dps(ds.GaussianMixture.ring2d().score_fn(VP), Observation(np.eye(2), np.zeros(2), 0.0))
    with pytest.raises(TypeError, match="sde must be given"):
        ds.pigdm(lambda x, t: -x, Observation(np.eye(2), np.zeros(2), 0.0))


@pytest.mark.parametrize("sde", [ds.VPSDE(), ds.VESDE()], ids=lambda s: type(s).__name__)
def test_pigdm_is_exact_on_gaussian_data_and_dps_is_not(sde):
    c = 0.7
    prior = ds.GaussianMixture([1.0], [[0.0, 0.0, 0.0]], c)
    A = torch.tensor([[0.5, -1.0, 0.3], [1.2, 0.1, -0.7]], dtype=torch.float64)
    obs = Observation(A, torch.tensor([0.5, -1.0]), 0.3)
    post = obs.posterior(prior)
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.linspace(0.05, 0.9, 6, dtype=torch.float64)
    exact = post.score_t(x, t, sde)
    assert torch.allclose(ds.pigdm(prior.score_fn(sde), obs, data_std=c)(x, t), exact, atol=1e-10)
    assert (ds.dps(prior.score_fn(sde), obs)(x, t) - exact).abs().max() > 1.0  # DPS ignores x_0's spread


@pytest.mark.parametrize(
    "info", [s for s in ds.solvers() if "observation" in s.options], ids=lambda s: s.name
)
def test_observing_solvers_without_an_observation_are_ddpm_ancestral(problem, info):
    _, sde, score = problem
    ddpm = ds.sample(score, sde, 64, solver="ddim_eta", steps=12, seed=3).samples
    options = {"resample": 1} if "resample" in info.options else {}
    assert torch.equal(ds.sample(score, sde, 64, solver=info.name, steps=12, seed=3, **options).samples, ddpm)


def test_the_papers_loops_pull_the_samples_to_the_observation(problem):
    _, sde, score = problem
    obs = Observation(torch.tensor([[1.0, 0.0]]), torch.tensor([2.0]), 0.2)
    for solver in ("dps_ddpm", "pigdm_ddim"):
        out = ds.sample(score, sde, 500, solver=solver, steps=50, seed=0, observation=obs)
        assert out.nfe == 50 and bool(torch.isfinite(out.samples).all())
        assert abs(float(out.samples[:, 0].mean()) - 2.4) < 0.4  # the posterior's mean of x_0 is 2.41
        free = ds.sample(score, sde, 500, solver=solver, steps=50, seed=0)
        assert abs(float(free.samples[:, 0].mean())) < 0.5  # without an observation: the prior, mean 0


def test_projection_solvers_end_on_the_observation_and_count_every_evaluation(problem):
    _, sde, score = problem
    obs = Observation.inpainting(torch.tensor([True, False]), torch.tensor([2.0, 0.0]))
    alpha_eps = float(sde.marginal(torch.tensor(1e-3, dtype=torch.float64))[0])
    for solver, kw, nfe in (("replacement", {}, 20), ("repaint", {"resample": 3}, 60)):
        out = ds.sample(score, sde, 256, solver=solver, steps=20, seed=0, observation=obs, **kw)
        assert out.nfe == nfe
        assert torch.allclose(out.samples[:, 0], torch.full((256,), 2.0 * alpha_eps), atol=1e-5)
        assert out.samples[:, 1].std() > 0.5  # the unobserved coordinate is still sampled
    with pytest.raises(TypeError, match="observation must be a diffsolve.inverse.Observation"):
        ds.sample(score, sde, 8, solver="replacement", steps=5, seed=0, observation=[1.0])
    with pytest.raises(ValueError, match="observation is of samples shaped"):
        ds.sample(
            score,
            sde,
            8,
            solver="replacement",
            steps=5,
            seed=0,
            observation=Observation(np.eye(3), np.zeros(3), 0.0),
        )


@pytest.mark.parametrize(
    "info", [s for s in ds.solvers() if "observation" in s.options], ids=lambda s: s.name
)
def test_projection_noise_is_keyed_by_row_so_chunks_change_nothing(problem, info):
    _, sde, score = problem
    obs = Observation(torch.tensor([[0.6, 0.8]]), torch.tensor([1.5]), 0.0)
    kw = dict(solver=info.name, steps=6, seed=5, observation=obs)
    whole = ds.sample(score, sde, 30, **kw)
    assert torch.equal(ds.sample(score, sde, 30, batch_size=7, **kw).samples, whole.samples)
    assert torch.equal(ds.sample(score, sde, 11, **kw).samples, whole.samples[:11])


def test_exact_posterior_samples_pass_the_judge_and_a_biased_method_fails(ring):
    obs = Observation(torch.tensor([[1.0, 0.0]]), torch.tensor([2.0]), 0.3)
    post = obs.posterior(ring)
    judge = PosteriorJudge(post, VP)
    exact = post.marginal(1e-3, VP).sample(5000, seed=7)
    assert judge(exact).indistinguishable
    # Replacement projects onto x_1 = 2 as if y were exact; the posterior of x_1 is pulled to ~2.41.
    biased = ds.sample(ring.score_fn(VP), VP, 5000, solver="replacement", steps=100, seed=0, observation=obs)
    verdict = posterior_error(biased.samples, post, VP)
    assert not verdict.indistinguishable
    assert verdict.mean_error.value > 10 * verdict.mean_error.se


@pytest.mark.slow
def test_the_exact_posterior_score_samples_the_posterior(ring):
    # The yardstick of the bias study: the exact conditional score through an ordinary sampler.
    obs = Observation(torch.tensor([[1.0, 0.0]]), torch.tensor([2.0]), 0.3)
    post = obs.posterior(ring)
    out = ds.sample(post.score_fn(VP), VP, 5000, solver="dpm_solver++2m", steps=100, seed=0)
    assert posterior_error(out.samples, post, VP).indistinguishable


def test_inpaint_cli_on_an_analytic_problem_judges_against_the_exact_posterior(tmp_path, capsys):
    from diffsolve.cli import main

    out, plot = tmp_path / "x.npy", tmp_path / "x.png"
    args = ["inpaint", "--method", "exact", "--nfe", "20", "--images", "1", "--n", "200", "--out", str(out),
            "--plot", str(plot), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "1 of 2 values observed" in text and "exact posterior" in text and "NFE 20 each" in text
    assert np.load(out).shape == (1, 200, 2) and plot.stat().st_size > 1000


def test_inpaint_cli_completes_digits_and_reads_them_with_the_classifier(tmp_path, capsys):
    from diffsolve.cli import main

    model = tmp_path / "unet"
    assert main(["train", "--dataset", "digits", "--model", "unet", "--steps", "1", "--batch-size", "8",
                 "--out", str(model), "--no-progress"]) == 0  # fmt: skip
    capsys.readouterr()
    out, plot = tmp_path / "d.npy", tmp_path / "d.png"
    args = ["inpaint", "--model", str(model), "--method", "dps", "--nfe", "4", "--images", "2", "--n", "3",
            "--observe", "left", "--out", str(out), "--plot", str(plot), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "32 of 64 values observed" in text and "digits classifier:" in text
    x = np.load(out)
    assert x.shape == (2, 3, 1, 8, 8) and np.isfinite(x).all() and plot.stat().st_size > 1000
    # The exact posterior exists only for analytic problems; a bad region is refused by name.
    assert main(["inpaint", "--model", str(model), "--method", "exact", "--out", str(out)]) == 2
    assert "needs an analytic problem" in capsys.readouterr().err
    assert main(["inpaint", "--observe", "7", "--out", str(out)]) == 2
    assert "--observe indices must lie in 0..1" in capsys.readouterr().err
    assert main(["inpaint", "--method", "repaint", "--scale", "0.5", "--out", str(out)]) == 2
    assert "--method repaint has none" in capsys.readouterr().err
    assert main(["inpaint", "--method", "repaint", "--solver", "ddim", "--out", str(out)]) == 2
    assert "--solver is for the score methods" in capsys.readouterr().err
