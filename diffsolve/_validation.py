"""Input checks shared by the public entry points.

Every check raises `ValueError`/`TypeError` naming the argument, what was given and what was
expected, so a user's mistake is reported at the boundary rather than deep inside a solver.
"""

from __future__ import annotations

import numbers

import torch
from torch import Tensor


def describe(value: object) -> str:
    """A short description of `value` for error messages."""
    if isinstance(value, Tensor):
        return f"Tensor(shape={tuple(value.shape)}, dtype={value.dtype}, device={value.device})"
    return repr(value)


def check_tensor(value: object, name: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype, got {value.dtype}")
    return value


def check_batched(x: object, name: str, *, min_dim: int = 2) -> Tensor:
    """`x` must be a floating tensor shaped `(batch, *event)` with at least `min_dim` dims."""
    x = check_tensor(x, name)
    if x.dim() < min_dim:
        raise ValueError(
            f"{name} must be shaped (batch, *event) with at least {min_dim} dimensions, got shape {tuple(x.shape)}"
        )
    if x.numel() == 0:
        raise ValueError(
            f"{name} must hold at least one point of at least one value, got shape {tuple(x.shape)}"
        )
    return x


SEED_LIMIT = 2**63
"""Seeds are integers in [0, 2^63): what `torch.Generator.manual_seed` takes without wrapping."""


def check_seed(value: object, name: str = "seed", *, allow_none: bool = False) -> int | None:
    """A seed as a Python int: a non-negative integer below 2^63 (numpy integers too); None if allowed.

    Args:
        value: The seed given.
        name: The argument's name, for the message.
        allow_none: Accept None (then returned as None).
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value < SEED_LIMIT:
        expected = "a non-negative integer below 2^63" + (" or None" if allow_none else "")
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return int(value)


def seed_or_generator(seed: object, generator: object, *, allow_none: bool = True) -> int | None:
    """One seed from `seed=` or a torch-style `generator=` (a seed drawn from it, advancing it as any
    torch draw does), so that users of torch and diffusers may pass either; not both.

    Args:
        seed: The `seed=` given.
        generator: The `generator=` given: a CPU `torch.Generator`, or None.
        allow_none: Accept neither (None is returned).
    """
    if generator is None:
        return check_seed(seed, allow_none=allow_none)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {describe(generator)}")
    if seed is not None:
        raise ValueError("give seed= or generator=, not both: each fixes every random draw of the call")
    return int(torch.randint(0, 2**62, (), generator=generator, device=generator.device))


def check_device(device: object, name: str = "device") -> torch.device:
    """A device torch can use here: a clear ValueError for a misspelt one, or CUDA on a build without it.

    Args:
        device: A `torch.device` or a string such as `"cpu"`, `"cuda"`, `"cuda:1"`.
        name: The argument's name, for the message.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{name} must be a torch device such as 'cpu' or 'cuda', got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"{name}={str(device)!r}, but this PyTorch has no usable CUDA device (torch.cuda.is_available() is False)"
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(
            f"{name}={str(device)!r}, but only {torch.cuda.device_count()} CUDA device(s) are visible"
        )
    return dev


def check_bool(value: object, name: str) -> None:
    """Refuse anything but `True`/`False` (a `0`/`1` or a string is a mistake, not a switch).

    Args:
        value: The value given.
        name: The argument's name, for the message.
    """
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")


def check_positive(value: object, name: str, *, integer: bool = False, allow_zero: bool = False) -> None:
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral if integer else numbers.Real):
        raise TypeError(f"{name} must be {kind}, got {value!r}")
    if not (value >= 0 if allow_zero else value > 0) or value != value:  # `value != value` catches NaN
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value!r}")


def as_time(t: float | Tensor, *, like: Tensor | None, T: float, name: str = "t") -> Tensor:
    """Turn a float, 0-d or `(B,)` time into a tensor and check that it lies in [0, T].

    A Python float becomes a tensor of `like`'s dtype and device (the default dtype on the CPU when
    `like` is None); a tensor keeps its own dtype and device. The range is checked on the CPU only
    (on an accelerator it would cost a host sync per call).
    """
    if isinstance(t, Tensor):
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a float or a floating-point tensor, got dtype {t.dtype}")
        if t.dim() > 1:
            raise ValueError(
                f"{name} must be a float, a 0-d tensor or a (batch,) tensor, got shape {tuple(t.shape)}"
            )
    elif isinstance(t, numbers.Real) and not isinstance(t, bool):
        if like is None:
            t = torch.tensor(float(t), dtype=torch.get_default_dtype())
        else:
            t = torch.tensor(float(t), dtype=like.dtype, device=like.device)
    else:
        raise TypeError(f"{name} must be a float or a tensor, got {type(t).__name__}")
    if t.device.type != "cpu":
        # Checking would cost a host sync on every call; a time outside [0, T] gives NaN
        # coefficients there, which the solvers' once-per-step finiteness check reports.
        return t
    # T rounded to float32 may lie an ulp above T (0.999 is 0.99900001, also once cast back to float64)
    if t.numel() == 1:  # one time (or one expanded over the batch): a float comparison, no reductions
        value = float(t.reshape(-1)[0])
        if not 0 <= value <= T * (1 + 1e-6):
            raise ValueError(f"{name} must lie in [0, T] = [0, {T}], got {value!r}")
        return t
    if t.dim() == 1 and t.stride(0) == 0:  # one time expanded over the batch
        as_time(t[:1], like=like, T=T, name=name)
        return t
    outside = (t < 0) | (t > T * (1 + 1e-6)) | torch.isnan(t)
    if bool(outside.any()):
        bad = t[outside].flatten()[0].item() if t.dim() else t.item()
        raise ValueError(f"{name} must lie in [0, T] = [0, {T}], got {bad!r}")
    return t


def append_dims(v: Tensor, ndim: int) -> Tensor:
    """Append trailing singleton dims so a `(B,)` (or 0-d) tensor broadcasts against an `ndim`-d one."""
    if v.dim() > ndim:
        raise ValueError(f"cannot broadcast a tensor of shape {tuple(v.shape)} against {ndim} dimensions")
    return v.reshape(*v.shape, *([1] * (ndim - v.dim()))) if v.dim() else v


def batch_time(t: Tensor, x: Tensor, name: str = "t") -> Tensor:
    """Broadcast a 0-d or `(B,)` time against a batch `x` of shape `(B, *event)`: returns `(B,)`."""
    if t.dim() == 0:
        return t.expand(x.shape[0])
    if t.shape[0] != x.shape[0]:
        raise ValueError(
            f"{name} has shape {tuple(t.shape)}; expected a scalar or ({x.shape[0]},) to match x"
        )
    return t
