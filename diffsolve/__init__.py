"""diffsolve: score-based diffusion models as differential equations.

A score $s(x, t) \\approx \\nabla_x \\log p_t(x)$ becomes drift functions for torchsde (the reverse-time
SDE) and torchdiffeq (the probability-flow ODE), so one score can be sampled with any solver and
every number checked against the closed-form Gaussian-mixture marginals.
"""

from .adapters import LikelihoodODE, ProbabilityFlowODE, ReverseSDE
from .analytic import AnalyticScore, GaussianMixture
from .datasets import dequantize
from .errors import NonFiniteError, StepSizeError
from .guidance import Conditional, LabeledMixture, guided
from .inverse import Observation, dps, pigdm
from .likelihood import DatasetBits, LikelihoodResult, bits_per_dim, dataset_bits_per_dim, log_likelihood
from .memory import MemoryBudgetError, memory_limit, set_memory_limit
from .samplers import Solver, SolverInfo, get_solver, register_solver, solvers, unregister_solver
from .sampling import SampleResult, sample
from .scores import Score, ScoreModel
from .sde import EDMSDE, SDE, VESDE, VPSDE, AffinePath, CosineVPSDE, DiscreteVPSDE, RectifiedFlow, SubVPSDE

__version__ = "0.1.0.dev0"

__all__ = [
    "SDE",
    "VPSDE",
    "SubVPSDE",
    "CosineVPSDE",
    "AffinePath",
    "RectifiedFlow",
    "DiscreteVPSDE",
    "EDMSDE",
    "VESDE",
    "GaussianMixture",
    "Conditional",
    "LabeledMixture",
    "guided",
    "Observation",
    "dps",
    "pigdm",
    "AnalyticScore",
    "Score",
    "ScoreModel",
    "ReverseSDE",
    "ProbabilityFlowODE",
    "LikelihoodODE",
    "log_likelihood",
    "LikelihoodResult",
    "bits_per_dim",
    "dataset_bits_per_dim",
    "DatasetBits",
    "dequantize",
    "sample",
    "SampleResult",
    "solvers",
    "get_solver",
    "register_solver",
    "unregister_solver",
    "Solver",
    "SolverInfo",
    "NonFiniteError",
    "StepSizeError",
    "MemoryBudgetError",
    "memory_limit",
    "set_memory_limit",
]
