r"""Bridges to the models other libraries train.

`from_denoiser` turns a k-diffusion / EDM-style denoiser $D(x; \sigma) \approx E[x_0 \mid x_0 + \sigma n]$
into a diffsolve score on `EDMSDE` (time is the noise level): by Tweedie's formula,

$$\nabla_x \log p_\sigma(x) = \frac{D(x; \sigma) - x}{\sigma^2}.$$

With `sigma_data`, the callable is instead the raw network $F$ of Karras et al.'s preconditioning,
$D(x; \sigma) = c_{skip} x + c_{out} F(c_{in} x, c_{noise})$ with $c_{skip} = \sigma_d^2/(\sigma^2 + \sigma_d^2)$,
$c_{out} = \sigma\sigma_d/\sqrt{\sigma^2 + \sigma_d^2}$, $c_{in} = 1/\sqrt{\sigma^2 + \sigma_d^2}$ and
$c_{noise} = \tfrac14\ln\sigma$ (k-diffusion's `Denoiser` wrapper). Loading score_sde (NCSN++/DDPM++)
checkpoints is not provided: their network code is not a dependency, and a state dict alone cannot
be run without it.

`from_diffusers` turns a diffusers `UNet2DModel` and its `DDPMScheduler` / `DDIMScheduler` into a
`ScoreModel` on `DiscreteVPSDE` (the scheduler's betas): discrete timestep $n$ sits at time
$t_n = (n + 1)/N$, and the network's epsilon, v or sample output becomes the score.
`scheduler_times` gives the scheduler's own timesteps as a time grid, so diffsolve's fixed-grid
samplers can be run on exactly the steps the scheduler takes. diffusers is an optional extra
(`pip install "diffsolve[diffusers]"`).

References:
    Karras, Aittala, Aila & Laine, "Elucidating the Design Space of Diffusion-Based Generative
    Models", NeurIPS 2022 (Table 1, preconditioning).
"""

from __future__ import annotations

import json
import math
import numbers
import os
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ._validation import append_dims, check_positive, describe
from .scores import ScoreModel, check_output, shared_time
from .sde import EDMSDE, DiscreteVPSDE, RectifiedFlow

__all__ = [
    "from_denoiser",
    "DenoiserScore",
    "from_diffusers",
    "DiffusersUNet",
    "DiffusersFlowNet",
    "scheduler_times",
    "match_scheduler",
]

_PREDICTIONS = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}


class DenoiserScore:
    """A denoiser $D(x; \\sigma)$ as a score on `EDMSDE`: $(D(x; \\sigma) - x)/\\sigma^2$ (see `from_denoiser`).

    Args:
        denoiser: `denoiser(x, sigma)` with `sigma` of shape `(B,)`, or the raw network when
            `sigma_data` is given.
        sde: The `EDMSDE` whose time is the noise level.
        sigma_data: The data's standard deviation for EDM's preconditioning, or None.
    """

    def __init__(
        self, denoiser: Callable[[Tensor, Tensor], Tensor], sde: EDMSDE, sigma_data: float | None = None
    ) -> None:
        self.denoiser, self.sde, self.sigma_data = denoiser, sde, sigma_data

    def denoise(self, x: Tensor, sigma: Tensor) -> Tensor:
        """$D(x; \\sigma)$, through EDM's preconditioning when `sigma_data` is set.

        Args:
            x: Noisy points `(B, *event)`.
            sigma: Noise levels `(B,)`.
        """
        if self.sigma_data is None:
            return check_output(self.denoiser(x, sigma), x, "the denoiser D(x, sigma)")
        sd2, s2 = self.sigma_data**2, sigma**2
        c_skip = sd2 / (s2 + sd2)
        c_out = sigma * self.sigma_data / (s2 + sd2).sqrt()
        c_in = 1 / (s2 + sd2).sqrt()
        out = self.denoiser(append_dims(c_in, x.dim()) * x, 0.25 * sigma.log())
        check_output(out, x, "the network net(c_in x, c_noise)")
        return append_dims(c_skip, x.dim()) * x + append_dims(c_out, x.dim()) * out

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        return (self.denoise(x, t) - x) / append_dims(t.square(), x.dim())


