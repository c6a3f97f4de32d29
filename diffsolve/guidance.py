r"""Conditional scores and classifier-free guidance, with an exact oracle on labelled mixtures.

A conditional score is called `score(x, t, y)`; `Conditional(score, y)` fixes the labels and is an
ordinary `Score` for every sampler. Classifier-free guidance (Ho & Salimans 2022) combines the
conditional and the unconditional score,

$$\tilde s(x, t) = (1 + w)\, s(x, t \mid y) - w\, s(x, t),$$

the score of $p_t(x \mid y)^{1 + w} / p_t(x)^w$ up to normalisation: `guided(conditional,
unconditional, w)`. Each call of a guided score evaluates both, so one NFE of a guided solve is two
network evaluations (its `evaluations_per_call` says so).

`LabeledMixture` is the oracle: a `GaussianMixture` whose components carry class labels, so
$p_t(x \mid y)$ is the mixture of class y's components and every conditional and guided score is
known in closed form (tests/test_guidance.py checks `guided` against autograd of the log-densities).

References:
    Ho & Salimans, "Classifier-Free Diffusion Guidance", NeurIPS 2021 Workshop (arXiv:2207.12598).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import torch
from torch import Tensor

from ._validation import describe
from .analytic import GaussianMixture
from .scores import check_output
from .sde import SDE

__all__ = ["Conditional", "guided", "Guided", "LabeledMixture"]


def _labels(y: object, batch: int, device: torch.device) -> Tensor:
    """`y` as a `(batch,)` int64 tensor: one class for every row, or one per row."""
    if isinstance(y, numbers.Integral) and not isinstance(y, bool):
        return torch.full((batch,), int(y), dtype=torch.int64, device=device)
    if isinstance(y, Tensor) and y.dim() == 1 and not y.is_floating_point() and y.dtype != torch.bool:
        if y.shape[0] != batch:
            raise ValueError(
                f"y holds {y.shape[0]} labels but the score was called on {batch} rows: per-row labels "
                "need the whole batch in one call (no batch_size= chunks, no per-sample solver); "
                "pass one class as an int instead"
            )
        return y.to(device=device, dtype=torch.int64)
    raise TypeError(f"y must be an int class or a 1-D integer tensor of labels, got {describe(y)}")


class Conditional:
    """A conditional score with its labels fixed: `Conditional(score, y)(x, t) = score(x, t, y)`.

    Args:
        score: Called as `score(x, t, y)` with `y` a `(B,)` int64 tensor (or None for unconditional,
            if the model was trained with label dropout and takes None as the null label).
        y: One class (int) for every sample, a `(B,)` integer tensor of per-sample labels, or None.
    """

    def __init__(
        self, score: Callable[[Tensor, Tensor, Tensor | None], Tensor], y: int | Tensor | None
    ) -> None:
        if not callable(score):
            raise TypeError(f"score must be callable as score(x, t, y), got {describe(score)}")
        if y is not None:  # the type checks now; the length against each call's batch
            _labels(y, len(y) if isinstance(y, Tensor) and y.dim() == 1 else 1, torch.device("cpu"))
        self.score, self.y = score, y
        self.event_shape = getattr(score, "event_shape", None)
        self.sde = getattr(score, "sde", None)

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        y = None if self.y is None else _labels(self.y, x.shape[0], x.device)
        return check_output(self.score(x, t, y), x, "the conditional score score(x, t, y)")


class Guided:
    """Classifier-free guidance as a `Score`: $(1 + w)\\,s_c(x, t) - w\\,s_u(x, t)$ (see `guided`).

    Args:
        conditional: The conditional score, a `Score` (e.g. `Conditional(model, y)`).
        unconditional: The unconditional score, a `Score`.
        w: The guidance weight, >= 0 (0: the conditional score itself).
    """

    evaluations_per_call = 2

    def __init__(
        self,
        conditional: Callable[[Tensor, Tensor], Tensor],
        unconditional: Callable[[Tensor, Tensor], Tensor],
        w: float,
    ) -> None:
        for name, s in (("conditional", conditional), ("unconditional", unconditional)):
            if not callable(s):
                raise TypeError(f"{name} must be a score callable as score(x, t), got {describe(s)}")
        if (
            isinstance(w, bool)
            or not isinstance(w, numbers.Real)
            or not (float(w) >= 0 and float(w) < float("inf"))
        ):
            raise ValueError(f"w must be a finite number >= 0, got {w!r}")
        self.conditional, self.unconditional, self.w = conditional, unconditional, float(w)
        self.event_shape = getattr(conditional, "event_shape", None) or getattr(
            unconditional, "event_shape", None
        )
        sdes = {
            name: getattr(s, "sde", None)
            for name, s in (("conditional", conditional), ("unconditional", unconditional))
        }
        if None not in sdes.values() and sdes["conditional"] != sdes["unconditional"]:
            raise ValueError(
                f"the conditional score was built for {sdes['conditional']!r} and the unconditional one for "
                f"{sdes['unconditional']!r}: guidance combines scores of one SDE"
            )
        sde = sdes["conditional"] or sdes["unconditional"]
        if sde is not None:
            self.sde = sde

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        if self.w == 0.0:
            return check_output(self.conditional(x, t), x, "the conditional score")
        null = self._one_call()
        if null is not None:  # one network call on [x; x] with [y; no label], as diffusers' pipelines do
            both = self.conditional.score(
                torch.cat([x, x]), torch.cat([t, t]), torch.cat([self._y(x), null(x)])
            )
            check_output(both, torch.cat([x, x]), "the conditional score score(x, t, y)")
            c, u = both[: x.shape[0]], both[x.shape[0] :]
        else:
            c = check_output(self.conditional(x, t), x, "the conditional score")
            u = check_output(self.unconditional(x, t), x, "the unconditional score")
        return (1.0 + self.w) * c - self.w * u

    def _one_call(self) -> Callable[[Tensor], Tensor] | None:
        """The null labels, where both halves are one model's `Conditional`s (labels, and None) and the
        model says which label means "no label" (`null_label`): then one call evaluates both."""
        c, u = self.conditional, self.unconditional
        if not (isinstance(c, Conditional) and isinstance(u, Conditional) and c.score is u.score):
            return None
        label = getattr(c.score, "null_label", None)
        if c.y is None or u.y is not None or label is None:
            return None
        return lambda x: torch.full((x.shape[0],), label, dtype=torch.int64, device=x.device)

    def _y(self, x: Tensor) -> Tensor:
        return _labels(self.conditional.y, x.shape[0], x.device)  # type: ignore[union-attr]

    def __repr__(self) -> str:
        return f"Guided(w={self.w:g})"


def guided(
    conditional: Callable[[Tensor, Tensor], Tensor],
    unconditional: Callable[[Tensor, Tensor], Tensor],
    w: float,
) -> Guided:
    r"""Classifier-free guidance: the score $(1 + w)\,s(x, t \mid y) - w\,s(x, t)$.

    Args:
        conditional: $s(\cdot \mid y)$ as a `Score`, e.g. `Conditional(model, y)` or
            `functools.partial(model, y=labels)`.
        unconditional: $s$ as a `Score`, e.g. `Conditional(model, None)` for a model trained with
            label dropout.
        w: The guidance weight (>= 0); Ho & Salimans' $w$, so $w = 0$ is plain conditional sampling.

    Returns:
        A `Guided` score; each call evaluates both scores.
    """
    return Guided(conditional, unconditional, w)


class LabeledMixture:
    """A `GaussianMixture` whose components carry class labels: the exact class-conditional oracle.

    `score_fn(sde)` is the conditional score `score(x, t, y)` ($y$ = None for the unconditional
    one); `conditional(y)` is class y's own `GaussianMixture` (its components, weights renormalised),
    with exact samples, log-densities and scores.

    Args:
        mixture: The unconditional mixture $p_0$.
        labels: The class of each component, `K` integers in [0, classes).
    """

    def __init__(self, mixture: GaussianMixture, labels: Tensor | list[int]) -> None:
        if not isinstance(mixture, GaussianMixture):
            raise TypeError(f"mixture must be a GaussianMixture, got {describe(mixture)}")
        lab = torch.as_tensor(labels)
        if (
            lab.dim() != 1
            or lab.shape[0] != mixture.n_components
            or lab.is_floating_point()
            or bool((lab < 0).any())
        ):
            raise ValueError(
                f"labels must be {mixture.n_components} non-negative integers, one per component, got {describe(labels)}"
            )
        self.mixture, self.labels = mixture, lab.to(torch.int64)
        self.classes = int(lab.max()) + 1
        for c in range(self.classes):
            if not bool((self.labels == c).any()):
                raise ValueError(f"class {c} has no component (labels must cover 0 .. {self.classes - 1})")

    def conditional(self, y: int) -> GaussianMixture:
        """Class y's mixture $p_0(x \\mid y)$: its components, with their weights renormalised.

        Args:
            y: The class.
        """
        keep = self.labels == int(y)
        w = self.mixture.weights[keep]
        bases = None if self.mixture.bases is None else self.mixture.bases[keep]
        return GaussianMixture(w / w.sum(), self.mixture.means[keep], self.mixture.stds[keep], bases=bases)

    def class_probs(self) -> Tensor:
        """$p(y)$: the total weight of each class's components, `(classes,)`."""
        return torch.zeros(self.classes, dtype=self.mixture.weights.dtype).index_add_(
            0, self.labels, self.mixture.weights
        )

    def score_fn(self, sde: SDE) -> Callable[[Tensor, Tensor, Tensor | None], Tensor]:
        """The exact conditional score `score(x, t, y)` under `sde` ($y$ None: unconditional).

        Args:
            sde: The forward SDE.
        """
        mixture, labels = self.mixture, self.labels

        def score(x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
            if y is None:
                return mixture.score_t(x, t, sde)
            y = _labels(y, x.shape[0], x.device)
            return mixture.score_t(x, t, sde, components=y[:, None] == labels.to(x.device)[None, :])

        score.event_shape = (mixture.dim,)  # type: ignore[attr-defined]
        score.sde = sde  # type: ignore[attr-defined]  # so that a solve under another SDE is refused
        return score
