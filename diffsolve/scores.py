r"""Scores: anything that maps `(x, t)` to an estimate of $\nabla_x \log p_t(x)$.

A score is any callable `score(x, t) -> Tensor` with `x` of shape `(B, *event)`, `t` of shape `(B,)`
in `x`'s dtype and device, and an output shaped, typed and placed like `x`. `ScoreModel` turns a
network with one of the three usual outputs into such a callable, using the SDE's marginal
$x_t = \alpha_t x_0 + \sigma_t \epsilon$:

| parameterization | network predicts | score |
| --- | --- | --- |
| `"eps"` | $\hat\epsilon$ | $-\hat\epsilon / \sigma_t$ |
| `"x0"` | $\hat x_0$ | $(\alpha_t \hat x_0 - x)/\sigma_t^2$ |
| `"v"` | $\hat v = \alpha_t \epsilon - \sigma_t x_0$ | $-(\sigma_t x + \alpha_t \hat v) / (\sigma_t(\alpha_t^2 + \sigma_t^2))$ |
| `"score"` | $\hat s$ | $\hat s$ |

`"v"` is Salimans & Ho's v-prediction (diffusers' `prediction_type="v_prediction"`); on a VP SDE
$\alpha_t^2 + \sigma_t^2 = 1$ and the score is $-(\sigma_t x + \alpha_t \hat v)/\sigma_t$.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol, runtime_checkable

from torch import Tensor, nn

from ._validation import append_dims, check_positive, describe
from .sde import SDE

__all__ = ["Score", "ScoreModel", "ScoreCalls", "CountedCalls", "evaluate_score", "check_problem"]

Parameterization = Literal["eps", "score", "x0", "v", "velocity"]
PARAMETERIZATIONS = ("eps", "score", "x0", "v", "velocity")
"""What a network may predict (`ScoreModel`'s `parameterization`)."""


@runtime_checkable
class Score(Protocol):
    """The score protocol: `score(x, t)` with `t` of shape `(B,)`, returning a tensor shaped like `x`."""

    def __call__(self, x: Tensor, t: Tensor) -> Tensor: ...


class ScoreModel(nn.Module):
    """Wrap a network `net(x, t)` as a score, whatever it was trained to predict.

    Args:
        net: A module called as `net(x, t)` with `t` of shape `(B,)`; output shaped like `x`.
        sde: The forward SDE the network was trained with (gives $\\alpha_t$, $\\sigma_t$).
        parameterization: What `net` predicts: `"eps"` (the noise), `"x0"` (the clean data), `"v"`
            ($\\alpha_t \\epsilon - \\sigma_t x_0$), `"velocity"` (flow matching's
            $u = \\dot\\alpha_t x_0 + \\dot\\sigma_t \\epsilon = dx/dt$, which is $\\epsilon - x_0$ on
            `RectifiedFlow`; the score is $-2(u - f(t)x)/g(t)^2$, since $u$ is the probability-flow
            drift $f x - \\tfrac12 g^2 s$) or `"score"`.

    Raises:
        ValueError: On an unknown parameterization.
        TypeError: If `net` is not callable or `sde` is not a diffsolve SDE.
    """

    def __init__(self, net: nn.Module, sde: SDE, parameterization: Parameterization = "eps") -> None:
        super().__init__()
        if not callable(net):
            raise TypeError(f"net must be callable as net(x, t), got {describe(net)}")
        if not isinstance(sde, SDE):
            raise TypeError(
                f"sde must be a diffsolve SDE (e.g. VPSDE, VESDE, CosineVPSDE, EDMSDE), got {describe(sde)}"
            )
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(
                f"parameterization must be one of {', '.join(map(repr, PARAMETERIZATIONS))}, got {parameterization!r}"
            )
        self.net = net
        self.sde = sde
        self.parameterization = parameterization

    @property
    def null_label(self) -> int | None:
        """The label that means "no label" for a class-conditional network of diffsolve's (`ScoreMLP`,
        `ScoreUNet` with `num_classes`: the last embedding entry, what `y=None` selects), else None.
        `guided` then evaluates the conditional and unconditional halves in one network call."""
        classes = getattr(self.net, "num_classes", None)
        return classes if isinstance(classes, int) and hasattr(self.net, "label_embed") else None

    def velocity(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        r"""The probability-flow ODE's drift $dx/dt = f(t)x - \tfrac12 g(t)^2 s(x, t)$ in forward time: the
        network's own output for a `"velocity"` model (defined at $\alpha = 0$, where the score does not
        determine it), else computed from the score. `t` is `(B,)`. The same as
        `model(x, t, y, velocity=True)`, which goes through the module's call (and so through a
        `DistributedDataParallel` wrapper)."""
        return self(x, t, y, velocity=True)

    def noise(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        r"""The noise prediction $\hat\epsilon = -\sigma_t s(x, t)$: an eps network's own output (no round
        trip through the score), else computed from the score. `t` is `(B,)`. The same as
        `model(x, t, y, noise=True)`, which goes through the module's call (and a DDP wrapper)."""
        return self(x, t, y, noise=True)

    def forward(
        self, x: Tensor, t: Tensor, y: Tensor | None = None, *, velocity: bool = False, noise: bool = False
    ) -> Tensor:
        out = self.net(x, t) if y is None else self.net(x, t, y)  # y: labels of a class-conditional net
        check_output(out, x, f"the network net(x, t) of this ScoreModel ({self.parameterization!r})")
        if noise and self.parameterization == "eps":
            return out
        if self.parameterization == "velocity":  # u = f x - g^2 s / 2, the probability-flow drift
            if velocity:
                return out
            g2 = append_dims(self.sde.g2(t).to(x.dtype), x.dim())
            score = -2.0 * (out - self.sde.drift(x, t)) / g2
        else:
            score = out if self.parameterization == "score" else self._score(out, x, t)
        if noise:
            sigma = self.sde.log_alpha_sigma(shared_time(t))[1]
            return score * append_dims(-sigma.to(x.dtype), x.dim())
        return self.sde.pf_drift(x, t, score) if velocity else score

    def _score(self, out: Tensor, x: Tensor, t: Tensor) -> Tensor:
        """The score from an eps, v or x0 network's output."""
        log_alpha, sigma = self.sde.log_alpha_sigma(shared_time(t))  # (1,) where every row has the same time
        sigma = append_dims(sigma.to(x.dtype), x.dim())
        if self.parameterization == "eps":  # alpha is not needed
            return -out / sigma
        alpha = append_dims(log_alpha.exp().to(x.dtype), x.dim())
        if self.parameterization == "v":
            return -(sigma * x + alpha * out) / (sigma * (alpha**2 + sigma**2))
        return (alpha * out - x) / sigma**2


def evaluate_score(score: Score, x: Tensor, t: Tensor) -> Tensor:
    """Call `score(x, t)` and refuse an output of the wrong shape, dtype or device, or a non-finite one.

    `t` must already be a `(B,)` tensor of `x`'s dtype and device.

    Args:
        score: A `Score`.
        x: The states `(B, *event)`.
        t: The times `(B,)`.

    Returns:
        The score, shaped like `x`.

    Raises:
        TypeError: If the score returns something other than a tensor of `x`'s dtype.
        ValueError: If the output's shape or device differs from `x`'s.

    Finiteness is not checked here (it would cost a host sync per call on a GPU): the solvers check
    their state once per step (`errors.FiniteGuard`), which a non-finite score reaches at once.
    """
    return check_output(score(x, t), x, "the score")


class ScoreCalls:
    """The one NFE ledger: every score evaluation a solve makes goes through one, whatever the engine.

    `sample`'s hand-written samplers (through `samplers.base.ScoreLedger`), torchsde's drift
    (`adapters.ReverseSDE`), torchdiffeq's drift (`adapters.ProbabilityFlowODE`, and so
    `LikelihoodODE`) and the per-sample solvers all count here, so `nfe` and `rows` mean the same
    everywhere.

    Args:
        score: A `Score`.
        callback: Called with the forward time of each evaluation (a 0-d tensor), or None.

    Attributes:
        nfe: Calls of the score (one call on a batch is one, whatever its size).
        rows: Rows evaluated over all calls (`nfe` times the batch for a batched solver; fewer for
            a per-sample solver, which evaluates only the rows still stepping).
    """

    def __init__(self, score: Score, callback: Callable[[Tensor], None] | None = None) -> None:
        self.score, self.callback = score, callback
        self.nfe = 0
        self.rows = 0

    def evaluate(self, x: Tensor, t: Tensor, at: Tensor, score: Score | None = None) -> Tensor:
        """One counted call: `score(x, t)` checked by `evaluate_score`, then reported at time `at`.

        Args:
            x: The states `(B, *event)`.
            t: The times `(B,)`, of `x`'s dtype and device.
            at: The 0-d time reported to the callback.
            score: Another callable standing in for this ledger's score on this call (e.g. one that
                also returns its divergence), or None.
        """
        out = evaluate_score(self.score if score is None else score, x, t)
        self.nfe += 1
        self.rows += x.shape[0]
        if self.callback is not None:
            self.callback(at)
        return out

    def reset(self) -> None:
        """Zero both counts."""
        self.nfe = self.rows = 0


class CountedCalls:
    """`nfe` and `callback` of an object whose score evaluations go through `self.calls` (a
    `ScoreCalls`): the torchsde and torchdiffeq drifts, read by the runners and the progress bars."""

    calls: ScoreCalls

    @property
    def nfe(self) -> int:
        """Score evaluations so far (`scores.ScoreCalls`, the one NFE ledger)."""
        return self.calls.nfe

    @property
    def callback(self) -> Callable[[Tensor], None] | None:
        """Called with the forward time (0-d tensor) after each score evaluation, or None."""
        return self.calls.callback

    @callback.setter
    def callback(self, fn: Callable[[Tensor], None] | None) -> None:
        self.calls.callback = fn


def shared_time(t: Tensor) -> Tensor:
    """`t[:1]` where a `(B,)` time is one time expanded over the batch (stride 0, as every solver on a
    grid passes it), else `t`: per-row coefficients are then computed once and broadcast."""
    return t[:1] if t.dim() == 1 and t.shape[0] > 1 and t.stride(0) == 0 else t


def check_output(out: object, x: Tensor, what: str) -> Tensor:
    """A user callable's output as a wrapper receives it, before any arithmetic could broadcast it: a
    tensor of `x`'s shape (batch and event), dtype and device, or an error naming the callable.

    Every wrapper that calls a user's network, denoiser or score (`ScoreModel`, `interop`'s adapters,
    `Conditional`, `Guided`) checks it here, so that a network returning one row, or a scalar, is
    refused instead of broadcast over the batch.

    Args:
        out: What the callable returned.
        x: The input it was called on, `(B, *event)`.
        what: The callable, for the message (e.g. "the network net(x, t)").
    """
    if not isinstance(out, Tensor):
        raise TypeError(f"{what} must return a torch.Tensor, got {type(out).__name__}")
    if out.shape != x.shape:
        raise ValueError(f"{what} returned shape {tuple(out.shape)}; expected x's shape {tuple(x.shape)}")
    if out.dtype != x.dtype:
        raise TypeError(f"{what} returned dtype {out.dtype}; expected x's dtype {x.dtype} (cast inside it)")
    if out.device != x.device:
        raise ValueError(f"{what} returned a tensor on {out.device}; expected x's device {x.device}")
    return out


def check_problem(score: object, sde: object, eps: float, *, velocity_solver: bool = False) -> None:
    """The checks every solve starts with: a diffsolve SDE, a callable score, and eps in (0, T).

    Args:
        score: What should be a `Score`.
        sde: What should be a diffsolve `SDE`.
        eps: What should be the truncation time, in (0, T).
        velocity_solver: The solve steps on a velocity model's output (`Solver.velocity`), so it may
            start where alpha_T = 0 (`SDE.zero_terminal_snr`); every other solve is refused there.

    Raises:
        TypeError: If `sde` is not a diffsolve SDE or `score` is not callable.
        ValueError: If `eps` is not in (0, T), or the score carries an SDE (a `ScoreModel`, an
            analytic score) other than `sde`.
    """
    if not isinstance(sde, SDE):
        raise TypeError(
            f"sde must be a diffsolve SDE (e.g. VPSDE, VESDE, CosineVPSDE, EDMSDE), got {describe(sde)}"
        )
    if not callable(score):
        raise TypeError(f"score must be callable as score(x, t), got {describe(score)}")
    check_positive(eps, "eps")
    if not eps < sde.T:
        raise ValueError(f"eps must lie in (0, T) = (0, {sde.T}), got {eps!r}")
    # a velocity defined where alpha = 0: a velocity network's own output, or an exact one (no parameterisation)
    kind = getattr(score, "parameterization", None)
    own_velocity = callable(getattr(score, "velocity", None)) and kind in (None, "velocity")
    if sde.zero_terminal_snr and not (velocity_solver and own_velocity):
        raise ValueError(
            f"{sde!r} ends at zero signal (alpha_T = 0): the score there is the prior's and does not determine "
            "the velocity, so only a velocity model (ScoreModel(net, path, 'velocity')) sampled by a solver "
            "that reads it (Solver.velocity) starts there; for anything "
            "else end the path before (RectifiedFlow() has T = 0.999)"
        )
    own = getattr(score, "sde", None)
    if isinstance(own, SDE) and own != sde:
        raise ValueError(
            f"the score was built for {own!r} but is used with sde={sde!r}: its t means another noise "
            "schedule (pass the SDE it was trained or derived for)"
        )