def from_denoiser(
    denoiser: Callable[[Tensor, Tensor], Tensor], *, sigma_data: float | None = None, sigma_max: float = 80.0
) -> DenoiserScore:
    """A k-diffusion / EDM-style denoiser as a diffsolve score, with the `EDMSDE` it lives on.

    Sample with `ds.sample(score, score.sde, n, event_shape=..., eps=0.002)` (EDM's sigma_min).

    Args:
        denoiser: `denoiser(x, sigma) -> E[x0 | x]` with `sigma` of shape `(B,)` (e.g. a k-diffusion
            `Denoiser` or `KarrasVE` model), or, with `sigma_data`, the raw network of EDM's
            preconditioning called as `net(c_in * x, c_noise)`.
        sigma_data: The data's standard deviation (0.5 in EDM) when `denoiser` is the raw network.
        sigma_max: The largest noise level, the SDE's T.

    Returns:
        A `DenoiserScore` (its `sde` is the `EDMSDE`).
    """
    if not callable(denoiser):
        raise TypeError(f"denoiser must be callable as denoiser(x, sigma), got {describe(denoiser)}")
    if sigma_data is not None and (
        isinstance(sigma_data, bool)
        or not isinstance(sigma_data, numbers.Real)
        or not (math.isfinite(sigma_data) and sigma_data > 0)
    ):
        raise ValueError(f"sigma_data must be a finite number > 0, got {sigma_data!r}")
    return DenoiserScore(denoiser, EDMSDE(sigma_max), None if sigma_data is None else float(sigma_data))


def _import_diffusers() -> Any:
    try:
        import diffusers
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError('from_diffusers needs diffusers: pip install "diffsolve[diffusers]"') from err
    return diffusers


class DiffusersUNet(nn.Module):
    """A diffusers `UNet2DModel` called as `net(x, t, y=None)` in diffsolve's time (see `from_diffusers`).

    Time $t$ becomes the discrete timestep $n = Nt - 1$ of the schedule (snapped to the nearest
    integer when within 1e-3 of it, the resolution of a float32 time, so a scheduler's integer
    timesteps reach the network exactly). A time below $1/N$ (timestep 0) is refused, naming `eps`:
    the network never saw a negative timestep. A network with twice the input channels (a learned
    variance, as in improved DDPM) gives its first half, the mean prediction.

    Args:
        unet: The diffusers `UNet2DModel` (or any module called as `unet(x, timesteps,
            class_labels=...)` returning an object with `.sample`, or a tensor).
        sde: The `DiscreteVPSDE` of the network's schedule.
        timesteps: `{time: timestep}`: the timestep the network is given at these times instead (a
            scheduler's own, such as the rounded timestep of a Karras sigma; `match_scheduler(...,
            exact=True)`), keyed by the time's value in the solve's dtype.
    """

    def __init__(
        self, unet: nn.Module, sde: DiscreteVPSDE, timesteps: dict[float, float] | None = None
    ) -> None:
        super().__init__()
        self.unet, self.sde, self.timesteps = unet, sde, timesteps
        self._timesteps_made: dict[tuple[float, torch.dtype, torch.device], Tensor] = {}

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        kwargs = {} if y is None else {"class_labels": y}
        one = shared_time(t)  # one timestep where all rows share a time
        if self.timesteps is not None and one.numel() == 1:  # a scheduler's own timestep for this time
            given = self.timesteps.get(float(one.reshape(-1)[0]))  # (a host sync on an accelerator)
            if given is not None:
                return self._call(x, self._constant(given, x).expand(x.shape[0]), kwargs)
        if one.numel() == 1 and one.device.type == "cpu":
            # the same float64 arithmetic as below in Python floats (every grid solver's call on the CPU)
            time = float(one.reshape(-1)[0])
            if 0 <= time <= self.sde.T and time * self.sde.N - 1 >= -1e-3:
                value = time * self.sde.N - 1
                near = round(value)
                value = float(near) if abs(value - near) < 1e-3 else value
                return self._call(x, self._constant(value, x).expand(x.shape[0]), kwargs)
        n = self.sde.timestep(one.double())
        if bool((n < -1e-3).any()):  # one sync per call, small beside a U-Net
            N = self.sde.N
            raise ValueError(
                f"the diffusers UNet was trained on timesteps 0..{N - 1} (t >= 1/N = {1 / N:g}); the solve asked it "
                f"for timestep {float(n.min()):.3g} (t = {float(t.min()):.3g}): pass eps >= {1 / N:g} "
                f"(log_likelihood's default eps is 1e-5), or a grid from scheduler_times, which ends where the "
                f"scheduler does"
            )
        near = n.round()
        n = torch.where((n - near).abs() < 1e-3, near, n).to(x.dtype).expand(x.shape[0])
        return self._call(x, n, kwargs)

    def _constant(self, value: float, x: Tensor) -> Tensor:
        """The timestep `value` as a `(1,)` tensor of `x`'s dtype and device, kept: a solve gives the network
        each grid time's timestep once per batch, and the network only reads it."""
        key = (value, x.dtype, x.device)
        n = self._timesteps_made.get(key)
        if n is None:
            if len(self._timesteps_made) >= 4096:
                self._timesteps_made.clear()
            n = self._timesteps_made[key] = torch.full((1,), value, dtype=x.dtype, device=x.device)
        return n

    def _call(self, x: Tensor, n: Tensor, kwargs: dict[str, Any]) -> Tensor:
        out = self.unet(x, n, **kwargs)
        out = getattr(out, "sample", out)
        if isinstance(out, Tensor) and out.dim() == x.dim() and out.shape[1] == 2 * x.shape[1]:
            out = out[:, : x.shape[1]]  # learned variance: the first half is the prediction
        return check_output(out, x, "the diffusers UNet")


