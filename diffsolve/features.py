"""Feature extractors that judge image samples as images: a small digits classifier shipped with the package.

`digits_classifier()` is a three-layer CNN trained on the training split of scikit-learn's 8x8
digits (`datasets.digits("train", scale="[-1, 1]")`, each batch freshly dequantised), by
`scripts/train_digits_classifier.py`; its weights ship in `diffsolve/data/digits_classifier.safetensors`
(safetensors: nothing is unpickled). Its 64 penultimate features are what
`metrics.digits_frechet_distance` compares, the digits' analogue of FID's Inception features.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

__all__ = ["DigitsClassifier", "digits_classifier", "DIGITS_CLASSIFIER_FILE"]

DIGITS_CLASSIFIER_FILE = Path(__file__).parent / "data" / "digits_classifier.safetensors"
"""The shipped weights (their header's metadata records the test accuracy and how they were trained)."""


class DigitsClassifier(nn.Module):
    """A small CNN for 8x8 digit images `(B, 1, 8, 8)` in [-1, 1]: 64 features, then 10 logits.

    Three 3x3 convolutions (16, 32, 64 channels; the last two with stride 2: 8 -> 4 -> 2), SiLU,
    global average pooling to 64 features, and a linear layer to the 10 classes.

    Args:
        width: Channels of the first convolution (doubled twice).
    """

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.SiLU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.SiLU(),
        )  # fmt: skip
        self.head = nn.Linear(4 * w, 10)

    def features(self, x: Tensor) -> Tensor:
        """The 64 penultimate features `(B, 4 * width)` of images `(B, 1, 8, 8)`.

        Args:
            x: Images in [-1, 1].
        """
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, 8, 8):
            raise ValueError(f"the digits classifier takes images (B, 1, 8, 8), got shape {tuple(x.shape)}")
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


@functools.lru_cache(maxsize=1)
def _load() -> tuple[dict[str, Tensor], dict[str, str]]:
    """The shipped weights and the file's metadata, read once (safetensors: nothing is unpickled)."""
    if not DIGITS_CLASSIFIER_FILE.is_file():  # pragma: no cover - a broken install
        raise FileNotFoundError(
            f"the digits classifier's weights are missing: {DIGITS_CLASSIFIER_FILE} "
            "(run scripts/train_digits_classifier.py to rebuild them)"
        )
    from safetensors import safe_open

    with safe_open(str(DIGITS_CLASSIFIER_FILE), "pt") as f:
        meta = f.metadata() or {}
    return load_file(str(DIGITS_CLASSIFIER_FILE)), meta


def digits_classifier(
    device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> DigitsClassifier:
    """The shipped digits classifier, in eval mode with frozen weights (a fresh copy on `device`).

    Args:
        device: Where to put it.
        dtype: Its floating dtype.

    Returns:
        A `DigitsClassifier`; `.metadata` holds the training record from the weights file.
    """
    state, meta = _load()
    net = DigitsClassifier(int(json.loads(meta.get("config", "{}")).get("width", 16)))
    net.load_state_dict(state)
    net.metadata = dict(meta)
    return net.to(device=device, dtype=dtype).eval().requires_grad_(False)
