"""Numerical analysis of score-based samplers, one module per question.

- `convergence`: measured convergence orders (strong, weak, ODE) with fitted slopes and intervals;
- `stiffness`: where adaptive solvers spend their steps, and the drift Jacobian's spectrum;
- `truncation`: likelihood and sample error against eps and against the tolerance;
- `grids`: the time grid on which a sampler's paired path error is smallest (`optimize_grid`);
- `posterior`: how far inverse-problem samples are from the exact posterior (`posterior_error`).
"""

from .convergence import KINDS, ConvergenceResult, convergence_order, second_moment
from .grids import GridResult, optimize_grid
from .posterior import METHODS, Method, PosteriorError, PosteriorJudge, posterior_error, posterior_study
from .stiffness import JacobianSpectrum, StepDiagnostics, jacobian_spectrum, step_diagnostics
from .truncation import likelihood_work_precision, nll_vs_eps, sample_error_vs_eps

__all__ = [
    "KINDS",
    "ConvergenceResult",
    "convergence_order",
    "second_moment",
    "StepDiagnostics",
    "step_diagnostics",
    "JacobianSpectrum",
    "jacobian_spectrum",
    "nll_vs_eps",
    "likelihood_work_precision",
    "sample_error_vs_eps",
    "GridResult",
    "optimize_grid",
    "PosteriorError",
    "PosteriorJudge",
    "posterior_error",
    "Method",
    "METHODS",
    "posterior_study",
]