FLOW_SCHEDULERS = ("FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler")
"""diffusers' flow-matching schedulers: their model predicts the velocity on the straight path."""


class DiffusersFlowNet(nn.Module):
    r"""A diffusers flow-matching network called as `net(x, t, y=None)` in diffsolve's time: the straight
    path's $t$ is the scheduler's sigma, and the network takes the timestep $t N$ (N =
    `num_train_timesteps`, 1000 for SD3 and FLUX), as the scheduler's loop gives it. It predicts the
    velocity $\epsilon - x_0$ (see `from_diffusers`).

    Args:
        unet: The network (any module called as `unet(x, timesteps, class_labels=...)` returning an
            object with `.sample`, or a tensor).
        num_train_timesteps: The scheduler's N.
    """

    def __init__(self, unet: nn.Module, num_train_timesteps: int) -> None:
        super().__init__()
        self.unet, self.N = unet, int(num_train_timesteps)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        n = (shared_time(t).to(x.dtype) * self.N).expand(x.shape[0])
        out = self.unet(x, n, **({} if y is None else {"class_labels": y}))
        return check_output(getattr(out, "sample", out), x, "the diffusers flow-matching network")


def _load_dir(path: str) -> tuple[nn.Module, Any]:
    """A UNet2DModel and its scheduler from a `save_pretrained` directory or a pipeline directory."""
    diffusers = _import_diffusers()
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"model_or_dir {path!r} is not a directory: pass a local diffusers model or pipeline directory "
            "(models are never downloaded here)"
        )
    unet_dir = (
        os.path.join(path, "unet") if os.path.isfile(os.path.join(path, "unet", "config.json")) else path
    )
    if not os.path.isfile(os.path.join(unet_dir, "config.json")):
        raise FileNotFoundError(
            f"no config.json in {path!r} or {os.path.join(path, 'unet')!r}: not a diffusers model"
        )
    unet = diffusers.UNet2DModel.from_pretrained(unet_dir, local_files_only=True, low_cpu_mem_usage=False)
    for sched_dir in (os.path.join(path, "scheduler"), path, unet_dir):
        config = os.path.join(sched_dir, "scheduler_config.json")
        if os.path.isfile(config):
            with open(config, encoding="utf-8") as f:
                name = json.load(f).get("_class_name", "DDIMScheduler")
            cls = getattr(diffusers, name, None) if name.endswith("Scheduler") else None
            cls = cls if cls is not None else diffusers.DDIMScheduler  # the same betas and prediction type
            return unet, cls.from_pretrained(sched_dir, local_files_only=True)
    return unet, None


