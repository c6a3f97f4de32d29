"""Batch invariance and chunking: a sample's randomness depends on the seed and its global index only,
so the first k samples of a batch of 2k equal a batch of k, and `batch_size=` streams the same
result as one batch (bit for bit on the CPU, fixed-step solvers, analytic scores whose arithmetic
per row does not depend on the batch)."""

import pytest
import torch

import diffsolve as ds
from diffsolve._keyed import BLOCK_ROWS, normal_rows, uniform_rows

VP = ds.VPSDE()
RING = ds.GaussianMixture.ring2d()
SCORE = RING.score_fn(VP)

# Read from the registry, so that a solver registered tomorrow is checked too (pc's default Langevin
# step reads batch means; its per-sample step is the batch-invariant variant).
OPTIONS = {"pc": {"step_size": "sample"}}
FIXED_STEP = [
    (s.name, OPTIONS.get(s.name, {}))
    for s in ds.solvers()
    if not s.adaptive and s.is_batch_invariant(OPTIONS.get(s.name))
]


def _budget(info) -> dict:
    """The cheapest budget of a solver: 6 steps, or its loosest default tolerance."""
    return {"rtol": max(info.budgets), "atol": max(info.budgets)} if info.adaptive else {"steps": 6}


def test_every_fixed_step_solver_but_the_declared_exceptions_is_batch_invariant():
    # A guard on the list above: the exceptions are declared by the solvers themselves.
    left_out = {s.name for s in ds.solvers() if not s.adaptive} - {name for name, _ in FIXED_STEP}
    assert left_out == {
        s.name for s in ds.solvers() if not s.adaptive and not s.is_batch_invariant(OPTIONS.get(s.name))
    }
    assert "sde:srk" in left_out and len(FIXED_STEP) >= 15


@pytest.mark.parametrize("info", [s for s in ds.solvers() if s.stochastic], ids=lambda s: s.name)
def test_chunks_of_one_batch_never_share_noise(info):
    # Issue: adaptive_sde and sde:srk built their Brownian path without the chunk's row offset, so
    # x_T = cat([z, z]) solved in chunks of len(z) came back as two identical halves.
    z = VP.prior_sample((8, 2), generator=torch.Generator().manual_seed(3))
    out = ds.sample(SCORE, VP, x_T=torch.cat([z, z]), solver=info.name, seed=0, batch_size=8, **_budget(info))
    first, second = out.samples[:8], out.samples[8:]
    assert not torch.equal(first, second)
    assert (first - second).norm(dim=1).min() > 1e-6  # every row differs, not just one


@pytest.mark.parametrize("solver, options", FIXED_STEP, ids=[s for s, _ in FIXED_STEP])
def test_the_first_k_samples_do_not_depend_on_n_and_chunks_change_nothing(solver, options):
    kw = dict(solver=solver, steps=6, seed=11, **options)
    big = ds.sample(SCORE, VP, 40, **kw)
    small = ds.sample(SCORE, VP, 13, **kw)
    assert torch.equal(big.samples[:13], small.samples)
    assert torch.equal(big.x_T[:13], small.x_T)
    chunked = ds.sample(SCORE, VP, 40, batch_size=9, **kw)  # chunks of 9, 9, 9, 9, 4
    assert torch.equal(chunked.samples, big.samples)
    assert chunked.nfe == big.nfe and chunked.settings["nfe_per_chunk"] == [big.nfe] * 5
    assert chunked.settings["score_calls"] == 5 * big.nfe


def test_chunks_that_cross_a_generator_block_draw_the_rows_one_batch_draws():
    # Rows beyond BLOCK_ROWS come from the next block's generator; a chunk starting inside a block
    # draws from the block's start. Euler–Maruyama uses the prior rows and the Brownian rows.
    n = BLOCK_ROWS + 300
    one = ds.sample(SCORE, VP, n, solver="sde:euler", steps=3, seed=2)
    chunked = ds.sample(SCORE, VP, n, solver="sde:euler", steps=3, seed=2, batch_size=1000)
    assert torch.equal(one.samples, chunked.samples)
    tail = normal_rows((7, 1), BLOCK_ROWS - 5, 10, 3, dtype=torch.float32, device="cpu")
    whole = normal_rows((7, 1), 0, BLOCK_ROWS + 5, 3, dtype=torch.float32, device="cpu")
    assert torch.equal(tail, whole[-10:])
    u = uniform_rows((7, 2), 3, 4, 5, dtype=torch.float64, device="cpu")
    assert torch.equal(u, uniform_rows((7, 2), 0, 7, 5, dtype=torch.float64, device="cpu")[3:])


