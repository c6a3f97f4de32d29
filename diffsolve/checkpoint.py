"""Checkpoints: weights in safetensors, everything needed to rebuild the model in JSON. Never pickle.

A checkpoint is a directory holding `model.safetensors`, whose header carries the JSON
configuration (architecture and its arguments, parameterisation, SDE and its parameters, data
scaling, training metadata, diffsolve version, format version), and a copy of that JSON as
`config.json` for people to read. `load` trusts only the safetensors file, so weights and
configuration can never come from two different saves. Each file is written to a temporary file in
the same directory and renamed over the old one: a save killed half-way leaves the previous
checkpoint intact.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from . import sde as sde_module
from .io import atomic_write_bytes
from .nn import ARCHITECTURES
from .scores import ScoreModel

__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "save",
    "load",
    "atomic_write_bytes",
]  # the last: see diffsolve.io

FORMAT_VERSION = 1
"""The checkpoint format this version writes; `load` refuses newer ones with a clear error."""
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
_SDES = {
    name: getattr(sde_module, name)
    for name in ("VPSDE", "SubVPSDE", "VESDE", "CosineVPSDE", "DiscreteVPSDE", "EDMSDE", "RectifiedFlow")
}


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated, corrupted, from a newer format, or does not fit its model."""


def _config(model: ScoreModel, metadata: dict[str, Any] | None) -> dict[str, Any]:
    from . import __version__

    if not isinstance(model, ScoreModel):
        raise TypeError(f"model must be a diffsolve ScoreModel, got {type(model).__name__}")
    net = model.net
    name = type(net).__name__
    if ARCHITECTURES.get(name) is not type(net) or not hasattr(net, "config"):
        raise TypeError(
            f"the network must be one of diffsolve's architectures ({', '.join(ARCHITECTURES)}), got {name}; "
            "save its state_dict with safetensors yourself for other networks"
        )
    return {
        "format_version": FORMAT_VERSION,
        "diffsolve_version": __version__,
        "architecture": {"name": name, "config": net.config},
        "parameterization": model.parameterization,
        "sde": {"name": type(model.sde).__name__, "params": model.sde.params()},
        "metadata": metadata or {},
    }


def save(path: str | os.PathLike, model: ScoreModel, *, metadata: dict[str, Any] | None = None) -> Path:
    """Save `model` to the directory `path` (created if needed); returns the directory.

    Args:
        path: The checkpoint directory.
        model: A `ScoreModel` around one of diffsolve's networks.
        metadata: JSON-serialisable extras (data scaling, training steps, losses, ...).
    """
    if not str(path).strip():
        raise ValueError(f"path must name a checkpoint directory, got {str(path)!r}")
    config = _config(model, metadata)
    text = json.dumps(config, indent=2, sort_keys=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.net.state_dict().items()}
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(directory / WEIGHTS, st_save(tensors, metadata={"diffsolve": text}))
    atomic_write_bytes(directory / CONFIG, (text + "\n").encode())
    return directory


def read_safetensors(file: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The tensors of a safetensors file and the JSON diffsolve keeps in its header; never unpickles."""
    data = file.read_bytes()
    try:
        tensors = st_load(data)
        header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
        return json.loads(header["__metadata__"]["diffsolve"]), tensors
    except (SafetensorError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{str(file)!r} is truncated or corrupted ({err})") from err


def read_config(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read and check a checkpoint's configuration and tensors (nothing is unpickled)."""
    file = Path(path) / WEIGHTS
    if Path(path).exists() and not Path(path).is_dir():
        raise CheckpointError(
            f"{str(path)!r} is a file; a checkpoint is a directory (written by save or train)"
        )
    if not Path(path).is_dir():
        raise CheckpointError(f"checkpoint directory {str(path)!r} does not exist")
    if not file.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} has no {WEIGHTS}")
    config, tensors = read_safetensors(file)
    version = config.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has format version {version!r}; this diffsolve reads up to "
            f"{FORMAT_VERSION}: upgrade diffsolve"
        )
    return config, tensors


def _check_config(path: str | os.PathLike, config: Any) -> None:
    """Refuse a header that lacks what `load` reads, naming the missing entry."""
    needed = {
        "architecture": ("name", "config"), "sde": ("name", "params"), "parameterization": (),
    }  # fmt: skip
    if not isinstance(config, dict):
        raise CheckpointError(f"checkpoint {str(path)!r} has a configuration that is not a JSON object")
    for key, inner in needed.items():
        if key not in config:
            raise CheckpointError(f"checkpoint {str(path)!r}: its configuration has no {key!r} entry")
        if inner and not (isinstance(config[key], dict) and all(k in config[key] for k in inner)):
            raise CheckpointError(
                f"checkpoint {str(path)!r}: its {key!r} entry must hold {', '.join(map(repr, inner))}, "
                f"got {config[key]!r}"
            )


def load(path: str | os.PathLike, *, device: torch.device | str = "cpu") -> ScoreModel:
    """Load a checkpoint saved by `save`: a ready `ScoreModel` (eval mode, parameters frozen) with its
    `sde` attached. To fine-tune it, `model.train().requires_grad_(True)`.

    Only the safetensors weights and the JSON header are read: nothing is unpickled, so a checkpoint
    from an untrusted source cannot run code.

    Args:
        path: The checkpoint directory written by `save` (or by `train`, which saves the EMA weights).
        device: Where to put the weights.

    Returns:
        The `ScoreModel`, its network rebuilt from the recorded architecture.

    Raises:
        CheckpointError: If the directory or file is missing, truncated or corrupted, from a newer
            format version, or its weights do not fit the recorded architecture.
    """
    config, tensors = read_config(path)
    _check_config(path, config)
    arch = config["architecture"]
    if arch["name"] not in ARCHITECTURES:
        raise CheckpointError(f"unknown architecture {arch['name']!r}; known: {', '.join(ARCHITECTURES)}")
    if config["sde"]["name"] not in _SDES:
        raise CheckpointError(f"unknown SDE {config['sde']['name']!r}; known: {', '.join(_SDES)}")
    try:
        net = ARCHITECTURES[arch["name"]](**arch["config"])
        sde = _SDES[config["sde"]["name"]](**config["sde"]["params"])
        model = ScoreModel(net, sde, config["parameterization"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(
            f"checkpoint {str(path)!r} records a model diffsolve cannot build: {err}"
        ) from err
    expected = net.state_dict()
    wrong = [
        f"{k}: {v.dtype}, expected {expected[k].dtype}"
        for k, v in tensors.items()
        if k in expected and v.dtype != expected[k].dtype
    ]
    if wrong:  # load_state_dict would cast them silently
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds tensors of the wrong dtype: {'; '.join(wrong)}"
        )
    try:
        net.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not fit {arch['name']}({arch['config']}): {err}"
        ) from err
    model = model.to(device)
    model.eval()
    # Frozen: an evaluation (sampling, a likelihood) must not build an autograd graph through the
    # weights by accident; `log_likelihood` keeps one whenever parameters require grad.
    model.requires_grad_(False)
    model.checkpoint_config = config
    return model