def from_diffusers(model_or_dir: nn.Module | str | os.PathLike[str], scheduler: Any = None) -> ScoreModel:
    """A diffusers `UNet2DModel` with its scheduler as a diffsolve `ScoreModel` on `DiscreteVPSDE`.

    The scheduler's `betas` define the SDE (timestep $n$ at $t = (n + 1)/N$, see `DiscreteVPSDE`),
    its `prediction_type` the parameterisation (`"epsilon"` -> eps, `"v_prediction"` -> v,
    `"sample"` -> x0). diffsolve's samplers do not clip or threshold the data prediction; a
    scheduler configured to (`clip_sample`, `thresholding`) draws a warning, as its own loop then
    differs from diffsolve's wherever the prediction leaves the clipping range. A class-conditional
    UNet (`num_class_embeds`) takes labels as `score(x, t, y)`.

    Args:
        model_or_dir: A `UNet2DModel`, or a local directory written by `save_pretrained` (a model
            directory with `scheduler_config.json` beside `config.json`, or a pipeline directory
            with `unet/` and `scheduler/`).
        scheduler: A diffusers scheduler with `betas` and a `prediction_type` (`DDPMScheduler`,
            `DDIMScheduler`, ...); read from the directory when None.

    A flow-matching scheduler (`FlowMatchEulerDiscreteScheduler`, `FlowMatchHeunDiscreteScheduler`)
    makes it a velocity model on the straight path: `ScoreModel(net, RectifiedFlow(T=1), "velocity")`,
    the network given the timestep $tN$ (`DiffusersFlowNet`); sample it with `flow_euler` or
    `flow_heun` (which start at t = 1, the prior itself) or, on `RectifiedFlow()` (T = 0.999), with any
    solver.

    Returns:
        A `ScoreModel` whose `sde` is the `DiscreteVPSDE` (or `RectifiedFlow(T=1)`) and whose
        `scheduler` attribute is the scheduler; sample with `ds.sample(score, score.sde, n,
        event_shape=...)` or, on the scheduler's own steps, `ds.sample(score, score.sde, x_T=x,
        **match_scheduler(scheduler, k))`.

    Raises:
        ImportError: Without diffusers.
        FileNotFoundError: If the directory holds no diffusers model.
        ValueError: If no scheduler is given or found, or its prediction type or betas are unsupported.
    """
    if isinstance(model_or_dir, (str, os.PathLike)):
        unet, found = _load_dir(os.fspath(model_or_dir))
        scheduler = found if scheduler is None else scheduler
    elif isinstance(model_or_dir, nn.Module):
        unet = model_or_dir
    else:
        raise TypeError(
            f"model_or_dir must be a UNet2DModel or a directory path, got {describe(model_or_dir)}"
        )
    if scheduler is None:
        raise ValueError(
            "scheduler is needed: pass the DDPMScheduler/DDIMScheduler the model was trained with "
            "(none was given and none was found beside the model)"
        )
    config = getattr(scheduler, "config", None)
    if config is not None and type(scheduler).__name__ in FLOW_SCHEDULERS:
        path = RectifiedFlow(T=1.0)  # the schedulers start at sigma = 1: the prior N(0, I) itself
        score = ScoreModel(DiffusersFlowNet(unet, config.num_train_timesteps), path, "velocity")
        score.scheduler = scheduler
        return score
    if config is None or not hasattr(scheduler, "betas"):
        raise TypeError(
            f"scheduler must be a diffusers scheduler with betas and a config, got {describe(scheduler)}"
        )
    prediction = config.get("prediction_type", "epsilon")
    if prediction not in _PREDICTIONS:
        raise ValueError(
            f"scheduler.config.prediction_type must be one of {', '.join(_PREDICTIONS)}, got {prediction!r}"
        )
    betas = scheduler.betas.detach().double()
    if not bool((betas < 1).all()):
        raise ValueError(
            "the scheduler's last beta is 1 (rescale_betas_zero_snr=True: zero SNR at the last timestep), "
            "which no VP SDE with a Gaussian prior reaches; use a schedule with betas < 1"
        )
    if config.get("clip_sample", False) or config.get("thresholding", False):
        warnings.warn(
            "the scheduler clips or thresholds its data prediction (clip_sample/thresholding); diffsolve's "
            "samplers do not, so their samples differ from the scheduler's loop where the prediction leaves "
            "that range",
            stacklevel=2,
        )
    sde = DiscreteVPSDE(betas)
    score = ScoreModel(DiffusersUNet(unet, sde), sde, _PREDICTIONS[prediction])  # type: ignore[arg-type]
    score.scheduler = scheduler
    return score


def scheduler_times(scheduler: Any, num_inference_steps: int, *, mu: float | None = None) -> Tensor:
    r"""The time grid of a diffusers scheduler's own steps, for diffsolve's fixed-grid samplers.

    The times of `scheduler.timesteps` after `set_timesteps(num_inference_steps)` (timestep $n$ at
    $t = (n + 1)/N$), then where the last step lands. DDIM, DDPM and PNDM step from each timestep to the
    one a stride below, so their timesteps must be evenly strided, and the last step lands a stride
    below the last timestep or, past the first, at $t = 0$ (the clean data, $\bar\alpha = 1$) when the
    scheduler sets `set_alpha_to_one` and $t_0 = 1/N$ otherwise. The sigma-list schedulers
    (DPMSolverMultistep/Singlestep, UniPC, DEIS, Euler, Heun, LMS, KDPM2, ...) step from each timestep
    to the next, any spacing, and end where their last sigma says: $t = 0$ for 0 (LMS, KDPM2, Euler,
    `final_sigmas_type="zero"`), $t = 1/N$ for timestep 0's sigma_min (DEIS, `"sigma_min"`); KDPM2's
    midpoint timesteps are not grid points (`kdpm2` makes its own midpoints). The flow-matching
    schedulers' times are their sigmas (shifted, dynamically shifted by `mu`, or any other schedule of
    theirs), from 1 to 0. Sample on it with `ds.sample(score,
    sde, x_T=x, solver=..., time_grid=grid, eps=grid[-1])`, starting from the scheduler's initial noise.

    Args:
        scheduler: A diffusers scheduler with `set_timesteps` and a `num_train_timesteps` config.
        num_inference_steps: The number of steps.
        mu: The dynamic shift of a flow-matching scheduler with `use_dynamic_shifting=True` (FLUX:
            `log(samplers.grids.dynamic_shift(image_seq_len))`); None otherwise.

    Returns:
        Decreasing times, float64, `num_inference_steps + 1` of them.

    Raises:
        ValueError: If a strided scheduler's timesteps are not evenly strided, or a sigma-list
            scheduler's sigmas are not its timesteps' (Karras, exponential, beta sigmas or Lu lambdas:
            diffusers gives the model a rounded timestep while the update uses the unrounded sigma).
    """
    check_positive(num_inference_steps, "num_inference_steps", integer=True)
    if type(scheduler).__name__ in FLOW_SCHEDULERS:
        return _flow_times(scheduler, num_inference_steps, mu)
    scheduler.set_timesteps(num_inference_steps)
    config = scheduler.config
    N = int(config.num_train_timesteps)
    steps = scheduler.timesteps.to(torch.float64)
    if type(scheduler).__name__ == "KDPM2DiscreteScheduler":  # t0, then each midpoint's timestep and t1, ...
        steps = steps[::2]
    karras = [k for k in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas")
              if config.get(k)]  # fmt: skip
    strided = "set_alpha_to_one" in config or type(scheduler).__name__ == "DDPMScheduler"
    if karras and not strided:
        raise ValueError(
            f"the scheduler's timesteps {steps.long().tolist()} are not its sigmas' ({karras[0]}=True rounds its "
            "sigmas to uneven timesteps): its steps do not form one grid of diffsolve's (match_scheduler(..., "
            "exact=True, score=...) reproduces DPMSolverMultistepScheduler's rounding)"
        )
    if not strided:
        return torch.cat(
            [(steps + 1) / N, torch.tensor([_end_time(scheduler, -1.0, N)], dtype=torch.float64)]
        )
    stride = N // num_inference_steps
    if len(steps) > 1 and not bool((steps[:-1] - steps[1:] == stride).all()):
        spacing = config.get("timestep_spacing")
        raise ValueError(
            f"the scheduler's timesteps {steps.long().tolist()} are not strided by {stride} "
            f"(timestep_spacing={spacing!r} does not stride them evenly; 'leading' or 'trailing' does): "
            f"{type(scheduler).__name__} steps from each timestep to the one a stride below, so they do not form "
            "one grid of diffsolve's"
        )
    last = float(steps[-1]) - stride
    return torch.cat([(steps + 1) / N, torch.tensor([_end_time(scheduler, last, N)], dtype=torch.float64)])