def test_keyed_rows_are_standard_normal_and_independent_across_blocks():
    # 2 x 4096 rows x 4 values: mean 0 and variance 1 within 5 standard errors, and the two blocks'
    # rows uncorrelated (a seeding mistake would repeat a block).
    z = normal_rows((3, 9), 0, 2 * BLOCK_ROWS, 4, dtype=torch.float64, device="cpu")
    m = z.numel()
    assert abs(float(z.mean())) < 5 / m**0.5 and abs(float(z.var()) - 1) < 5 * (2 / m) ** 0.5
    a, b = z[:BLOCK_ROWS].flatten(), z[BLOCK_ROWS:].flatten()
    assert abs(float((a * b).mean())) < 5 / a.numel() ** 0.5


def test_pc_with_batch_step_sizes_is_song_et_al_and_depends_on_the_batch():
    # Song et al.'s corrector takes its step from batch means: a documented exception.
    a = ds.sample(SCORE, VP, 40, solver="pc", steps=6, seed=11).samples[:13]
    b = ds.sample(SCORE, VP, 13, solver="pc", steps=6, seed=11).samples
    assert not torch.equal(a, b)


@pytest.mark.parametrize("divergence", ["exact", "hutchinson"])
def test_likelihood_per_point_does_not_depend_on_the_batch(divergence):
    x = RING.sample(30, seed=4)
    kw = dict(divergence=divergence, probes=3, seed=8, solver="rk4", steps=12)
    whole = ds.log_likelihood(SCORE, VP, x, **kw)
    part = ds.log_likelihood(SCORE, VP, x[:11], **kw)
    chunked = ds.log_likelihood(SCORE, VP, x, batch_size=8, **kw)
    assert torch.equal(whole.log_prob[:11], part.log_prob)
    assert torch.equal(whole.log_prob, chunked.log_prob)
    assert chunked.settings["nfe_per_chunk"] == [whole.nfe] * 4
    if divergence == "hutchinson":
        assert torch.equal(whole.per_probe[:11], part.per_probe)


def test_keyed_dequantisation_noise_does_not_depend_on_the_chunk():
    from diffsolve.datasets import dequantize

    levels = torch.randint(0, 256, (50, 3, 4), generator=torch.Generator().manual_seed(0)) / 255.0
    whole = dequantize(levels, seed=6)
    parts = torch.cat([dequantize(levels[r : r + 16], seed=6, row_start=r) for r in range(0, 50, 16)])
    assert torch.equal(whole, parts)
    # each value stays in its level's cell of width 1/256
    assert bool(((whole * 256).floor() == torch.round(levels * 255)).all())


def test_adaptive_solvers_choose_steps_per_chunk_and_say_so():
    x = RING.sample(30, seed=4)
    whole = ds.log_likelihood(SCORE, VP, x)
    chunked = ds.log_likelihood(SCORE, VP, x, batch_size=10)
    assert len(chunked.settings["nfe_per_chunk"]) == 3 and chunked.nfe == max(
        chunked.settings["nfe_per_chunk"]
    )
    # each chunk meets the same tolerance: values agree to its order (rtol = atol = 1e-5 per step)
    torch.testing.assert_close(chunked.log_prob, whole.log_prob, rtol=0, atol=1e-2)
    out = ds.sample(SCORE, VP, 30, solver="ode:dopri5", seed=1, batch_size=10)
    assert out.settings["score_calls"] == sum(out.settings["nfe_per_chunk"])


def test_a_trajectory_is_assembled_across_chunks():
    one = ds.sample(SCORE, VP, 12, solver="ddim", steps=4, seed=0, return_trajectory=True)
    chunked = ds.sample(SCORE, VP, 12, solver="ddim", steps=4, seed=0, return_trajectory=True, batch_size=5)
    assert torch.equal(one.trajectory, chunked.trajectory) and torch.equal(one.times, chunked.times)


# --- per-sample adaptive steps -----------------------------------------------------------------


class _Rows:
    """Counts batched calls and the rows they carried, independently of the solver's ledger."""

    def __init__(self, score):
        self.score, self.calls, self.rows = score, 0, 0
        self.event_shape = score.event_shape

    def __call__(self, x, t):
        self.calls += 1
        self.rows += x.shape[0]
        return self.score(x, t)


MIXED = ds.GaussianMixture([0.5, 0.5], [[-3.0, 0.0], [3.0, 0.0]], [[1.0, 1.0], [0.02, 0.02]])


