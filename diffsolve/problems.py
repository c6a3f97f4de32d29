"""The named problems the CLI, the notebooks and the benchmarks share.

A `Problem` is a score, its SDE, and the reference it is judged against: a `GaussianMixture` (the
analytic problems, with their exact score) or held-out data (a checkpoint from `diffsolve train`,
judged on data it was not trained on).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from . import checkpoint, datasets, memory
from ._validation import check_positive
from .analytic import GaussianMixture
from .inverse import Observation
from .scores import Score
from .sde import SDE, VESDE, VPSDE, RectifiedFlow, SubVPSDE

__all__ = ["Problem", "SDES", "make_sde", "dataset_names", "training_data", "held_out", "INVERSE_PROBLEMS",
           "inverse_problem"]  # fmt: skip

SDES: dict[str, type[SDE]] = {"vp": VPSDE, "subvp": SubVPSDE, "ve": VESDE, "rectified": RectifiedFlow}
r"""The forward SDEs by their short names (with their default parameters); `"rectified"` is flow
matching's path $x_t = (1 - t)x_0 + t\epsilon$."""

HELD_OUT_SEED = 987_654
"""Seed of the held-out draws a checkpoint is judged on (never a training seed)."""


def make_sde(name: str) -> SDE:
    """The SDE called `name` (`"vp"`, `"subvp"`, `"ve"` or `"rectified"`) with its default parameters.

    Args:
        name: A key of `SDES`.

    Raises:
        ValueError: On an unknown name.
    """
    if name not in SDES:
        raise ValueError(f"sde must be one of {', '.join(SDES)}; got {name!r}")
    return SDES[name]()


INVERSE_PROBLEMS: dict[str, str] = {
    "ring2d": "ring2d, its first coordinate observed",
    "mixture16": "mixture16 (5 Gaussians in 16-D), its first 8 coordinates observed",
    "mixture3": "a 3-D mixture of 8 Gaussians observed through a random 2x3 matrix",
}
"""The inverse problems of the bias study (docs/benchmarks.md, "Inverse problems"), by name."""