def _flow_times(scheduler: Any, num_inference_steps: int, mu: float | None) -> Tensor:
    """A flow-matching scheduler's sigmas, which are the straight path's times, from 1 to 0."""
    dynamic = bool(scheduler.config.get("use_dynamic_shifting", False))
    if dynamic != (mu is not None):
        raise ValueError(
            f"mu is {'needed' if dynamic else 'not used'}: the scheduler has use_dynamic_shifting={dynamic} "
            f"(got mu={mu!r})"
        )
    scheduler.set_timesteps(num_inference_steps, **({} if mu is None else {"mu": float(mu)}))
    sigmas = scheduler.sigmas.detach().to("cpu", torch.float64)
    if (
        type(scheduler).__name__ == "FlowMatchHeunDiscreteScheduler"
    ):  # each inner sigma twice: s0, s1, s1, ..., 0
        sigmas = torch.cat([sigmas[:1], sigmas[1:-1:2], sigmas[-1:]])
    if not bool((sigmas[1:] < sigmas[:-1]).all()):
        raise ValueError(f"the scheduler's sigmas {sigmas.tolist()} do not decrease (invert_sigmas=True?)")
    return sigmas


def _end_time(scheduler: Any, last: float, N: int) -> float:
    """Where a scheduler's last step lands: the timestep a stride below the last one, or past the first,
    t = 0 (the clean data, alpha-bar = 1) or t = 1/N (timestep 0, sigma_min), as the scheduler says.

    A sigma-list scheduler says it with its last sigma (0, or timestep 0's): LMS, KDPM2, Heun and Euler
    end at 0, DEIS at sigma_min, DPMSolverMultistep/Singlestep and UniPC as their `final_sigmas_type`."""
    if last >= 0:
        return (last + 1) / N
    config = scheduler.config
    if "set_alpha_to_one" in config:  # DDIM, PNDM
        return 0.0 if config["set_alpha_to_one"] else 1 / N
    if type(scheduler).__name__ == "DDPMScheduler":
        return 0.0  # its last step returns the clean-data prediction
    final = float(scheduler.sigmas[-1])
    if final == 0:
        return 0.0
    abar = float(scheduler.alphas_cumprod[0])
    sigma_min = math.sqrt((1 - abar) / abar)
    if abs(final - sigma_min) > 1e-5 * sigma_min:  # float32 sigmas
        raise ValueError(
            f"{type(scheduler).__name__}'s last sigma {final:.6g} is neither 0 nor timestep 0's sigma {sigma_min:.6g}: "
            "its last step lands off diffsolve's grid"
        )
    return 1 / N


