r"""How far posterior samples are from the exact posterior: the judge of inverse-problem samplers.

For a `GaussianMixture` prior and a linear-Gaussian `Observation`, the posterior is a mixture in
closed form (`GaussianMixture.posterior`), and so is its marginal at the samplers' final time
$\epsilon$. `posterior_error` reads a sample set against it with the same battery `compare` uses
(docs/architecture.md, "How sample quality is judged"): the mean $\log p_\epsilon(x \mid y)$ gap, the
component-weight TV, a KS test of $\log p_\epsilon(X \mid y)$, the tail-mass test and a kNN classifier
two-sample test against exact posterior draws; plus the error of the sample mean, the
posterior-mean estimate a user reads off, against the exact $\mathbb{E}[x_\epsilon \mid y]$.

`posterior_study` runs the methods people use (`METHODS`: the exact posterior score, DPS, $\Pi$GDM,
replacement, RePaint), each through `sample` at the same NFE budgets, and judges every sample set
against the exact posterior: the bias table of docs/benchmarks.md ("Inverse problems").
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .._validation import check_batched, check_positive, check_seed
from ..analytic import GaussianMixture
from ..comparison import ALPHA
from ..inverse import Observation, dps, pigdm
from ..judge import ExactLogDensity, TestResult, c2st, log_prob_ks, tail_mass
from ..metrics import Estimate, log_prob_gap, weight_tv
from ..samplers import get_solver
from ..sampling import sample
from ..scores import Score
from ..sde import SDE

__all__ = ["PosteriorError", "PosteriorJudge", "posterior_error", "Method", "METHODS", "posterior_study"]

GAP_TOL = 0.02
"""Allowed mean log-density gap in nats on top of 3 standard errors (as `comparison.criteria_met`)."""

TV_TOL = 0.01
"""Allowed component-weight TV on top of its sampling-noise scale (as `comparison.criteria_met`)."""

MEAN_Z = 4.0
"""Allowed error of the sample mean, in units of its sampling-noise scale."""


@dataclass(frozen=True)
class PosteriorError:
    r"""A sample set read against the exact posterior marginal $p_\epsilon(x \mid y)$.

    Attributes:
        mean_error: $\|\bar x - \mathbb{E}[x_\epsilon \mid y]\|$ over the whole event, with its standard
            error (the sample mean's own noise, $\sqrt{\operatorname{tr}\mathrm{Cov}/n}$).
        log_prob_gap: Mean $\log p_\epsilon(X \mid y)$ minus its exact expectation, in nats.
        weight_tv: TV between the sample's posterior-component weights and the exact ones.
        ks: KS test of $\log p_\epsilon(X \mid y)$ against exact draws.
        tail: Mass below the exact 0.2% quantile of $\log p_\epsilon(\cdot \mid y)$, binomial test.
        c2st: kNN classifier two-sample test against exact posterior draws.
    """

    mean_error: Estimate
    log_prob_gap: Estimate
    weight_tv: Estimate
    ks: TestResult
    tail: TestResult
    c2st: TestResult

    @property
    def indistinguishable(self) -> bool:
        """`compare`'s criterion against the exact posterior: every test at level `comparison.ALPHA`, the
        log-density gap within 0.02 nats + 3 SE, the weight TV within its noise scale + 0.01, and the
        error of the sample mean within 4 times its noise scale."""
        gap, tv, mean = self.log_prob_gap, self.weight_tv, self.mean_error
        tests = (self.ks, self.tail, self.c2st)
        return (
            abs(gap.value) <= GAP_TOL + 3 * gap.se
            and tv.value <= tv.se + TV_TOL
            and mean.value <= MEAN_Z * mean.se
            and all(r.p_value >= ALPHA for r in tests)
        )

    def as_row(self) -> dict[str, float | bool]:
        """A flat dict for tables."""
        return {
            "mean_error": self.mean_error.value, "mean_error_se": self.mean_error.se,
            "log_prob_gap": self.log_prob_gap.value, "log_prob_gap_se": self.log_prob_gap.se,
            "weight_tv": self.weight_tv.value, "weight_tv_se": self.weight_tv.se,
            "ks_logp_p": self.ks.p_value, "tail_mass_p": self.tail.p_value, "c2st_p": self.c2st.p_value,
            "indistinguishable": self.indistinguishable,
        }  # fmt: skip


class PosteriorJudge:
    r"""The exact posterior at $\epsilon$ and its reference draws, made once and shared by every sample set.

    Args:
        posterior: The exact posterior $p(x_0 \mid y)$ (`Observation.posterior(prior)`).
        sde: The forward SDE the samplers solve.
        eps: Their final time.
        n: Exact reference draws for the log-density tests.
        seed: Seed of the reference draws.
    """

    def __init__(
        self, posterior: GaussianMixture, sde: SDE, *, eps: float = 1e-3, n: int = 200_000, seed: int = 0
    ) -> None:
        if not isinstance(posterior, GaussianMixture):
            raise TypeError(f"posterior must be a GaussianMixture, got {type(posterior).__name__}")
        self.posterior, self.sde, self.eps = posterior, sde, float(eps)
        self.reference = ExactLogDensity(posterior, self.eps, sde, n=n, seed=check_seed(seed))
        self.at_eps = posterior.marginal(self.eps, sde)
        self.draws = self.at_eps.sample(10_000, seed=seed + 1, dtype=torch.float32)
        # tr Cov(x_eps | y): the total variance, the noise scale of the sample mean's error
        m = self.at_eps
        self.total_variance = float(
            (m.weights @ m.covariances.diagonal(dim1=1, dim2=2).sum(1))
            + m.weights @ (m.means - m.mean).square().sum(1)
        )

    def __call__(self, x: Tensor) -> PosteriorError:
        """Judge the samples `x` `(n, *event)`."""
        x = check_batched(x, "x", min_dim=1)
        flat = x.detach().flatten(1).to(torch.float64).cpu()
        if flat.shape[1] != self.posterior.dim:
            raise ValueError(f"x has {flat.shape[1]} values per sample, the posterior {self.posterior.dim}")
        noise = math.sqrt(self.total_variance / flat.shape[0])
        mean_error = Estimate(float((flat.mean(0) - self.at_eps.mean).norm()), noise)
        return PosteriorError(
            mean_error=mean_error,
            log_prob_gap=log_prob_gap(flat, self.posterior, self.eps, self.sde, reference=self.reference),
            weight_tv=weight_tv(flat, self.posterior, self.eps, self.sde),
            ks=log_prob_ks(flat, self.reference),
            tail=tail_mass(flat, self.reference),
            c2st=c2st(flat.to(torch.float32), self.draws),
        )


def posterior_error(
    x: Tensor, posterior: GaussianMixture, sde: SDE, *, eps: float = 1e-3, seed: int = 0
) -> PosteriorError:
    r"""Judge posterior samples `x` (taken at time `eps`) against the exact posterior `posterior`.

    Builds a `PosteriorJudge` (200 000 exact reference draws); to judge many sample sets against one
    posterior, build the judge once and call it.

    Args:
        x: The samples, `(n, *event)`.
        posterior: The exact posterior mixture.
        sde: The forward SDE the samples were solved under.
        eps: Their final time.
        seed: Seed of the reference draws.
    """
    return PosteriorJudge(posterior, sde, eps=eps, seed=seed)(x)


@dataclass(frozen=True)
class Method:
    """An inverse-problem sampler as `sample` runs it: a score built from the prior's, a solver, options.

    Attributes:
        name: The method's name in tables.
        solver: The registered solver it runs.
        make_score: `make_score(prior_score, observation, posterior, sde)`: the score the solver is given.
        options: The solver's options (`observation=` is added for solvers that take one).
        description: One line for tables.
        needs_posterior: Whether `make_score` reads the exact posterior (analytic problems only).
    """

    name: str
    solver: str
    make_score: Callable[[Score, Observation, GaussianMixture, SDE], Score] = field(repr=False)
    options: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    needs_posterior: bool = False

    def steps(self, nfe: int) -> int:
        """Steps that spend `nfe` evaluations (at least one step)."""
        return max(1, int(nfe) // get_solver(self.solver).step_cost(self.options))


def _data_std(prior: GaussianMixture) -> float:
    """The prior's overall standard deviation per coordinate, ΠGDM's c."""
    second = (prior.weights @ (prior.covariances.diagonal(dim1=1, dim2=2) + prior.means**2)).mean()
    return math.sqrt(float(second - prior.mean.square().mean()))


def _methods() -> dict[str, Method]:
    base = "ddim_eta"  # DDPM's ancestral sampler: the step the projection solvers take, so NFE compare
    return {
        m.name: m
        for m in [
            Method("exact", base, lambda s, o, post, sde: post.score_fn(sde), description="the exact posterior score",
                   needs_posterior=True),
            Method("exact, dpm++2m sde", "dpm_solver++2m_sde", lambda s, o, post, sde: post.score_fn(sde),
                   description="the exact posterior score on the best stochastic sampler", needs_posterior=True),
            Method("dps", base, lambda s, o, post, sde: dps(s, o, sde=sde), description="DPS, scale 1"),
            Method("pigdm", base, lambda s, o, post, sde: pigdm(s, o, sde=sde, data_std=_prior_std(s)),
                   description="ΠGDM, c = the prior's std"),
            Method("dps, dpm++2m sde", "dpm_solver++2m_sde", lambda s, o, post, sde: dps(s, o, sde=sde),
                   description="DPS, scale 1, on the best stochastic sampler"),
            Method("pigdm, dpm++2m sde", "dpm_solver++2m_sde",
                   lambda s, o, post, sde: pigdm(s, o, sde=sde, data_std=_prior_std(s)),
                   description="ΠGDM on the best stochastic sampler"),
            Method("dps_ddpm", "dps_ddpm", lambda s, o, post, sde: s, description="Chung et al.'s DPS loop, zeta' = 1"),
            Method("pigdm_ddim", "pigdm_ddim", lambda s, o, post, sde: s, description="Song et al.'s PiGDM loop"),
            Method("replacement", "replacement", lambda s, o, post, sde: s, description="score_sde's replacement"),
            Method("repaint", "repaint", lambda s, o, post, sde: s, {"resample": 5}, description="RePaint, r = 5"),
        ]
    }  # fmt: skip


def _prior_std(score: Score) -> float:
    mixture = getattr(score, "mixture", None)
    return _data_std(mixture) if isinstance(mixture, GaussianMixture) else 1.0


METHODS: dict[str, Method] = _methods()
"""The methods of the bias study, by name; each runs on DDPM's ancestral step (`ddim_eta`, or the
projection solvers and the papers' DPS and ΠGDM loops built on it), so that equal NFE is equal work
but for the VJP of the guided methods; the exact posterior score and the DPS and ΠGDM scores also
run on `dpm_solver++2m_sde`, the best stochastic sampler."""


def posterior_study(
    prior: GaussianMixture,
    sde: SDE,
    observation: Observation,
    *,
    methods: Sequence[Method] | None = None,
    nfe: Sequence[int] = (10, 20, 50, 100, 200, 500, 1000),
    n: int = 5000,
    seed: int = 0,
    eps: float = 1e-3,
    judge: PosteriorJudge | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Run each method at each NFE budget on the prior's exact score and judge it against the exact posterior.

    Args:
        prior: The prior mixture (its exact score is the "learned" model every method gets).
        sde: The forward SDE.
        observation: The observation.
        methods: The methods (default: every one of `METHODS`).
        nfe: The NFE budgets.
        n: Samples per solve.
        seed: The seed of every solve.
        eps: The final time.
        judge: A `PosteriorJudge` of this posterior already built (default: one is built).
        progress: Called with a line after each solve (e.g. `print`), or None.

    Returns:
        One row per (method, budget): `method`, `solver`, `nfe` (as counted by the solve), `seconds`,
        and `PosteriorError.as_row()`.
    """
    check_positive(n, "n", integer=True)
    posterior = observation.posterior(prior)
    judge = judge if judge is not None else PosteriorJudge(posterior, sde, eps=eps)
    prior_score = prior.score_fn(sde)
    rows = []
    for method in methods if methods is not None else METHODS.values():
        score = method.make_score(prior_score, observation, posterior, sde)
        options = dict(method.options)
        if "observation" in get_solver(method.solver).options:
            options["observation"] = observation
        for budget in nfe:
            start = time.perf_counter()
            out = sample(score, sde, n, event_shape=observation.event_shape, solver=method.solver,
                         steps=method.steps(budget), seed=seed, eps=eps, progress=False, **options)  # fmt: skip
            seconds = time.perf_counter() - start
            row = {"method": method.name, "solver": method.solver, "nfe": out.nfe, "seconds": seconds,
                   **judge(out.samples).as_row()}  # fmt: skip
            rows.append(row)
            if progress is not None:
                progress(
                    f"{method.name} nfe={out.nfe}: gap {row['log_prob_gap']:+.3f}, mean error {row['mean_error']:.3f}"
                )
    return rows
