"""The diffusers bridge, against diffusers' own DDIMScheduler loop on a small random UNet2DModel (offline)."""

import dataclasses
import json
import math
import os
import re
import warnings

import numpy as np
import pytest
import torch

import diffsolve as ds
from diffsolve.interop import from_diffusers, match_scheduler, scheduler_times
from diffsolve.judge import ks_two_sample
from diffsolve.samplers.diffusion import ddim

diffusers = pytest.importorskip("diffusers")


def small_unet(**kwargs):
    torch.manual_seed(0)
    config = dict(
        sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    )  # fmt: skip
    config.update(kwargs)
    return diffusers.UNet2DModel(**config).eval()


@pytest.fixture(scope="module")
def unet():
    return small_unet()


def scheduler_loop(unet, scheduler, x, steps, **unet_kwargs):
    """diffusers' own sampling loop (what DDIMPipeline does, eta = 0)."""
    scheduler.set_timesteps(steps)
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(unet(x, t, **unet_kwargs).sample, t, x).prev_sample
    return x


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_ddim_on_the_schedulers_steps_equals_the_ddim_scheduler_loop(unet, tmp_path, spacing, prediction):
    scheduler = diffusers.DDIMScheduler(
        clip_sample=False, prediction_type=prediction, timestep_spacing=spacing
    )
    unet.save_pretrained(tmp_path)
    scheduler.save_pretrained(tmp_path)
    score = from_diffusers(tmp_path)  # the model and its scheduler, read back from disk
    assert isinstance(score.sde, ds.DiscreteVPSDE) and score.parameterization == {
        "epsilon": "eps", "v_prediction": "v", "sample": "x0"
    }[prediction]  # fmt: skip
    x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    theirs = scheduler_loop(unet, scheduler, x.clone(), 10)
    grid = scheduler_times(scheduler, 10)
    with torch.no_grad():
        ours = ddim(score, score.sde, x, grid)
    assert ours.nfe == 10
    # float32 round-off: measured max |ours - theirs| / max |theirs| = 3.8e-7 (eps), 5.6e-7 (v),
    # 4.5e-6 (sample: the x0 output is turned into a score and back, dividing by sigma_t^2).
    scale = theirs.abs().max()
    assert (ours.samples - theirs).abs().max() <= 2e-5 * scale
    # and the check discriminates: the same solve a tenth of a step off the scheduler's times is far away
    # (all but the last evaluation, at timestep 0: below it the network is not asked)
    with torch.no_grad():
        shifted = ddim(score, score.sde, x, torch.cat([grid[:-2] - 1e-4, grid[-2:]]))
    assert (shifted.samples - theirs).abs().max() > 1e-3 * scale


def test_the_grid_follows_the_schedulers_timesteps():
    s = diffusers.DDIMScheduler(timestep_spacing="leading")
    assert scheduler_times(s, 10).tolist() == pytest.approx([0.901 - 0.1 * k for k in range(10)] + [0.0])
    s = diffusers.DDIMScheduler(timestep_spacing="trailing", set_alpha_to_one=False)
    assert scheduler_times(s, 4).tolist() == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.001])
    with pytest.raises(ValueError, match="not strided by 100.*linspace"):
        scheduler_times(diffusers.DDIMScheduler(timestep_spacing="linspace"), 10)
    with pytest.raises(ValueError, match="num_inference_steps"):
        scheduler_times(s, 0)