def match_scheduler(
    scheduler: Any,
    num_inference_steps: int,
    *,
    mu: float | None = None,
    exact: bool = False,
    score: ScoreModel | None = None,
    x_T: Tensor | None = None,
) -> dict[str, Any]:
    r"""The keyword arguments of `ds.sample` that reproduce a diffusers scheduler's own loop.

    `ds.sample(score, score.sde, x_T=noise, **match_scheduler(scheduler, k))` takes the scheduler's
    steps (`scheduler_times`) with the diffsolve solver that makes the same update, from the same
    unit noise. Measured against each scheduler's own loop on an exact eps-model (float32, 10 and 25
    steps, `tests/test_diffusers.py`): the deterministic ones agree to float32 round-off (<= 1e-4
    relative; 3.6e-5 at most, KDPM2, whose midpoint timesteps diffusers interpolates otherwise); the
    stochastic ones (`DDPMScheduler`, `EulerAncestralDiscreteScheduler`,
    `DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++")`) draw other noise, so they agree in
    distribution.

    | scheduler | solver |
    | --- | --- |
    | `DDIMScheduler`, `EulerDiscreteScheduler` (Euler in $(x/\alpha, \sigma/\alpha)$ is DDIM) | `ddim` |
    | `DDPMScheduler` (`variance_type="fixed_small"`) | `ddim_eta`, `eta=1` |
    | `EulerAncestralDiscreteScheduler` | `euler_ancestral`, `eta=1` |
    | `DPMSolverMultistepScheduler`: `dpmsolver++`, order 1 / 2 / 3 | `ddim` / `dpm_solver++2m` / `3m` |
    | `DPMSolverMultistepScheduler`: `sde-dpmsolver++` order 2 | `dpm_solver++2m_sde`, `eta=1` |
    | `DPMSolverSinglestepScheduler` (`dpmsolver++`, orders 1-3, midpoint / heun) | `dpm_solver++_grouped` |
    | `UniPCMultistepScheduler` (`bh1` / `bh2`, orders 1-3) | `unipc` with `order`, `variant`, `lower_order_final="always"` |
    | `DEISMultistepScheduler` (orders 1-3) | `deis` with `basis="log_rho"`, `order` |
    | `LMSDiscreteScheduler` | `lms` (order 4, its step's default) |
    | `KDPM2DiscreteScheduler` | `kdpm2` |
    | `FlowMatchEulerDiscreteScheduler` (any `shift`, dynamic shifting with `mu`) | `flow_euler` |
    | `FlowMatchHeunDiscreteScheduler` | `flow_heun` |

    Refused, with the reason: clipping or thresholding of the data prediction (not a step of an
    ODE or SDE solver), Karras / exponential / beta sigmas and Lu lambdas without `exact=True`
    (diffusers gives the model a rounded timestep while the update uses the unrounded sigma, see
    `scheduler_times`), `HeunDiscreteScheduler` without `exact=True`, and what diffsolve has no
    identical update for (noise-prediction DPM-Solver, the SDE variants of the single-step
    schedulers, `KDPM2AncestralDiscreteScheduler`, `PNDMScheduler`, ...).

    `exact=True` reproduces, to float32 round-off, what a scheduler does that a user would not want:
    with Karras, exponential or beta sigmas or Lu lambdas a scheduler steps with each unrounded sigma
    while its network is given a timestep rounded from it (a 1-4% sigma mismatch that does not shrink
    with steps); `EulerDiscreteScheduler`, `HeunDiscreteScheduler`, `LMSDiscreteScheduler` and
    `KDPM2DiscreteScheduler` give their network fractional timesteps interpolated otherwise than their
    sigmas (KDPM2's midpoints too), and start from noise times sigma_max rather than
    sqrt(sigma_max^2 + 1). The grid then holds the times of the scheduler's own sigmas, the returned
    `score` (a copy of the `from_diffusers` model `score=`, sharing its network) gives the network the
    scheduler's own timestep at each of them, and `x_T` is the unit noise scaled as the loop starts:
    `ds.sample(sde=score.sde, **match_scheduler(s, k, exact=True, score=score, x_T=noise))`. Agreement
    <= 9e-7 relative at 10 and 25 steps, 6.4e-6 for `DEISMultistepScheduler` of order 3, whose weights
    diffusers computes in float32 (`tests/test_diffusers.py`). It applies to
    DPMSolverMultistep/Singlestep, DEIS, Euler, Heun, LMS and KDPM2.

    Args:
        scheduler: A diffusers scheduler (its configuration is read, and `set_timesteps` called).
        num_inference_steps: The number of steps.
        mu: A flow-matching scheduler's dynamic shift (`use_dynamic_shifting=True`), else None.
        exact: Reproduce the scheduler's own network timesteps and start (needs `score`).
        score: With `exact=True`, the `from_diffusers` model to sample.
        x_T: With `exact=True`, the unit noise the scheduler's loop starts from (needed where the loop
            scales it otherwise than by the prior's standard deviation).

    Returns:
        `{"solver", "time_grid", "eps", **options}` for `ds.sample` (and `"score"`, `"x_T"` with
        `exact=True`).

    Raises:
        ValueError: For a scheduler or configuration without an identical diffsolve update.
    """
    name, config = type(scheduler).__name__, scheduler.config
    for key in ("clip_sample", "thresholding"):
        if config.get(key):
            raise ValueError(
                f"{name}({key}=True) clamps its data prediction, which no ODE or SDE solver does: pass {key}=False"
            )
    if exact:
        return _exact_match(scheduler, num_inference_steps, score, x_T)
    match = _MATCHES.get(name)
    if match is None:
        known = ", ".join(sorted(_MATCHES))
        raise ValueError(f"no diffsolve solver makes {name}'s update; the schedulers matched: {known}")
    grid = scheduler_times(scheduler, num_inference_steps, mu=mu)
    # the configuration as set_timesteps left it (it may turn lower_order_final on)
    solver, options = match(scheduler.config, name)
    return {"solver": solver, "time_grid": grid, "eps": grid[-1], **options}


