r"""Divergence of a vector field $f: \mathbb{R}^D \to \mathbb{R}^D$, exactly or by Hutchinson's estimator.

The instantaneous change of variables needs $\nabla\cdot f = \mathrm{tr}\,J_f$ along the flow.

* **Exact**: $\mathrm{tr}\,J = \sum_i e_i^\top J e_i$, one vector-Jacobian product per event
  dimension. The products are batched (`is_grads_batched`, one backward pass over `chunk` basis
  vectors at a time), so memory stays bounded for images while small problems run in one pass.
* **Hutchinson–Skilling**: $\mathrm{tr}\,J = \mathbb{E}[v^\top J v]$ for probes with
  $\mathbb{E}[vv^\top] = I$ (Rademacher or Gaussian). K probes share one forward evaluation and
  cost K vector-Jacobian products; their spread gives a standard error. For a well-defined ODE the
  probes must stay fixed during a solve.

`divergence="auto"` uses the exact trace up to `AUTO_EXACT_MAX_DIM` dimensions and Hutchinson above.

References:
    Hutchinson, "A stochastic estimator of the trace of the influence matrix", 1989.
    Grathwohl et al., "FFJORD: Free-form continuous dynamics for scalable reversible generative
    models", ICLR 2019.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ._keyed import hash64, hashed_normals, mix, normal_rows, stream, uniform_rows
from ._validation import check_positive

__all__ = [
    "ESTIMATORS",
    "Estimator",
    "deflated_divergence",
    "hutchpp_divergence",
    "AUTO_EXACT_MAX_DIM",
    "exact_divergence",
    "hutchinson_divergence",
    "make_probes",
]

# Up to this event size the exact trace costs at most ~this many VJPs per step, which measured on a
# 3x256 MLP stays within a few Hutchinson probes' cost; above, Hutchinson is the default.
AUTO_EXACT_MAX_DIM = 64
"""`divergence="auto"` uses the exact trace up to this many dimensions (64), Hutchinson above."""

VectorField = Callable[[Tensor], Tensor]


def _vjps(f: Tensor, x: Tensor, vs: Tensor, create_graph: bool) -> Tensor:
    """`vs` of shape (K, *x.shape) -> v^T J for each, (K, *x.shape), in one batched backward pass."""
    (out,) = torch.autograd.grad(
        f, x, vs, retain_graph=True, create_graph=create_graph, is_grads_batched=True
    )
    return out


def exact_divergence(
    fn: VectorField, x: Tensor, *, chunk: int = 64, method: str = "auto"
) -> tuple[Tensor, Tensor]:
    """Evaluate `fn(x)` and its exact divergence (the Jacobian trace) per sample.

    Args:
        fn: A map from `(B, *event)` to `(B, *event)` that acts on each sample separately.
        x: The points, `(B, *event)`.
        chunk: Basis vectors per batched backward pass (memory ~ chunk x one backward pass).
        method: `"loop"` (one backward pass per event dimension), `"batched"` (`chunk` basis
            vectors per backward pass, `is_grads_batched`), or `"auto"`: the loop on the CPU,
            where it measured 10-60% faster (benchmarks/exact_trace.py), batched elsewhere.

    Returns:
        `(fn(x), div)`, with `div` of shape `(B,)`. Both carry a graph only if grad mode is on.
    """
    check_positive(chunk, "chunk", integer=True)
    if method not in ("auto", "loop", "batched"):
        raise ValueError(f"method must be 'auto', 'loop' or 'batched', got {method!r}")
    if method == "auto":
        method = "loop" if x.device.type == "cpu" else "batched"
    create_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        # Without a graph to keep (grad mode off: a plain solve, or torchdiffeq's adjoint forward pass),
        # differentiate at a fresh leaf; with one, through x's own history.
        x = x if create_graph and x.requires_grad else x.detach().requires_grad_(True)
        f = fn(x)
        d = x[0].numel()
        div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        if method == "loop":
            flat_f = f.reshape(x.shape[0], d)
            for i in range(d):
                (g,) = torch.autograd.grad(
                    flat_f[:, i].sum(), x, retain_graph=True, create_graph=create_graph
                )
                div = div + g.reshape(x.shape[0], d)[:, i]
        else:
            flat_dims = torch.arange(d, device=x.device)
            for start in range(0, d, chunk):
                idx = flat_dims[start : start + chunk]
                basis = torch.zeros(len(idx), *x.shape, dtype=x.dtype, device=x.device)
                rows = torch.arange(len(idx), device=x.device)
                basis.view(len(idx), x.shape[0], d)[rows, :, idx] = 1.0
                vjp = _vjps(f, x, basis, create_graph).reshape(len(idx), x.shape[0], d)
                div = div + vjp[rows, :, idx].sum(0)
    if not create_graph:
        f, div = f.detach(), div.detach()
    return f, div


def make_probes(
    x: Tensor,
    probes: int,
    kind: str = "rademacher",
    *,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    row_start: int = 0,
    rows: Tensor | None = None,
) -> Tensor:
    """Draw `probes` Hutchinson probe vectors per sample: shape `(probes, *x.shape)`, $E[vv^T] = I$.

    Args:
        x: The points the probes are for, `(B, *event)`; gives shape, dtype and device.
        probes: Number of probes K per point.
        kind: `"rademacher"` (entries ±1: lower variance, no variance from the Jacobian's diagonal)
            or `"gaussian"`.
        generator: Source of randomness (CPU), for reproducible probes.
        seed: Instead of `generator`: each point's probes keyed by the seed and its global index
            `row_start + i`, drawn on `x`'s device, so they do not depend on the batch.
        row_start: Global index of `x`'s first row (with `seed`).
        rows: Instead of `row_start`: the global index of each row of `x` (int64, `(B,)`), for
            rows that are not contiguous; drawn by counter-based hashing (`_keyed.hashed_normals`),
            so each row's probes depend on the seed and its index only. A different stream from
            `row_start`'s.

    Returns:
        A tensor `(K, B, *event)`.
    """
    check_positive(probes, "probes", integer=True)
    if kind not in ("rademacher", "gaussian"):
        raise ValueError(f"probe must be 'rademacher' or 'gaussian', got {kind!r}")
    if rows is not None:
        if seed is None:
            raise ValueError("rows= needs seed=: the probes are keyed by the seed and each row's index")
        numel = x[0].numel()
        row_keys = hash64(rows.to(device=x.device, dtype=torch.int64) ^ mix(*stream(seed, "probes"), 1))
        keys = hash64(row_keys[:, None] ^ hash64(torch.arange(probes * numel, device=x.device) + 1))
        if kind == "rademacher":
            v = torch.where(keys < 0, -1.0, 1.0).to(x.dtype)  # the top bit of the hash
        else:
            v = hashed_normals(keys, x.dtype)
        return v.view(x.shape[0], probes, *x.shape[1:]).transpose(0, 1)
    if seed is not None:
        b, numel = x.shape[0], probes * x[0].numel()
        if kind == "rademacher":
            u = uniform_rows(
                stream(seed, "probes"), row_start, b, numel, dtype=torch.float32, device=x.device
            )
            v = torch.where(u < 0.5, -1.0, 1.0).to(x.dtype)
        else:
            v = normal_rows(stream(seed, "probes"), row_start, b, numel, dtype=x.dtype, device=x.device)
        return v.view(b, probes, *x.shape[1:]).transpose(0, 1)
    shape = (probes, *x.shape)
    if kind == "rademacher":
        v = torch.randint(0, 2, shape, generator=generator, dtype=torch.int64).to(x.dtype) * 2 - 1
    elif kind == "gaussian":
        v = torch.randn(shape, generator=generator, dtype=x.dtype)
    else:
        raise ValueError(f"probe must be 'rademacher' or 'gaussian', got {kind!r}")
    return v.to(x.device)


def hutchinson_divergence(fn: VectorField, x: Tensor, probes: Tensor) -> tuple[Tensor, Tensor]:
    """Evaluate `fn(x)` and one divergence estimate $v^\\top J v$ per probe.

    Args:
        fn: A map from `(B, *event)` to `(B, *event)` that acts on each sample separately.
        x: The points, `(B, *event)`.
        probes: `(K, *x.shape)` probe vectors (see `make_probes`); keep them fixed within a solve.

    Returns:
        `(fn(x), estimates)` with estimates of shape `(B, K)`; their mean is the estimate.
    """
    if probes.shape[1:] != x.shape:
        raise ValueError(
            f"probes must have shape (K, {', '.join(map(str, x.shape))}), got {tuple(probes.shape)}"
        )
    create_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        # Without a graph to keep (grad mode off: a plain solve, or torchdiffeq's adjoint forward pass),
        # differentiate at a fresh leaf; with one, through x's own history.
        x = x if create_graph and x.requires_grad else x.detach().requires_grad_(True)
        f = fn(x)
        vjp = _vjps(f, x, probes, create_graph)
        est = (vjp * probes).flatten(2).sum(-1).T
    if not create_graph:
        f, est = f.detach(), est.detach()
    return f, est


def _sketch_size(x: Tensor, probes: Tensor, name: str) -> tuple[int, int, int]:
    """(k, B, d) for `2k` probes (a sketch and a residual set) on `x`, or a clear error."""
    m = probes.shape[0]
    if m % 2 or probes.shape[1:] != x.shape:
        raise ValueError(
            f"probes must have shape (2k, {', '.join(map(str, x.shape))}) for {name}, got {tuple(probes.shape)}"
        )
    return m // 2, x.shape[0], x[0].numel()


def _sketch(fn: VectorField, x: Tensor, sketch: Tensor, create_graph: bool) -> tuple[Tensor, Tensor, Tensor]:
    """`(x, fn(x), J^T S)`: the point to differentiate at, the forward pass, and the sketch's products
    (no graph: the sketch only chooses the subspace, which the estimators hold fixed)."""
    # Without a graph to keep (grad mode off: a plain solve, or torchdiffeq's adjoint forward pass),
    # differentiate at a fresh leaf; with one, through x's own history.
    x = x if create_graph and x.requires_grad else x.detach().requires_grad_(True)
    f = fn(x)
    return x, f, _vjps(f, x, sketch, False).detach()


def hutchpp_divergence(fn: VectorField, x: Tensor, probes: Tensor) -> tuple[Tensor, Tensor]:
    r"""Evaluate `fn(x)` and the Hutch++ divergence estimate (Meyer, Musco, Musco & Woodruff 2021).

    With probes split into a sketch $S$ and a residual set $G$ ($k$ vectors each), per sample:
    $Q = \text{orth}(J^\top S)$ ($k$ vector-Jacobian products, no graph), then

    $$\widehat{\operatorname{tr}} J = \operatorname{tr}(Q^\top J Q)
      + \tfrac1k \operatorname{tr}\big(G'^\top J G'\big), \qquad G' = (I - QQ^\top) G,$$

    $2k$ more products in one batched backward pass: $3k$ in all. Unbiased for any $Q$ (it is held
    fixed, so the gradient of the estimate is unbiased too), exact when $J$ has rank at most $k$,
    and with a variance that falls like $1/k^2$ instead of Hutchinson's $1/k$ when $J$'s spectrum
    decays.

    Args:
        fn: A map from `(B, *event)` to `(B, *event)` that acts on each sample separately.
        x: The points, `(B, *event)`.
        probes: `(2k, *x.shape)`: the first k are $S$, the last k are $G$ (see `make_probes`).

    Returns:
        `(fn(x), estimate)` with the estimate of shape `(B, 1)`.
    """
    k, b, d = _sketch_size(x, probes, "Hutch++")
    create_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        x, f, y = _sketch(fn, x, probes[:k], create_graph)
        y = y.reshape(k, b, d).permute(1, 2, 0)  # (B, d, k): J^T S
        q = torch.linalg.qr(y, mode="reduced").Q  # (B, d, min(d, k))
        g = probes[k:].reshape(k, b, d).permute(1, 2, 0)
        g = g - q @ (q.transpose(1, 2) @ g)  # (I - QQ^T) G
        r = q.shape[2]
        vs = torch.cat([q, g], dim=2).permute(2, 0, 1).reshape(r + k, *x.shape)
        w = _vjps(f, x, vs, create_graph).reshape(r + k, b, d)
        vs = vs.reshape(r + k, b, d)
        per = (w * vs).sum(-1)  # (r + k, B): v^T J v
        est = per[:r].sum(0) + per[r:].sum(0) / k
    if not create_graph:
        f, est = f.detach(), est.detach()
    return f, est[:, None]


def deflated_divergence(fn: VectorField, x: Tensor, probes: Tensor) -> tuple[Tensor, Tensor]:
    r"""Evaluate `fn(x)` and k Hutchinson estimates with a low-rank control variate that keeps the
    diagonal exact.

    Rademacher Hutchinson carries no variance from a Jacobian's diagonal ($v_i^2 = 1$): its variance
    is $2\sum_{i \ne j} J_{ij}^2$, the off-diagonal mass alone. The drift Jacobian of a diffusion's
    PF-ODE is a diagonal (near the data) plus a low-rank part (between modes, where the posterior
    over modes is mixed), and Hutch++ deflates the low-rank part but projects its residual probes,
    so that they pick up the diagonal's variance: it loses on such Jacobians. Here, per sample, a
    sketch $S$ of k Rademacher vectors gives $Y = J^\top S$ (k vector-Jacobian products), the
    diagonal estimate $\hat D = \tfrac1k \sum_s s \odot J^\top s$ (exact when $J$ is diagonal) and
    $Q = \text{orth}(Y)$; with $M = Q^\top (J - \hat D) Q$ (r <= k more products), each residual
    Rademacher probe $v$ gives

    $$\widehat{\operatorname{tr}} J = v^\top J v - \big[(Q^\top v)^\top M\, (Q^\top v) - \operatorname{tr} M\big],$$

    unbiased for any sketch (the bracket has mean zero over $v$), exact when $J$ is diagonal (then
    $M = 0$), and with the low-rank part's off-diagonal mass removed when $Q$ spans it. The k
    residual estimates are independent given the sketch, so their spread is a standard error. Cost:
    2k + min(k, d) vector-Jacobian products, as Hutch++.

    Args:
        fn: A map from `(B, *event)` to `(B, *event)` that acts on each sample separately.
        x: The points, `(B, *event)`.
        probes: `(2k, *x.shape)` Rademacher probes: the first k are the sketch, the last k the
            residual probes (see `make_probes`).

    Returns:
        `(fn(x), estimates)` with estimates of shape `(B, k)`; their mean is the estimate.
    """
    k, b, d = _sketch_size(x, probes, "'deflated'")
    create_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        x, f, y = _sketch(fn, x, probes[:k], create_graph)
        sketch, y = probes[:k].reshape(k, b, d), y.reshape(k, b, d)  # S and J^T S
        diag = (sketch * y).mean(0)  # (B, d): exact when J is diagonal
        q = torch.linalg.qr(y.permute(1, 2, 0), mode="reduced").Q  # (B, d, r)
        r = q.shape[2]
        v = probes[k:].reshape(k, b, d)
        vs = torch.cat([q.permute(2, 0, 1), v]).reshape(r + k, *x.shape)
        w = _vjps(f, x, vs, create_graph).reshape(r + k, b, d)
        # M[b, a, c] = q_a^T J q_c - q_a^T diag(D) q_c
        mat = torch.einsum("abd,bdc->bac", w[:r], q) - torch.einsum("bda,bd,bdc->bac", q, diag, q)
        proj = torch.einsum("bda,kbd->kba", q, v)  # Q^T v
        control = torch.einsum("kba,bac,kbc->kb", proj, mat, proj) - mat.diagonal(dim1=1, dim2=2).sum(-1)
        est = ((w[r:] * v).sum(-1) - control).T  # (B, k)
    if not create_graph:
        f, est = f.detach(), est.detach()
    return f, est


@dataclass(frozen=True)
class Estimator:
    """The facts of one divergence estimator that the likelihood ODE, the memory estimate, the
    standard error and `target_se` read (`ESTIMATORS[name]`): a fix to one estimator touches one place.

    Attributes:
        name: Its `divergence=` name.
        fn: `fn(vector_field, x, probes) -> (f(x), estimates (B, width))`.
        probe_sets: Probe vectors per probe asked for: 1 (Hutchinson), 2 (a sketch and a residual set).
        has_spread: Whether its `width` columns are independent estimates, whose spread is a standard
            error (and `target_se` can add rounds of them).
    """

    name: str
    fn: Callable[[VectorField, Tensor, Tensor], tuple[Tensor, Tensor]]
    probe_sets: int
    has_spread: bool

    def probe_rows(self, probes: int) -> int:
        """Probe vectors (rows of `make_probes`) for `probes` probes (the sketch size k for hutch++ / deflated)."""
        return self.probe_sets * probes

    def width(self, probes: int) -> int:
        """Estimates per point per evaluation: one per probe, or one in all (Hutch++)."""
        return probes if self.has_spread else 1

    def vjps(self, probes: int, dim: int) -> int:
        """Vector-Jacobian products per evaluation of a `dim`-dimensional point."""
        return probes if self.probe_sets == 1 else 2 * probes + min(probes, dim)


ESTIMATORS: dict[str, Estimator] = {
    "hutchinson": Estimator("hutchinson", hutchinson_divergence, probe_sets=1, has_spread=True),
    "hutch++": Estimator("hutch++", hutchpp_divergence, probe_sets=2, has_spread=False),
    "deflated": Estimator("deflated", deflated_divergence, probe_sets=2, has_spread=True),
}
"""The stochastic divergence estimators by name; `"exact"` (the Jacobian trace) is not among them."""