def test_the_sde_is_the_schedulers_alphas_cumprod():
    s = diffusers.DDPMScheduler(beta_schedule="squaredcos_cap_v2", clip_sample=False)
    score = from_diffusers(small_unet(), s)
    n = torch.arange(0, 1000, 37)
    alpha, sigma = score.sde.marginal(score.sde.time_of(n))
    torch.testing.assert_close(alpha**2, s.alphas_cumprod[n].double(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones_like(alpha))


def test_any_diffsolve_solver_samples_a_diffusers_model(unet):
    score = from_diffusers(unet, diffusers.DDPMScheduler(clip_sample=False))
    with torch.no_grad():
        out = ds.sample(score, score.sde, 8, event_shape=(1, 8, 8), solver="dpm_solver++2m", steps=10, seed=0)
    assert out.samples.shape == (8, 1, 8, 8) and bool(out.samples.isfinite().all()) and out.nfe == 10


def test_a_pipeline_directory_and_a_learned_variance_and_class_labels(tmp_path):
    # improved-DDPM layout: out_channels = 2 x in_channels (mean, variance), class embeddings
    unet = small_unet(out_channels=2, num_class_embeds=3)
    unet.save_pretrained(tmp_path / "unet")
    diffusers.DDPMScheduler(clip_sample=False).save_pretrained(tmp_path / "scheduler")
    score = from_diffusers(str(tmp_path))
    assert type(score.scheduler) is diffusers.DDPMScheduler  # the class its config names
    x, t = torch.randn(4, 1, 8, 8), torch.full((4,), 0.5)
    y = torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        eps = unet(x, torch.full((4,), 499.0), class_labels=y).sample[:, :1]
        torch.testing.assert_close(score(x, t, y), -eps / score.sde.marginal(t)[1][:, None, None, None])


def test_clear_errors_and_the_clipping_warning(unet, tmp_path):
    with pytest.warns(UserWarning, match="clip_sample"):
        from_diffusers(unet, diffusers.DDIMScheduler())  # clip_sample=True is diffusers' default
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from_diffusers(unet, diffusers.DDIMScheduler(clip_sample=False))
    with pytest.raises(ValueError, match="scheduler is needed"):
        from_diffusers(unet)
    with pytest.raises(TypeError, match="scheduler must be a diffusers scheduler"):
        from_diffusers(unet, "ddim")
    with pytest.raises(TypeError, match="model_or_dir must be"):
        from_diffusers(3, diffusers.DDIMScheduler())
    with pytest.raises(FileNotFoundError, match="not a directory"):
        from_diffusers(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        from_diffusers(tmp_path)
    with pytest.raises(ValueError, match="rescale_betas_zero_snr"):
        from_diffusers(unet, diffusers.DDIMScheduler(rescale_betas_zero_snr=True, clip_sample=False))
    unet.save_pretrained(tmp_path / "m")
    config = tmp_path / "m" / "scheduler_config.json"
    diffusers.DDIMScheduler(clip_sample=False).save_pretrained(tmp_path / "m")
    raw = json.loads(config.read_text())
    raw["prediction_type"] = "score"
    config.write_text(json.dumps(raw))
    with pytest.raises(
        ValueError, match="prediction_type must be one of epsilon, v_prediction, sample, got 'score'"
    ):
        from_diffusers(os.fspath(tmp_path / "m"))


@pytest.mark.parametrize(
    "scheduler, end",
    [
        (lambda: diffusers.DDIMScheduler(), 0.0),
        (lambda: diffusers.DDIMScheduler(set_alpha_to_one=False), 0.001),
        (lambda: diffusers.DPMSolverMultistepScheduler(timestep_spacing="trailing"), 0.0),
        (
            lambda: diffusers.DPMSolverMultistepScheduler(
                timestep_spacing="trailing", final_sigmas_type="sigma_min"
            ),
            0.001,
        ),
        (
            lambda: diffusers.UniPCMultistepScheduler(
                timestep_spacing="trailing", final_sigmas_type="sigma_min"
            ),
            0.001,
        ),
        (lambda: diffusers.DEISMultistepScheduler(timestep_spacing="trailing"), 0.001),
    ],
)
def test_the_grid_ends_where_the_schedulers_loop_ends(scheduler, end):
    # Issue: schedulers that end at sigma_min (final_sigmas_type="sigma_min", DEIS) were given an end time
    # of 0. Their last sigma is that of timestep 0, which is t = 1/N; "zero" ends at the clean data.
    s = scheduler()
    grid = scheduler_times(s, 10)
    assert float(grid[-1]) == pytest.approx(end)
    sigmas = getattr(s, "sigmas", None)
    if sigmas is not None:  # the scheduler's own last sigma, sigma/alpha in DiscreteVPSDE's terms
        sde = ds.DiscreteVPSDE()
        alpha, sigma = sde.marginal(grid[-1:])
        # rel 2e-3: diffusers forms 1 - alpha_bar ~ 1e-4 in float32 (round-off 6e-8 / 1e-4)
        assert float(sigma / alpha) == pytest.approx(float(sigmas[-1]), rel=2e-3, abs=1e-12)


def test_a_refused_spacing_says_why():
    with pytest.raises(ValueError, match="use_karras_sigmas=True rounds"):
        scheduler_times(
            diffusers.DPMSolverMultistepScheduler(timestep_spacing="trailing", use_karras_sigmas=True), 10
        )
    # a strided scheduler (DDIM steps a stride below each timestep) needs even strides
    with pytest.raises(
        ValueError, match="'linspace' does not stride them evenly; 'leading' or 'trailing' does"
    ):
        scheduler_times(diffusers.DDIMScheduler(timestep_spacing="linspace"), 7)
    # a sigma-list scheduler steps to its next timestep: any spacing is one grid (issue: "linspace" was refused)
    grid = scheduler_times(diffusers.DPMSolverMultistepScheduler(), 10)
    assert len(grid) == 11 and float(grid[-1]) == 0.0


@pytest.mark.parametrize("steps", [20, 25, 50])
def test_every_grid_solver_steps_to_sigma_zero_or_says_why(steps):
    # Issue: on grids ending at t = 0 with 15 or more steps, dpm_solver++2m and ++3m divided by h = inf,
    # unipc went non-finite. Every deterministic grid solver now takes its last step to sigma = 0 at first
    # order, which lands exactly on the denoised point (x + sigma^2 s(x, t)) / alpha of the state before
    # it (Tweedie), or refuses the grid with a ValueError that names sigma = 0.
    from diffsolve.samplers.base import SolveRequest

    sde, ring = ds.DiscreteVPSDE(), ds.GaussianMixture.ring2d()
    score = ring.score_fn(sde)
    grid = scheduler_times(diffusers.DDIMScheduler(timestep_spacing="trailing"), steps)
    assert float(grid[-1]) == 0.0
    x_T = sde.prior_sample((500, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    alpha, sigma = (float(v) for v in sde.marginal(grid[-2]))
    ran = 0
    for info in ds.solvers():
        if info.stochastic or not info.takes_grid:
            continue
        req = SolveRequest(score, sde, x_T, eps=0.0, solver=info.name, steps=steps, grid=grid,
                           options=info.defaults(), return_trajectory=True)  # fmt: skip
        try:
            out = info.run(req)
        except ValueError as err:
            assert "sigma = 0" in str(err) or "eps must be > 0" in str(err), (info.name, err)
            continue
        ran += 1
        x = out.trajectory[-2]
        t_last = torch.full((500,), float(grid[-2]), dtype=x.dtype)
        denoised = (x + sigma**2 * score(x, t_last)) / alpha
        if info.name in ("flow_euler", "flow_heun"):  # their last step is Euler in t on the velocity
            euler = x - float(grid[-2]) * sde.pf_drift(x, t_last, score(x, t_last))
            assert torch.allclose(out.samples, euler, rtol=0, atol=1e-10), info.name
        elif info.name == "lms":
            # LMS's last step is its ordinary order-4 step in rho (as k-diffusion and diffusers): the
            # cubic through the last four eps-hat in rho, integrated to rho = 0 (np.polyint, exact).
            # Denoising is its first-order case.
            n = len(grid) - 1
            a, s_ = sde.marginal(grid[n - 4 : n].clone())
            rho = (s_ / a).tolist()
            eps = [-float(s_[k]) * score(out.trajectory[n - 4 + k], torch.full((500,), float(grid[n - 4 + k]),
                   dtype=x.dtype)) for k in range(4)]  # fmt: skip
            step = x / a[-1]
            for j in range(4):
                ell = np.poly1d([r for k, r in enumerate(rho) if k != j], r=True)
                ell = np.polyint(ell / np.prod([rho[j] - r for k, r in enumerate(rho) if k != j]))
                step = step + (ell(0.0) - ell(rho[-1])) * eps[j]
            assert torch.allclose(out.samples, step, rtol=0, atol=1e-10)
            first = info.run(dataclasses.replace(req, options={**req.options, "order": 1}))
            y = first.trajectory[-2]
            assert torch.allclose(
                first.samples, (y + sigma**2 * score(y, t_last)) / alpha, rtol=0, atol=1e-10
            )
        elif info.name == "unipc":
            # UniPC keeps the model at its predictor, not at the corrected state the trajectory holds, so
            # its last step denoises a point one corrector away (measured mean distance 0.01 at 20 steps).
            assert bool(torch.isfinite(out.samples).all())
            assert (out.samples - denoised).norm(dim=1).mean() < 0.05
        else:
            assert torch.allclose(out.samples, denoised, rtol=0, atol=1e-10), info.name  # float64 round-off
    # ddim, dpm_solver++2m, ++3m, ++_grouped, unipc, deis, ipndm, lms, edm_heun, kdpm2, flow_euler, flow_heun
    assert ran >= 12


def _exact_eps_model(sde, score):
    """ring2d's exact eps-model in diffusers' terms: timestep n at t = (n + 1)/N, eps = -sigma_t s(x, t)."""

    def eps_model(x, timestep):
        t = ((timestep.to(torch.float64) + 1) / sde.N).expand(x.shape[0])
        _, sigma = sde.marginal(t)
        return (-sigma[:, None] * score(x.double(), t)).to(x.dtype)

    return eps_model


def _their_loop(scheduler, eps_model, x, steps):
    """A diffusers scheduler's own loop from the noise x (what its pipeline does)."""
    scheduler.set_timesteps(steps)
    x = x * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x = scheduler.step(eps_model(scheduler.scale_model_input(x, t), t.reshape(1)), t, x).prev_sample
    return x


SCHEDULERS = [
    ("DDIM", lambda: diffusers.DDIMScheduler(clip_sample=False)),
    ("Euler (linspace)", lambda: diffusers.EulerDiscreteScheduler()),
    ("Euler (trailing)", lambda: diffusers.EulerDiscreteScheduler(timestep_spacing="trailing")),
    ("DPMSolverMultistep (linspace)", lambda: diffusers.DPMSolverMultistepScheduler()),
    ("DPMSolverMultistep 3M", lambda: diffusers.DPMSolverMultistepScheduler(solver_order=3)),
    ("DPMSolverMultistep sigma_min, no lower_order_final",
     lambda: diffusers.DPMSolverMultistepScheduler(final_sigmas_type="sigma_min", lower_order_final=False)),
    ("DPMSolverMultistep order 1", lambda: diffusers.DPMSolverMultistepScheduler(solver_order=1)),
    ("DPMSolverMultistep heun", lambda: diffusers.DPMSolverMultistepScheduler(solver_type="heun")),
    ("DPMSolverMultistep 3M heun", lambda: diffusers.DPMSolverMultistepScheduler(solver_order=3, solver_type="heun")),
    ("DPMSolverMultistep euler_at_final",
     lambda: diffusers.DPMSolverMultistepScheduler(euler_at_final=True, final_sigmas_type="sigma_min")),
    ("DPMSolverMultistep 3M euler_at_final", lambda: diffusers.DPMSolverMultistepScheduler(
        solver_order=3, euler_at_final=True, final_sigmas_type="sigma_min")),
    ("DPMSolverMultistep 3M leading",
     lambda: diffusers.DPMSolverMultistepScheduler(solver_order=3, timestep_spacing="leading")),
    ("UniPCMultistep order 1", lambda: diffusers.UniPCMultistepScheduler(solver_order=1)),
    ("UniPCMultistep order 2", lambda: diffusers.UniPCMultistepScheduler()),
    ("UniPCMultistep order 3", lambda: diffusers.UniPCMultistepScheduler(solver_order=3)),
    # bh1 to sigma = 0 gives NaN in diffusers' own loop (B(h) = h is infinite there): sigma_min
    ("UniPCMultistep bh1", lambda: diffusers.UniPCMultistepScheduler(solver_type="bh1", final_sigmas_type="sigma_min")),
    ("DEISMultistep order 2", lambda: diffusers.DEISMultistepScheduler()),
    ("DEISMultistep order 3", lambda: diffusers.DEISMultistepScheduler(solver_order=3)),
    ("DPMSolverSinglestep order 1", lambda: diffusers.DPMSolverSinglestepScheduler(solver_order=1)),
    ("DPMSolverSinglestep order 2", lambda: diffusers.DPMSolverSinglestepScheduler()),
    ("DPMSolverSinglestep order 2 heun", lambda: diffusers.DPMSolverSinglestepScheduler(solver_type="heun")),
    ("DPMSolverSinglestep order 3", lambda: diffusers.DPMSolverSinglestepScheduler(solver_order=3)),
    ("DPMSolverSinglestep order 3 heun, sigma_min",
     lambda: diffusers.DPMSolverSinglestepScheduler(solver_order=3, solver_type="heun", final_sigmas_type="sigma_min")),
    ("LMS (linspace)", lambda: diffusers.LMSDiscreteScheduler()),
    ("LMS (trailing)", lambda: diffusers.LMSDiscreteScheduler(timestep_spacing="trailing")),
    # KDPM2's default betas are Stable Diffusion's; these are the DDPM schedule's, as the model's
    ("KDPM2 (linspace)", lambda: diffusers.KDPM2DiscreteScheduler(beta_start=1e-4, beta_end=0.02)),
    ("KDPM2 (trailing)",
     lambda: diffusers.KDPM2DiscreteScheduler(beta_start=1e-4, beta_end=0.02, timestep_spacing="trailing")),
]  # fmt: skip


@pytest.mark.parametrize("steps", [10, 25])
@pytest.mark.parametrize("name, make", SCHEDULERS, ids=[s[0] for s in SCHEDULERS])
def test_match_scheduler_reproduces_each_schedulers_own_loop(name, make, steps):
    # Issue: reproduce every diffusers scheduler; the bar is 1e-4 relative (float32). Measured max
    # |ours - theirs| / max |theirs| (ours float64, theirs float32): 3e-7 .. 8.4e-6 over these 22 cases
    # (UniPC order 3 at 25 steps was 5.2e-2 before: diffusers lowers its final orders at any step count).
    sde, ring = ds.DiscreteVPSDE(), ds.GaussianMixture.ring2d()
    score = ring.score_fn(sde)
    x = torch.randn(500, 2, generator=torch.Generator().manual_seed(0))
    theirs = _their_loop(make(), _exact_eps_model(sde, score), x.clone(), steps)
    assert bool(torch.isfinite(theirs).all())
    ours = ds.sample(score, sde, x_T=x.double(), **match_scheduler(make(), steps))
    scheduler = make()
    scheduler.set_timesteps(steps)
    assert ours.nfe == len(scheduler.timesteps)  # KDPM2: 2 per step, 1 on its last (Euler) step to 0
    assert float((ours.samples - theirs.double()).abs().max() / theirs.abs().max()) <= 1e-4


def _their_noisy_loop(scheduler, eps_model, x, steps, seed):
    scheduler.set_timesteps(steps)
    x, generator = x * scheduler.init_noise_sigma, torch.Generator().manual_seed(seed)
    for t in scheduler.timesteps:
        out = eps_model(scheduler.scale_model_input(x, t), t.reshape(1))
        x = scheduler.step(out, t, x, generator=generator).prev_sample
    return x


STOCHASTIC = [
    ("DDPM", lambda: diffusers.DDPMScheduler(clip_sample=False)),
    ("EulerAncestral", lambda: diffusers.EulerAncestralDiscreteScheduler()),
    ("SDE-DPMSolver++(2M)", lambda: diffusers.DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++")),
]


@pytest.mark.parametrize("steps", [10, 25])
@pytest.mark.parametrize("name, make", STOCHASTIC, ids=[s[0] for s in STOCHASTIC])
def test_match_scheduler_reproduces_the_stochastic_schedulers_in_distribution(name, make, steps):
    # Their noise is not ours, so the two samplers are compared by their samples' radii (two-sample KS,
    # n = 4000 each, from the same initial noise): measured p >= 0.12 over these six cases.
    sde, ring = ds.DiscreteVPSDE(), ds.GaussianMixture.ring2d()
    score = ring.score_fn(sde)
    x = torch.randn(4000, 2, generator=torch.Generator().manual_seed(0))
    theirs = _their_noisy_loop(make(), _exact_eps_model(sde, score), x.clone(), steps, seed=1).double()
    kw = match_scheduler(make(), steps)
    ours = ds.sample(score, sde, x_T=x.double(), seed=2, **kw).samples
    assert ks_two_sample(theirs.norm(dim=1), ours.norm(dim=1)).p_value > 1e-3
    if name == "DDPM" and steps == 10:  # the test sees a wrong sampler: deterministic DDIM is rejected
        ddim = ds.sample(
            score, sde, x_T=x.double(), solver="ddim", time_grid=kw["time_grid"], eps=kw["eps"]
        ).samples
        assert ks_two_sample(theirs.norm(dim=1), ddim.norm(dim=1)).p_value < 1e-6


@pytest.mark.parametrize("steps", [10, 25])
def test_sde_dpm_solver_pp_2m_is_reproduced_pathwise_on_shared_noise(steps):
    # diffusers' DPMSolverMultistepScheduler.step takes its noise (variance_noise=): given the normals
    # diffsolve's dpm_solver++2m_sde draws from the seed's Brownian path (z_i = dW_i / sqrt(dt_i)), its
    # loop is ours path for path. Measured max |ours - theirs| / max |theirs|: 1e-5 (10 steps) and
    # 3e-4 (25 steps: 2 of 500 paths above 1e-4, median 1e-7). Those few paths are where the reverse
    # SDE amplifies round-off over its last steps: their own loop, jittered by 1e-7 relative per step,
    # moves them as far (9e-4 to 1.5e-3 over three jitters, against our 1.4e-3).
    from diffsolve.adapters.torchsde import KeyedNoise

    sde, ring = ds.DiscreteVPSDE(), ds.GaussianMixture.ring2d()
    score, eps_model = ring.score_fn(sde), _exact_eps_model(sde, ring.score_fn(sde))
    make = lambda: diffusers.DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++")  # noqa: E731
    x = torch.randn(500, 2, generator=torch.Generator().manual_seed(0))
    kw = match_scheduler(make(), steps)
    ours = ds.sample(score, sde, x_T=x.double(), seed=3, **kw).samples
    times = kw["time_grid"].tolist()
    path = KeyedNoise(3, 0).path(x.double(), sde, float(kw["eps"]))
    noise = [
        path.increment(times[i], times[i + 1]) / math.sqrt(times[i] - times[i + 1]) for i in range(steps)
    ]

    def their_loop(jitter=None):
        scheduler, theirs = make(), x.clone()
        scheduler.set_timesteps(steps)
        for i, t in enumerate(scheduler.timesteps):
            out = eps_model(theirs, t.reshape(1))
            theirs = scheduler.step(out, t, theirs, variance_noise=noise[i].float()).prev_sample
            if jitter is not None:
                theirs = theirs * (1 + 1e-7 * torch.randn(theirs.shape, generator=jitter))
        return theirs.double()

    theirs = their_loop()
    scale = float(theirs.abs().max())
    diff = (ours - theirs).abs().amax(dim=1)
    assert float(diff.median()) <= 1e-6 * scale
    assert float((diff > 1e-4 * scale).float().mean()) <= 0.01
    spread = (their_loop(torch.Generator().manual_seed(1)) - theirs).abs().amax(dim=1)
    assert float(diff.max()) <= max(1e-4 * scale, 3 * float(spread.max()))


@pytest.mark.parametrize(
    "make, words",
    [(lambda: diffusers.PNDMScheduler(), "no diffsolve solver makes PNDMScheduler's update"),
     (lambda: diffusers.KDPM2AncestralDiscreteScheduler(), "no diffsolve solver makes KDPM2AncestralDiscrete"),
     (lambda: diffusers.DPMSolverSinglestepScheduler(algorithm_type="sde-dpmsolver++"), "algorithm_type="),
     (lambda: diffusers.LMSDiscreteScheduler(use_karras_sigmas=True), "rounds its sigmas"),
     (lambda: diffusers.HeunDiscreteScheduler(), "HeunDiscreteScheduler"),
     (lambda: diffusers.DDPMScheduler(), "DDPMScheduler(clip_sample=True) clamps its data prediction"),
     (lambda: diffusers.DPMSolverMultistepScheduler(algorithm_type="dpmsolver", final_sigmas_type="sigma_min"),
      "algorithm_type='dpmsolver'"),
     (lambda: diffusers.DPMSolverMultistepScheduler(use_karras_sigmas=True), "rounds its sigmas")],
)  # fmt: skip
def test_match_scheduler_refuses_what_it_cannot_reproduce(make, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        match_scheduler(make(), 10)


def test_a_grid_to_the_clean_data_is_refused_with_the_solvers_that_can_take_it():
    sde, ring = ds.DiscreteVPSDE(), ds.GaussianMixture.ring2d()
    grid = scheduler_times(diffusers.DDIMScheduler(), 10)
    assert float(grid[-1]) == 0.0
    with pytest.raises(ValueError, match=r"dpm_solver2 cannot step to t = 0 .*ddim, dpm_solver\+\+2m"):
        ds.sample(ring.score_fn(sde), sde, 10, solver="dpm_solver2", time_grid=grid, eps=0.0, seed=0)
    with pytest.raises(
        ValueError, match="eps must be > 0"
    ):  # without a grid that ends there, eps = 0 is refused
        ds.sample(ring.score_fn(sde), sde, 10, solver="ddim", eps=0.0, seed=0)
    with pytest.raises(ValueError, match="must end at eps"):
        ds.sample(ring.score_fn(sde), sde, 10, solver="ddim", time_grid=grid, seed=0)


def test_a_repeated_last_time_is_a_zero_length_step_and_is_dropped():
    # DDIMScheduler(set_alpha_to_one=False) ends ..., t = 0.001, 0.001: its last step moves nothing.
    sde, ring = ds.DiscreteVPSDE(), ds.GaussianMixture.ring2d()
    score = ring.score_fn(sde)
    x = torch.randn(500, 2, generator=torch.Generator().manual_seed(0))
    make = lambda: diffusers.DDIMScheduler(clip_sample=False, set_alpha_to_one=False)  # noqa: E731
    theirs = _their_loop(make(), _exact_eps_model(sde, score), x.clone(), 10)
    grid = scheduler_times(make(), 10)
    assert float(grid[-1]) == float(grid[-2])
    ours = ds.sample(score, sde, x_T=x.double(), solver="ddim", time_grid=grid, eps=grid[-1])
    assert ours.nfe == 9
    assert float((ours.samples - theirs.double()).abs().max() / theirs.abs().max()) <= 1e-4


def test_img2img_starts_below_T_from_the_noised_input():
    # SDEdit / img2img: start at t0 < T from x0 noised to t0. Starting from exact draws of p_t0, a
    # converged solve to eps must give p_eps: the KS test of log p (diffsolve.judge) cannot tell them apart.
    from diffsolve.judge import ExactLogDensity, log_prob_ks

    sde, ring = ds.VPSDE(), ds.GaussianMixture.ring2d()
    t0, eps = 0.5, 1e-3
    x_t0 = ring.marginal(t0, sde).sample(4000, seed=1)
    grid = torch.linspace(t0, eps, 101, dtype=torch.float64)
    out = ds.sample(ring.score_fn(sde), sde, x_T=x_t0, solver="dpm_solver++2m", time_grid=grid, eps=eps)
    assert out.nfe == 100
    assert log_prob_ks(out.samples, ExactLogDensity(ring, eps, sde, n=50_000)).p_value > 1e-3
    # and the judge sees a wrong start: the input not noised to t0 (the usual img2img mistake)
    clean = ring.sample(4000, seed=2)
    wrong = ds.sample(ring.score_fn(sde), sde, x_T=clean, solver="dpm_solver++2m", time_grid=grid, eps=eps)
    assert log_prob_ks(wrong.samples, ExactLogDensity(ring, eps, sde, n=50_000)).p_value < 1e-6


def test_a_time_below_the_first_timestep_is_refused_naming_eps(unet, tmp_path):
    # log_likelihood's default eps (1e-5) would ask the network for timestep -0.99, which it never saw
    unet.save_pretrained(tmp_path)
    diffusers.DDPMScheduler().save_pretrained(tmp_path)
    score = from_diffusers(tmp_path)
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"asked it for timestep -0\.99 \(t = 1e-05\): pass eps >= 0\.001"):
        ds.log_likelihood(score, score.sde, x, solver="rk4", steps=2)
    with torch.no_grad():  # from eps = 1/N (timestep 0) up, it runs
        assert torch.isfinite(
            ds.log_likelihood(score, score.sde, x, solver="rk4", steps=2, eps=1e-3).log_prob
        ).all()


@pytest.mark.parametrize(
    "make",
    [diffusers.LMSDiscreteScheduler, diffusers.DEISMultistepScheduler,
     lambda: diffusers.HeunDiscreteScheduler(beta_start=1e-4, beta_end=0.02)],
    ids=["LMS", "DEIS", "Heun"],
)  # fmt: skip
def test_a_registered_schedulers_loop_is_its_own_and_compare_judges_it(make):
    # Schedulers match_scheduler cannot reproduce still run, as themselves, beside diffsolve's samplers.
    from diffsolve.compare import compare
    from diffsolve.samplers import register_scheduler, unregister_solver

    sde, ring = ds.DiscreteVPSDE(), ds.GaussianMixture.ring2d()
    score = ring.score_fn(sde)
    x = torch.randn(500, 2, generator=torch.Generator().manual_seed(0))
    solver = register_scheduler(make, "diffusers:test")
    try:
        theirs = _their_loop(make(), _exact_eps_model(sde, score), x.clone(), 10)
        ours = ds.sample(score, sde, x_T=x, solver="diffusers:test", steps=10)
        assert ours.nfe == len(_timesteps(make(), 10))  # Heun: 2 per step, 1 on the last
        assert float((ours.samples - theirs).abs().max() / theirs.abs().max()) <= 1e-5  # measured <= 5e-6
        table = compare(
            score, sde, reference=ring, solvers=["diffusers:test"], budgets=[10], n=500, progress=False
        )
        assert table.rows[0]["nfe"] == ours.nfe and "ks_logp_p" in table.rows[0]
        with pytest.raises(ValueError, match="runs on the DiscreteVPSDE of its scheduler's betas"):
            other = ds.DiscreteVPSDE(torch.linspace(1e-3, 0.02, 1000))
            ds.sample(ring.score_fn(other), other, 10, solver="diffusers:test", steps=5)
    finally:
        unregister_solver("diffusers:test")
    assert solver.name not in [s.name for s in ds.solvers()]


def _timesteps(scheduler, steps):
    scheduler.set_timesteps(steps)
    return scheduler.timesteps


def test_a_stochastic_scheduler_is_not_registered():
    from diffsolve.samplers import register_scheduler

    with pytest.raises(ValueError, match="draws its own noise"):
        register_scheduler(diffusers.EulerAncestralDiscreteScheduler)


FLOW_MATCH = {
    "FlowMatchEuler, shift 3 (SD3)": (lambda: diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0), None),
    "FlowMatchEuler, shift 1": (lambda: diffusers.FlowMatchEulerDiscreteScheduler(), None),
    "FlowMatchEuler, dynamic shift (FLUX, 1024 px)": (
        lambda: diffusers.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True),
        math.log(ds.samplers.grids.dynamic_shift(4096)),
    ),
    "FlowMatchHeun, shift 3": (lambda: diffusers.FlowMatchHeunDiscreteScheduler(shift=3.0), None),
}


@pytest.mark.parametrize("steps", [10, 25])
@pytest.mark.parametrize("name", list(FLOW_MATCH))
def test_a_flow_matching_model_and_its_schedulers_loop_are_reproduced(unet, tmp_path, name, steps):
    # A diffusers flow-matching model (velocity eps - x0, timestep = sigma * 1000) saved with its scheduler:
    # from_diffusers puts it on RectifiedFlow(T=1), and match_scheduler's flow_euler / flow_heun start at
    # sigma = 1 (the prior itself) and step to 0 on the scheduler's sigmas, as its own loop does.
    make, mu = FLOW_MATCH[name]
    unet.save_pretrained(tmp_path)
    make().save_pretrained(tmp_path)
    score = from_diffusers(tmp_path)
    assert score.sde == ds.RectifiedFlow(T=1.0) and score.parameterization == "velocity"
    x = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    scheduler = make()
    scheduler.set_timesteps(steps, **({} if mu is None else {"mu": mu}))
    theirs = x.clone()
    with torch.no_grad():
        for t in scheduler.timesteps:
            theirs = scheduler.step(unet(theirs, t).sample, t, theirs).prev_sample
        kwargs = match_scheduler(make(), steps, mu=mu)
        out = ds.sample(score, score.sde, x_T=x, progress=False, **kwargs)
    assert float(kwargs["time_grid"][0]) == 1.0 and float(kwargs["time_grid"][-1]) == 0.0
    assert out.nfe == len(scheduler.timesteps)  # Heun: 2 per step, 1 on the last (to sigma = 0)
    rel = float((out.samples - theirs).abs().max() / theirs.abs().max())
    assert rel <= 1e-5, rel


def test_a_zero_terminal_snr_path_is_refused_where_the_velocity_is_not_known(unet):
    score = from_diffusers(unet, diffusers.FlowMatchEulerDiscreteScheduler())
    with pytest.raises(ValueError, match="the solvers that can, on a velocity model: ddim, dpm_solver"):
        ds.sample(score, score.sde, 2, event_shape=(1, 8, 8), solver="ipndm", steps=5, progress=False)
    with pytest.raises(ValueError, match="'logsnr' grid cannot start at alpha_T = 0"):  # ddim's default grid
        ds.sample(score, score.sde, 2, event_shape=(1, 8, 8), solver="ddim", steps=5, progress=False)
    with pytest.raises(ValueError, match="zero signal"):
        ds.log_likelihood(score, score.sde, torch.zeros(2, 1, 8, 8), progress=False)
    with pytest.raises(ValueError, match="dynamic_shifting"):
        match_scheduler(diffusers.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True), 10)
    with pytest.raises(ValueError, match="stochastic_sampling"):
        match_scheduler(diffusers.FlowMatchEulerDiscreteScheduler(stochastic_sampling=True), 10)


def test_the_wrappers_timestep_for_one_shared_time_is_the_per_row_one():
    # One time expanded over the batch takes a Python-float path; the network must see the same timestep
    # as when every row carries its own copy of that time (the tensor path), snapped or not.
    from diffsolve.interop import DiffusersUNet

    seen = []

    def unet(x, n):
        seen.append(n.clone())
        return torch.zeros_like(x)

    sde = ds.DiscreteVPSDE()
    wrapper = DiffusersUNet(unet, sde)
    x = torch.zeros(3, 2)
    for value in (1e-3, 0.5, 0.5 + 3e-7, 0.12345, 1.0):
        for dtype in (torch.float32, torch.float64):
            seen.clear()
            wrapper(x.to(dtype), torch.tensor(value, dtype=dtype).expand(3))
            wrapper(x.to(dtype), torch.full((3,), value, dtype=dtype))
            assert torch.equal(seen[0], seen[1]), (value, dtype, seen)


SIGMA_SCHEDULES = {
    "Karras, 2M": lambda: diffusers.DPMSolverMultistepScheduler(use_karras_sigmas=True),
    "Karras, 3M": lambda: diffusers.DPMSolverMultistepScheduler(use_karras_sigmas=True, solver_order=3),
    "exponential": lambda: diffusers.DPMSolverMultistepScheduler(use_exponential_sigmas=True),
    "Lu lambdas": lambda: diffusers.DPMSolverMultistepScheduler(use_lu_lambdas=True),
    "Karras, sigma_min": lambda: diffusers.DPMSolverMultistepScheduler(
        use_karras_sigmas=True, final_sigmas_type="sigma_min", lower_order_final=False
    ),
    "DEIS order 3, Karras": lambda: diffusers.DEISMultistepScheduler(solver_order=3, use_karras_sigmas=True),
    "DPMSolverSinglestep, Karras": lambda: diffusers.DPMSolverSinglestepScheduler(use_karras_sigmas=True),
}


@pytest.mark.parametrize("steps", [10, 25])
@pytest.mark.parametrize("name", list(SIGMA_SCHEDULES))
def test_exact_reproduces_the_rounded_timesteps_of_karras_type_sigmas(unet, name, steps):
    # DPMSolverMultistepScheduler with Karras-type sigmas steps with each unrounded sigma but gives its
    # network a timestep rounded from it; exact=True does the same (the grid at the sigmas' times, the
    # network given the scheduler's timestep there). Without it the schedule is refused, naming exact=True.
    make = SIGMA_SCHEDULES[name]
    score = from_diffusers(unet, diffusers.DDIMScheduler(clip_sample=False))  # same betas
    x = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    scheduler = make()
    scheduler.set_timesteps(steps)
    theirs = x.clone()
    with torch.no_grad():
        for t in scheduler.timesteps:
            theirs = scheduler.step(unet(theirs, t).sample, t, theirs).prev_sample
        kwargs = match_scheduler(make(), steps, exact=True, score=score, x_T=x)
        out = ds.sample(sde=score.sde, progress=False, **kwargs)
    rel = float((out.samples - theirs).abs().max() / theirs.abs().max())
    assert rel <= 1e-5, rel
    with pytest.raises(ValueError, match="exact=True"):
        match_scheduler(make(), steps)


EULER_TYPE = {
    "Euler, linspace": lambda: diffusers.EulerDiscreteScheduler(),
    "Euler, Karras": lambda: diffusers.EulerDiscreteScheduler(use_karras_sigmas=True),
    "Heun": lambda: diffusers.HeunDiscreteScheduler(),
    "Heun, Karras": lambda: diffusers.HeunDiscreteScheduler(use_karras_sigmas=True),
    "LMS, linspace": lambda: diffusers.LMSDiscreteScheduler(),
    "LMS, Karras": lambda: diffusers.LMSDiscreteScheduler(use_karras_sigmas=True),
    "KDPM2, linspace": lambda: diffusers.KDPM2DiscreteScheduler(beta_start=1e-4, beta_end=0.02),
    "KDPM2, Karras": lambda: diffusers.KDPM2DiscreteScheduler(
        beta_start=1e-4, beta_end=0.02, use_karras_sigmas=True
    ),
}


@pytest.mark.parametrize("steps", [10, 25])
@pytest.mark.parametrize("name", list(EULER_TYPE))
def test_exact_reproduces_euler_and_heun_with_their_timesteps_and_start(unet, name, steps):
    # Euler and Heun give their network fractional timesteps interpolated otherwise than their sigmas,
    # and start from noise * sigma_max in x / alpha (not sqrt(sigma_max^2 + 1)); exact=True does too.
    make = EULER_TYPE[name]
    score = from_diffusers(unet, diffusers.DDIMScheduler(clip_sample=False))
    x = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    scheduler = make()
    scheduler.set_timesteps(steps)
    theirs = x * scheduler.init_noise_sigma
    with torch.no_grad():
        for t in scheduler.timesteps:
            theirs = scheduler.step(
                unet(scheduler.scale_model_input(theirs, t), t).sample, t, theirs
            ).prev_sample
        out = ds.sample(
            sde=score.sde, progress=False, **match_scheduler(make(), steps, exact=True, score=score, x_T=x)
        )
    rel = float((out.samples - theirs).abs().max() / theirs.abs().max())
    assert rel <= 1e-5, rel
    with pytest.raises(ValueError, match="pass x_T="):
        match_scheduler(make(), steps, exact=True, score=score)


def test_exact_says_where_it_applies(unet):
    score = from_diffusers(unet, diffusers.DDIMScheduler(clip_sample=False))
    with pytest.raises(ValueError, match="exact=True applies to DPMSolverMultistepScheduler, EulerDiscrete"):
        match_scheduler(diffusers.PNDMScheduler(), 10, exact=True, score=score)
    with pytest.raises(TypeError, match="needs score="):
        match_scheduler(diffusers.DPMSolverMultistepScheduler(use_karras_sigmas=True), 10, exact=True)