def _exact_match(scheduler: Any, steps: int, score: Any, x_T: Tensor | None) -> dict[str, Any]:
    """`match_scheduler(..., exact=True)`: the times of the scheduler's own sigmas, a copy of `score` whose
    network is given the scheduler's own timestep at each of them, and `x_T` scaled as its loop starts."""
    name, config = type(scheduler).__name__, scheduler.config
    if name not in _EXACT:
        raise ValueError(f"exact=True applies to {', '.join(_EXACT)}; not to {name} (see match_scheduler)")
    _refuse_unless(config, name, timestep_type="discrete")
    match, scaled = _EXACT[name]
    net = getattr(score, "net", None)
    if not isinstance(score, ScoreModel) or not isinstance(net, DiffusersUNet):
        raise TypeError(f"exact=True needs score=, the model from from_diffusers; got {describe(score)}")
    check_positive(steps, "num_inference_steps", integer=True)
    scheduler.set_timesteps(steps)
    solver, options = match(scheduler.config, name)
    sigmas = scheduler.sigmas.detach().to("cpu", torch.float64)  # sqrt((1 - abar) / abar), unrounded
    timesteps = scheduler.timesteps.detach().to("cpu", torch.float64)
    mid_timesteps = None
    if name == "HeunDiscreteScheduler":  # each inner sigma and timestep twice: s0, s1, s1, ..., 0
        sigmas = torch.cat([sigmas[:1], sigmas[1:-1:2], sigmas[-1:]])
        timesteps = torch.cat([timesteps[:1], timesteps[1::2]])
    elif name == "KDPM2DiscreteScheduler":  # s0, s1, s1, ..., 0, 0, 0; t0, each midpoint's timestep, t1, ...
        sigmas = sigmas[::2][: steps + 1]
        timesteps, mid_timesteps = timesteps[::2], timesteps[1::2]
    sde = score.sde
    inner = sde.time_of_log_snr(-sigmas[sigmas > 0].log())
    grid = torch.cat([inner, torch.zeros(int((sigmas == 0).sum()), dtype=torch.float64)])
    if abs(float(grid[0]) - sde.T) <= 1e-9 * sde.T:
        grid[0] = sde.T  # as sample() snaps it, so that the table is keyed by the time the solve passes
    pairs = list(zip(grid.tolist(), timesteps.tolist(), strict=False))  # (time, the scheduler's timestep)
    if mid_timesteps is not None:  # the midpoints kdpm2 evaluates at, and the scheduler's timesteps there
        pairs += zip(sde.log_snr_midpoints(grid)[:-1].tolist(), mid_timesteps.tolist(), strict=True)
    table = {
        float(torch.tensor(t, dtype=dtype)): float(n)
        for t, n in pairs
        for dtype in (torch.float32, torch.float64)
    }
    exact_score = ScoreModel(DiffusersUNet(net.unet, sde, timesteps=table), sde, score.parameterization)
    exact_score.scheduler = scheduler
    out = {"score": exact_score, "solver": solver, "time_grid": grid, "eps": grid[-1], **options}
    # The loop starts from noise * init_noise_sigma, in x / alpha for Euler and Heun: sigma_max there, not
    # sqrt(sigma_max^2 + 1), with "linspace" or "trailing" spacing (a start 2e-5 off the prior at DDPM's betas).
    scale = float(scheduler.init_noise_sigma) * (float(sde.marginal(grid[:1].clone())[0]) if scaled else 1.0)
    if x_T is not None:
        out["x_T"] = x_T * scale
    elif abs(scale - 1.0) > 1e-12:
        raise ValueError(
            f"{name}'s loop starts from noise * {scale:.10g} in diffsolve's variables: pass x_T= (the unit "
            "noise) and the returned x_T is scaled so"
        )
    return out


def _refuse_unless(config: Any, name: str, **expected: Any) -> None:
    for key, value in expected.items():
        if key in config and config[key] != value:
            raise ValueError(
                f"{name}({key}={config[key]!r}) has no identical diffsolve update (only {key}={value!r})"
            )