def inverse_problem(
    name: str, noise_std: float = 0.2, *, seed: int = 0
) -> tuple[GaussianMixture, Observation]:
    """A prior mixture and an observation of one of its exact draws: `(prior, observation)`.

    Args:
        name: A key of `INVERSE_PROBLEMS`.
        noise_std: The observation noise $s$ (> 0, so that the posterior has a density).
        seed: Seed of the observed draw and its noise.

    Raises:
        ValueError: On an unknown name or a non-positive `noise_std`.
    """
    if name not in INVERSE_PROBLEMS:
        raise ValueError(f"inverse problem must be one of {', '.join(INVERSE_PROBLEMS)}; got {name!r}")
    check_positive(noise_std, "noise_std")
    if name == "mixture3":
        prior = GaussianMixture.random(3, 8, seed=0)
        A = torch.randn(2, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    else:
        prior = datasets.mixture(name)
        A = torch.eye(prior.dim, dtype=torch.float64)[: max(1, prior.dim // 2)]
    truth = prior.sample(1, seed=seed)[0]
    return prior, Observation.of(A, truth, noise_std, seed=seed + 1)


def dataset_names() -> list[str]:
    """Every dataset `training_data` knows: the 2-D toy sets, the analytic mixtures and `"digits"`."""
    return [*datasets.TOY_DATASETS, *datasets.MIXTURES, "digits"]


def training_data(
    name: str, n: int, seed: int, *, with_labels: bool = False
) -> tuple[Tensor, dict[str, Any]] | tuple[Tensor, Tensor, dict[str, Any]]:
    """The training set called `name` and the metadata a checkpoint records about it.

    The digits come as their grey levels on [-1, 1]: train on them with
    `train(dequantize=metadata["dequantize"])`, which dequantises every batch afresh.

    Args:
        name: One of `dataset_names()`.
        n: Points drawn for toy sets and mixtures (the digits are the fixed training split).
        seed: Seed of the draw.
        with_labels: Also return class labels: the digit (10 classes) or the mixture component
            each point was drawn from; the toy sets have none.

    Returns:
        `(data, metadata)`, or `(data, labels, metadata)` with `with_labels`: float32 data
        `(N, *event)`, int64 labels `(N,)`, and `{"dataset": name, ...}` (with `"num_classes"` when
        labelled, `"dequantize"` for the digits).

    Raises:
        ValueError: On an unknown name, or labels asked of a toy set.
    """
    meta: dict[str, Any] = {"dataset": name}
    labels = None
    if name == "digits":
        data, labels = datasets.digits("train", scale="[-1, 1]", return_labels=True)
        meta["data"] = {"scale": "[-1, 1]", "bins": datasets.DIGITS_LEVELS, "dequantized": True}
        meta["dequantize"] = [datasets.DIGITS_LEVELS, -1.0, 1.0]
        meta["num_classes"] = 10
    elif name in datasets.MIXTURES:
        mixture = datasets.mixture(name)
        _check_draw(name, n, mixture.means.shape[1])
        data, labels = mixture.sample(n, seed=seed, dtype=torch.float32, return_components=True)
        meta["num_classes"] = mixture.n_components
    elif name in datasets.TOY_DATASETS:
        if with_labels:
            raise ValueError(
                f"dataset {name!r} has no labels; class-conditional training needs digits or a mixture "
                f"({', '.join(datasets.MIXTURES)})"
            )
        _check_draw(name, n, 2)
        data = datasets.toy2d(name, n, seed=seed)
    else:
        raise ValueError(f"dataset must be one of {', '.join(dataset_names())}; got {name!r}")
    if not with_labels:
        meta.pop("num_classes", None)
        return data, meta
    assert labels is not None
    return data, labels.long(), meta


def _check_draw(name: str, n: int, dim: int) -> None:
    check_positive(n, "n", integer=True)
    per_point = 4 * dim * 8  # float64 draws, their float32 copy, the component indices
    memory.check_memory(
        f"training_data({name!r}, n={n})",
        n * per_point,
        per_item=per_point,
        detail=f"{n:,} points of {dim} values",
    )


def held_out(name: str | None) -> GaussianMixture | Tensor:
    """What a model trained on dataset `name` is judged against: the mixture itself, fresh toy-set
    draws, or the digits' test split (dequantised), none of them seen in training.

    Args:
        name: The dataset a checkpoint records (`metadata["dataset"]`).

    Raises:
        ValueError: If `name` is not a known dataset.
    """
    if name in datasets.MIXTURES:
        return datasets.mixture(name)
    if name in datasets.TOY_DATASETS:
        return datasets.toy2d(name, 20_000, seed=HELD_OUT_SEED)
    if name == "digits":
        x = datasets.digits("test", scale="[-1, 1]")
        gen = torch.Generator().manual_seed(HELD_OUT_SEED)
        return datasets.dequantize(x, bins=datasets.DIGITS_LEVELS, low=-1.0, high=1.0, generator=gen)
    raise ValueError(f"the checkpoint does not say which data it was trained on ({name!r})")


@dataclass
class Problem:
    """A score, its SDE, and the reference it is judged against.

    Attributes:
        name: A description for tables.
        score: The score (exact, or a loaded `ScoreModel`).
        sde: Its forward SDE.
        reference: A `GaussianMixture` (analytic) or held-out data `(N, *event)`.
        event_shape: Shape of one sample.
        device: Where the solves run.
    """

    name: str
    score: Score
    sde: SDE
    reference: GaussianMixture | Tensor
    event_shape: tuple[int, ...]
    device: torch.device

    @property
    def analytic(self) -> bool:
        """Whether the reference is a mixture with closed-form marginals."""
        return isinstance(self.reference, GaussianMixture)

    @classmethod
    def mixture(cls, name: str = "ring2d", sde: str = "vp", device: str | torch.device = "cpu") -> Problem:
        """An analytic problem: a named mixture from `datasets.MIXTURES` with its exact score.

        Args:
            name: A key of `datasets.MIXTURES` (`"ring2d"`, `"mixture16"`, ...).
            sde: A key of `SDES` (`"vp"`, `"subvp"`, `"ve"`, `"rectified"`).
            device: Where the solves run.

        Raises:
            ValueError: On an unknown mixture or SDE.
        """
        if name not in datasets.MIXTURES:
            raise ValueError(f"problem must be one of {', '.join(datasets.MIXTURES)}; got {name!r}")
        mixture, forward = datasets.mixture(name), make_sde(sde)
        return cls(f"{name}, exact score", mixture.score_fn(forward), forward, mixture, (mixture.dim,),
                   torch.device(device))  # fmt: skip

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> Problem:
        """A trained model (`diffsolve train`) judged on the held-out data of its dataset.

        Args:
            path: The checkpoint directory.
            device: Where the model is loaded and the solves run.

        Raises:
            CheckpointError: If the checkpoint cannot be read.
            ValueError: If it does not record a known dataset.
        """
        device = torch.device(device)
        model = checkpoint.load(path, device=device)
        dataset = model.checkpoint_config.get("metadata", {}).get("dataset")
        reference = held_out(dataset)
        shape = (reference.dim,) if isinstance(reference, GaussianMixture) else tuple(reference.shape[1:])
        return cls(f"checkpoint {path} ({dataset})", model, model.sde, reference, shape, device)