def test_per_sample_dopri5_decouples_samples_and_counts_honestly():
    score = _Rows(MIXED.score_fn(VP))
    x_T = VP.prior_sample((60, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = ds.sample(score, VP, x_T=x_T, solver="dopri5_per_sample", rtol=1e-6, atol=1e-6)
    assert out.nfe == score.calls and out.settings["sample_evaluations"] == score.rows
    assert int(out.nfe_per_sample.sum()) == score.rows and int(out.nfe_per_sample.max()) == out.nfe
    # each sample alone takes exactly the steps it took in the batch (this mixture's score, with
    # per-dimension widths, goes through a batched einsum whose last bit depends on the row count)
    for i in (0, 7, 31):
        alone = ds.sample(
            MIXED.score_fn(VP), VP, x_T=x_T[i : i + 1], solver="dopri5_per_sample", rtol=1e-6, atol=1e-6
        )
        torch.testing.assert_close(alone.samples[0], out.samples[i], rtol=1e-12, atol=1e-12)
        assert alone.nfe == int(out.nfe_per_sample[i])
    # easy samples (ending in the wide mode) stop earlier than hard ones
    hard = out.samples[:, 0] > 0
    assert out.nfe_per_sample[~hard].double().median() < out.nfe_per_sample[hard].double().median()


def test_per_sample_dopri5_is_as_accurate_as_batch_wide_dopri5_and_converges():
    # Path errors against a float64 dopri5 at 1e-11 from the same draws. Measured on these 100
    # draws: per-sample 3.3e-5 and 2.1e-7 at tol 1e-5 and 1e-7, batch-wide 2.7e-5 and 2.4e-7.
    x_T = VP.prior_sample((100, 2), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    score = MIXED.score_fn(VP)
    ref = ds.sample(score, VP, x_T=x_T, solver="ode:dopri5", rtol=1e-11, atol=1e-11).samples
    errors = {}
    for tol in (1e-5, 1e-7):
        own = ds.sample(score, VP, x_T=x_T, solver="dopri5_per_sample", rtol=tol, atol=tol).samples
        batch = ds.sample(score, VP, x_T=x_T, solver="ode:dopri5", rtol=tol, atol=tol).samples
        errors[tol] = float((own - ref).norm(dim=1).mean())
        assert errors[tol] < 1.5 * float((batch - ref).norm(dim=1).mean())
    assert errors[1e-7] < errors[1e-5] / 50  # fifth order: 100x tighter tolerance, measured 157x smaller


# --- per-sample adaptive reverse SDE and its per-row Brownian path ------------------------------


def test_hash64_is_the_python_splitmix_finaliser_bit_for_bit():
    from diffsolve._keyed import MASK64, absorb, hash64

    words = [0, 1, 2, 12345, 2**31, 2**40 + 7, 2**62 + 3, 2**63 - 1]
    got = hash64(torch.tensor(words, dtype=torch.int64)).tolist()
    assert [g & MASK64 for g in got] == [absorb(0, w) for w in words]


def test_hashed_normals_are_standard_normal():
    from scipy import stats

    from diffsolve._keyed import hash64, hashed_normals

    z = hashed_normals(hash64(torch.arange(400_000) ^ 987654321), torch.float64)
    # 4 standard errors: mean 1/sqrt(n), variance sqrt(2/n), fourth moment sqrt(96/n)
    assert abs(float(z.mean())) < 4 / 400_000**0.5
    assert abs(float(z.var()) - 1) < 4 * (2 / 400_000) ** 0.5
    assert abs(float((z**4).mean()) - 3) < 4 * (96 / 400_000) ** 0.5
    assert stats.kstest(z.numpy(), "norm").pvalue > 1e-3


def test_row_brownian_is_a_function_of_seed_row_and_time_only():
    from diffsolve.adapters.brownian import RowBrownian

    s_end = 0.999
    full = RowBrownian((10, 3), seed=5, s_end=s_end, dtype=torch.float64)
    s = torch.rand(10, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * s_end
    w = full.value(s)
    assert torch.equal(full.value(s[[7, 2]], torch.tensor([7, 2])), w[[7, 2]])  # any subset, any order
    shard = RowBrownian((4, 3), seed=5, s_end=s_end, dtype=torch.float64, row_start=3)
    assert torch.equal(shard.value(s[3:7]), w[3:7])  # a chunk or shard sees its global rows' paths
    assert torch.equal(
        full.value(torch.zeros(10, dtype=torch.float64)), torch.zeros(10, 3, dtype=torch.float64)
    )
    other = RowBrownian((10, 3), seed=6, s_end=s_end, dtype=torch.float64).value(s)
    assert not torch.allclose(other, w)


def test_row_brownian_has_the_law_of_brownian_motion_at_points_off_the_tree():
    from scipy import stats

    from diffsolve.adapters.brownian import RowBrownian

    n, s_end = 40_000, 0.999
    path = RowBrownian((n, 1), seed=3, s_end=s_end, dtype=torch.float64)
    times = (0.123456, 0.4, 0.40000123, 0.81234, s_end)  # the third lies inside the second's cell's neighbour
    values = [path.value(torch.full((n,), s, dtype=torch.float64))[:, 0] for s in times]
    prev_w, prev_s = torch.zeros(n, dtype=torch.float64), 0.0
    increments = []
    for s, w in zip(times, values, strict=True):
        inc = (w - prev_w) / (s - prev_s) ** 0.5  # standard normal if the law is right
        assert abs(float(inc.var()) - 1) < 4 * (2 / n) ** 0.5, s
        increments.append(inc)
        prev_w, prev_s = w, s
    corr = torch.corrcoef(torch.stack(increments))
    assert float((corr - torch.eye(len(times), dtype=torch.float64)).abs().max()) < 4 / n**0.5
    # each row at its own time: W_i(s_i) / sqrt(s_i) is standard normal
    s = torch.rand(n, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * s_end + 1e-3
    z = path.value(s.clamp(max=s_end))[:, 0] / s.clamp(max=s_end).sqrt()
    assert stats.kstest(z.numpy(), "norm").pvalue > 1e-3


def test_per_sample_adaptive_sde_decouples_samples_and_counts_honestly():
    score = _Rows(MIXED.score_fn(VP))
    x_T = VP.prior_sample((60, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    kw = dict(solver="adaptive_sde_per_sample", rtol=0.01, atol=0.01, seed=4)
    out = ds.sample(score, VP, x_T=x_T, **kw)
    assert out.nfe == score.calls and out.settings["sample_evaluations"] == score.rows
    assert int(out.nfe_per_sample.sum()) == score.rows
    stated = ds.get_solver("adaptive_sde_per_sample").nfe(
        accepted=out.steps_taken, rejected=out.steps_rejected
    )
    assert stated == out.nfe
    # a sample's noise is keyed by its global index: with other batch-mates after it (here none),
    # sample i takes the steps and the noise it took in the full batch
    for i in (0, 7, 31):
        fewer = ds.sample(MIXED.score_fn(VP), VP, x_T=x_T[: i + 1], **kw)
        torch.testing.assert_close(fewer.samples[i], out.samples[i], rtol=1e-12, atol=1e-12)
        assert int(fewer.nfe_per_sample[i]) == int(out.nfe_per_sample[i])
    # the first k of 2k are the k (ring2d's isotropic score computes each row alike at any batch size)
    big = ds.sample(SCORE, VP, 40, solver="adaptive_sde_per_sample", seed=2)
    small = ds.sample(SCORE, VP, 13, solver="adaptive_sde_per_sample", seed=2)
    assert torch.equal(big.samples[:13], small.samples)
    chunked = ds.sample(SCORE, VP, 40, solver="adaptive_sde_per_sample", seed=2, batch_size=9)
    assert torch.equal(chunked.samples, big.samples)


def test_per_sample_adaptive_sde_converges_to_euler_maruyama_on_its_own_path():
    # The independent answer: Euler–Maruyama written here, 4000 uniform steps on the same
    # RowBrownian path the solver queries. Measured on these 100 draws: mean distance 0.084, 0.012,
    # 0.0053 at tol 0.02, 0.005, 0.001; the 4000- and 8000-step references differ by 0.00055, so
    # the last ratio (2.3) is partly the reference's own error: asked for 1.5.
    from diffsolve.adapters.brownian import RowBrownian

    eps, seed, n = 1e-3, 9, 100
    score = MIXED.score_fn(VP)
    x_T = VP.prior_sample((n, 2), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    path = RowBrownian((n, 2), seed=seed, s_end=VP.T - eps, dtype=torch.float64)
    times = torch.linspace(VP.T, eps, 4001, dtype=torch.float64)
    x, w = x_T.clone(), torch.zeros(n, 2, dtype=torch.float64)
    for t, t_next in zip(times[:-1], times[1:], strict=True):
        w_next = path.value(torch.full((n,), float(VP.T - t_next), dtype=torch.float64))
        tb = torch.full((n,), float(t), dtype=torch.float64)
        drift = VP.g2(t) * score(x, tb) - VP._f(t) * x
        x = x + (t - t_next) * drift + VP.g2(t).sqrt() * (w_next - w)
        w = w_next
    errors = []
    for tol in (0.02, 0.005, 0.001):
        out = ds.sample(score, VP, x_T=x_T, solver="adaptive_sde_per_sample", rtol=tol, atol=tol, seed=seed)
        errors.append(float((out.samples - x).norm(dim=1).mean()))
    assert errors[0] < 0.15 and errors[1] < errors[0] / 3 and errors[2] < errors[1] / 1.5, errors


def test_per_sample_adaptive_sde_samples_the_mixture():
    # Weak accuracy against the closed form: the mean log p_eps of the samples (ring2d, 2000
    # samples, default tolerances); measured -0.021 +- 0.025 (adaptive_sde: +0.013 +- 0.022).
    from diffsolve import metrics

    out = ds.sample(SCORE, VP, 2000, solver="adaptive_sde_per_sample", seed=0)
    gap = metrics.log_prob_gap(out.samples, RING, 1e-3, VP)
    assert abs(gap.value) < 0.03 + 3 * gap.se, gap
