"""Bad input gets a clear error naming the argument, what was given and what was expected."""

import pytest
import torch

import diffsolve as ds


@pytest.fixture(scope="module")
def setup():
    gm, sde = ds.GaussianMixture.ring2d(), ds.VPSDE()
    return gm, sde, gm.score_fn(sde)


def test_unknown_solver_lists_valid_ones(setup):
    _, sde, score = setup
    with pytest.raises(ValueError, match=r"solver must be one of .*sde:euler.*ode:dopri5.*; got 'rk45'"):
        ds.sample(score, sde, 4, solver="rk45")


@pytest.mark.parametrize(
    "given, suggested",
    [
        ("rk45", "'ode:rk4'"),
        ("dopri5", "'ode:dopri5'"),
        ("eular", "'sde:euler' or 'ode:euler'"),
        ("unipcc", "'unipc'"),
    ],
)
def test_a_misspelt_solver_gets_a_did_you_mean(setup, given, suggested):
    # Issue: a misspelt solver listed 38 names with no suggestion.
    _, sde, score = setup
    with pytest.raises(ValueError, match=rf"got '{given}' \(did you mean {suggested}"):
        ds.sample(score, sde, 4, solver=given)


def test_a_device_this_torch_cannot_use_is_a_value_error_naming_it(setup):
    # Issue: device="cuda" on a CPU build raised torch's AssertionError from sample().
    _, sde, score = setup
    with pytest.raises(ValueError, match="device must be a torch device such as 'cpu' or 'cuda', got 'gpu0'"):
        ds.sample(score, sde, 4, solver="ddim", device="gpu0", seed=0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"device='cuda', but this PyTorch has no usable CUDA device"):
            ds.sample(score, sde, 4, solver="ddim", device="cuda", seed=0)


def test_generator_is_accepted_wherever_seed_is(setup):
    # Issue: sample(..., generator=g) blamed the solver; torch and diffusers users pass generators.
    gm, sde, score = setup
    a = ds.sample(score, sde, 8, solver="sde:euler", steps=10, generator=torch.Generator().manual_seed(0))
    b = ds.sample(score, sde, 8, solver="sde:euler", steps=10, seed=a.settings["seed"])
    assert torch.equal(a.samples, b.samples)  # the settings reproduce the call
    c = ds.sample(score, sde, 8, solver="sde:euler", steps=10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.samples, c.samples)
    with pytest.raises(ValueError, match="give seed= or generator=, not both"):
        ds.sample(score, sde, 8, solver="ddim", seed=0, generator=torch.Generator())
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        ds.sample(score, sde, 8, solver="ddim", generator=0)
    x = gm.sample(16, seed=0)
    lp = ds.log_likelihood(score, sde, x, divergence="hutchinson", generator=torch.Generator().manual_seed(3))
    again = ds.log_likelihood(score, sde, x, divergence="hutchinson", seed=lp.settings["seed"])
    assert torch.equal(lp.log_prob, again.log_prob)
    assert torch.equal(
        sde.prior_sample((4, 2), seed=5), sde.prior_sample((4, 2), generator=torch.Generator().manual_seed(5))
    )


@pytest.mark.parametrize("steps", [0, -3])
def test_steps_below_one(setup, steps):
    _, sde, score = setup
    with pytest.raises(ValueError, match=f"steps must be > 0, got {steps}"):
        ds.sample(score, sde, 4, solver="sde:euler", steps=steps)


def test_steps_must_be_an_integer(setup):
    _, sde, score = setup
    with pytest.raises(TypeError, match="steps must be an integer, got 10.5"):
        ds.sample(score, sde, 4, solver="ode:rk4", steps=10.5)


@pytest.mark.parametrize("kw", [{"rtol": 0.0}, {"atol": -1e-5}, {"rtol": float("nan")}])
def test_tolerances_must_be_positive(setup, kw):
    _, sde, score = setup
    name = next(iter(kw))
    with pytest.raises(ValueError, match=f"{name} must be > 0"):
        ds.sample(score, sde, 4, solver="ode:dopri5", **kw)


def test_steps_and_tolerances_go_to_the_right_solvers(setup):
    _, sde, score = setup
    with pytest.raises(ValueError, match="'ode:dopri5' is adaptive: give rtol/atol"):
        ds.sample(score, sde, 4, solver="ode:dopri5", steps=10)
    with pytest.raises(ValueError, match="'sde:euler' is fixed-step: give steps"):
        ds.sample(score, sde, 4, solver="sde:euler", rtol=1e-3)