def _dpm_multistep(config: Any, name: str) -> tuple[str, dict[str, Any]]:
    _refuse_unless(config, name, variance_type=None)
    algorithm, order = config.get("algorithm_type", "dpmsolver++"), int(config.get("solver_order", 2))
    lof = bool(config.get("lower_order_final", True))
    euler_at_final, solver_type = (
        bool(config.get("euler_at_final", False)),
        config.get("solver_type", "midpoint"),
    )
    if algorithm == "dpmsolver++" and order == 1:
        return "ddim", {}  # DPM-Solver++(1) is DDIM
    if algorithm == "dpmsolver++" and order in (2, 3):
        options = {"lower_order_final": lof, "solver_type": solver_type, "euler_at_final": euler_at_final}
        return ("dpm_solver++2m" if order == 2 else "dpm_solver++3m"), options
    if algorithm == "sde-dpmsolver++" and order == 2:
        _refuse_unless(config, name, solver_type="midpoint", euler_at_final=False)
        return "dpm_solver++2m_sde", {"eta": 1.0, "lower_order_final": lof}
    raise ValueError(
        f"{name}(algorithm_type={algorithm!r}, solver_order={order}, solver_type={solver_type!r}, "
        f"euler_at_final={euler_at_final}) has no identical diffsolve update (matched: 'dpmsolver++' of order "
        "1-3, 'sde-dpmsolver++' of order 2)"
    )


def _unipc(config: Any, name: str) -> tuple[str, dict[str, Any]]:
    _refuse_unless(config, name, predict_x0=True, disable_corrector=[])
    order = int(config.get("solver_order", 2))
    return "unipc", {
        "order": order, "variant": config.get("solver_type", "bh2"),
        "lower_order_final": "always" if config.get("lower_order_final", True) else False,
    }  # fmt: skip


def _ddpm(config: Any, name: str) -> tuple[str, dict[str, Any]]:
    _refuse_unless(config, name, variance_type="fixed_small")
    return "ddim_eta", {"eta": 1.0}


def _dpm_singlestep(config: Any, name: str) -> tuple[str, dict[str, Any]]:
    _refuse_unless(config, name, algorithm_type="dpmsolver++", variance_type=None)
    return "dpm_solver++_grouped", {
        "order": int(config.get("solver_order", 2)), "solver_type": config.get("solver_type", "midpoint"),
        "lower_order_final": bool(config.get("lower_order_final", True)),
    }  # fmt: skip


def _deis(config: Any, name: str) -> tuple[str, dict[str, Any]]:
    _refuse_unless(config, name, algorithm_type="deis", solver_type="logrho")
    return "deis", {
        "basis": "log_rho", "order": int(config.get("solver_order", 2)),
        "lower_order_final": bool(config.get("lower_order_final", True)),
    }  # fmt: skip


def _flow(solver: str) -> Callable[[Any, str], tuple[str, dict[str, Any]]]:
    def match(config: Any, name: str) -> tuple[str, dict[str, Any]]:
        _refuse_unless(config, name, stochastic_sampling=False, invert_sigmas=False)
        return solver, {}

    return match


_MATCHES: dict[str, Any] = {
    "FlowMatchEulerDiscreteScheduler": _flow("flow_euler"),
    "FlowMatchHeunDiscreteScheduler": _flow("flow_heun"),
    "DDIMScheduler": lambda config, name: ("ddim", {}),
    "EulerDiscreteScheduler": lambda config, name: ("ddim", {}),
    "EulerAncestralDiscreteScheduler": lambda config, name: ("euler_ancestral", {"eta": 1.0}),
    "DDPMScheduler": _ddpm,
    "DPMSolverMultistepScheduler": _dpm_multistep,
    "UniPCMultistepScheduler": _unipc,
    "DEISMultistepScheduler": _deis,
    "DPMSolverSinglestepScheduler": _dpm_singlestep,
    "LMSDiscreteScheduler": lambda config, name: ("lms", {"order": 4}),  # its step's default order
    "KDPM2DiscreteScheduler": lambda config, name: ("kdpm2", {}),
}
"""Each matched scheduler: a function of (config, name) -> (solver, options), refusing what it cannot match."""

_EXACT = {
    "DPMSolverMultistepScheduler": (_dpm_multistep, False),
    "EulerDiscreteScheduler": (
        lambda config, name: ("ddim", {}),
        True,
    ),  # Euler in (x/alpha, sigma/alpha): DDIM
    "HeunDiscreteScheduler": (lambda config, name: ("edm_heun", {}), True),  # Heun in sigma/alpha, Euler to 0
    "LMSDiscreteScheduler": (_MATCHES["LMSDiscreteScheduler"], True),
    "KDPM2DiscreteScheduler": (_MATCHES["KDPM2DiscreteScheduler"], True),
    "DEISMultistepScheduler": (_deis, False),
    "DPMSolverSinglestepScheduler": (_dpm_singlestep, False),
}
"""The schedulers `match_scheduler(..., exact=True)` reproduces with their network's own timesteps: their
match, and whether their loop's state is x / alpha (the Euler-type ones) rather than x."""