@pytest.mark.parametrize("eps", [0.0, -1e-3, 1.0, 2.0])
def test_eps_outside_range(setup, eps):
    _, sde, score = setup
    with pytest.raises(ValueError, match="eps must"):
        ds.sample(score, sde, 4, solver="sde:euler", eps=eps)


def test_n_and_x_T(setup):
    _, sde, score = setup
    with pytest.raises(ValueError, match="give n .* or x_T"):
        ds.sample(score, sde)
    with pytest.raises(ValueError, match="n=3 disagrees with x_T's batch size 4"):
        ds.sample(score, sde, 3, x_T=torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"x_T must be shaped \(batch, \*event\)"):
        ds.sample(score, sde, x_T=torch.zeros(4))
    with pytest.raises(TypeError, match="x_T must be a torch.Tensor, got list"):
        ds.sample(score, sde, x_T=[[0.0, 0.0]])
    with pytest.raises(ValueError, match="n must be > 0"):
        ds.sample(score, sde, 0)
    # Giving both is fine when they agree.
    assert ds.sample(score, sde, 4, x_T=torch.zeros(4, 2), steps=2, seed=0).samples.shape == (4, 2)


def test_wrong_event_size_for_the_score(setup):
    _, sde, score = setup
    with pytest.raises(
        ValueError, match=r"x_T must hold 2 values per sample for this score .* got shape \(4, 3\)"
    ):
        ds.sample(score, sde, x_T=torch.zeros(4, 3), steps=2, seed=0)


def test_score_output_is_checked(setup):
    _, sde, _ = setup
    x_T = torch.zeros(4, 2)
    with pytest.raises(ValueError, match=r"score returned shape \(4, 1\); expected x's shape \(4, 2\)"):
        ds.sample(lambda x, t: x[:, :1], sde, x_T=x_T, solver="ode:euler", steps=2)
    with pytest.raises(
        TypeError, match="score returned dtype torch.float64; expected x's dtype torch.float32"
    ):
        ds.sample(lambda x, t: x.double(), sde, x_T=x_T, solver="sde:euler", steps=2, seed=0)
    with pytest.raises(TypeError, match="score must return a torch.Tensor, got ndarray"):
        ds.sample(lambda x, t: x.numpy(), sde, x_T=x_T, solver="pc", steps=2, seed=0)


@pytest.mark.parametrize("solver", ["sde:euler", "sde:srk", "ode:dopri5", "ode:rk4", "pc"])
def test_non_finite_score_names_t_and_solver(setup, solver):
    _, sde, _ = setup

    def bad(x, t):
        return torch.where(t[:, None] < 0.5, torch.full_like(x, float("nan")), -x)

    kwargs = {} if solver == "ode:dopri5" else {"steps": 10}
    with pytest.raises(ds.NonFiniteError, match=rf"at t = 0\.\d+ \(solver '{solver}'\)") as info:
        ds.sample(bad, sde, x_T=torch.randn(4, 2), solver=solver, seed=0, **kwargs)
    assert info.value.solver == solver and info.value.t < 0.5


def test_score_model_and_sde_type_checks(setup):
    _, sde, score = setup
    with pytest.raises(
        ValueError, match="parameterization must be one of 'eps', 'score', 'x0', 'v', 'velocity', got 'vee'"
    ):
        ds.ScoreModel(torch.nn.Identity(), sde, parameterization="vee")
    with pytest.raises(TypeError, match="sde must be a diffsolve SDE"):
        ds.sample(score, "vp", 4)
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        ds.sample(score, sde, 4, seed=-1)


def test_pc_corrector_skips_a_zero_score(setup):
    # A score that is exactly zero carries no information: the Langevin step is 0, not 0/0.
    _, sde, _ = setup
    res = ds.sample(
        lambda x, t: torch.zeros_like(x), sde, x_T=torch.randn(8, 2), solver="pc", steps=5, seed=0
    )
    assert bool(torch.isfinite(res.samples).all())


@pytest.mark.parametrize("prior", [lambda z: z.sum(1, keepdim=True).expand(-1, 2), lambda z: z.sum()])
def test_prior_log_prob_of_the_wrong_shape_is_refused(setup, prior):
    # (B, 2) or a scalar used to be broadcast into the result without a word.
    _, sde, score = setup
    x = torch.randn(6, 2)
    with pytest.raises(ValueError, match=r"prior_log_prob must return shape \(6,\), one value per point"):
        ds.log_likelihood(score, sde, x, prior_log_prob=prior, rtol=1e-3, atol=1e-3)
