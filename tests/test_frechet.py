"""Fréchet distances: the Gaussian formula against scipy's matrix square root, the shipped digits
classifier against the test labels, and the digits distance inside `compare`."""

import math

import numpy as np
import pytest
import torch

import diffsolve as ds
from diffsolve import datasets, metrics
from diffsolve.compare import compare
from diffsolve.comparison import Z_MAX
from diffsolve.features import DIGITS_CLASSIFIER_FILE, digits_classifier

scipy_linalg = pytest.importorskip("scipy.linalg")


def test_the_gaussian_formula_against_closed_forms_and_scipy_sqrtm():
    # commuting (diagonal) covariances: |m1 - m2|^2 + sum (sqrt a - sqrt b)^2
    a, b = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([9.0, 1.0, 0.25])
    m1, m2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    expected = (
        1 + 4 + sum((math.sqrt(x) - math.sqrt(y)) ** 2 for x, y in zip(a.tolist(), b.tolist(), strict=True))
    )
    assert metrics.gaussian_frechet(m1, torch.diag(a), m2, torch.diag(b)) == pytest.approx(
        expected, rel=1e-12
    )
    # general covariances: the textbook formula with scipy's sqrtm of the (non-symmetric) product
    rng = np.random.default_rng(0)
    for d in (2, 5, 64):
        A, B = rng.normal(size=(d, d)), rng.normal(size=(d, 2 * d))
        c1, c2 = A @ A.T / d, B @ B.T / (2 * d)
        mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
        ref = np.sum((mu1 - mu2) ** 2) + np.trace(c1 + c2 - 2 * scipy_linalg.sqrtm(c1 @ c2).real)
        got = metrics.gaussian_frechet(*(torch.as_tensor(v) for v in (mu1, c1, mu2, c2)))
        assert got == pytest.approx(ref, rel=1e-8, abs=1e-9)
    assert metrics.gaussian_frechet(m1, torch.diag(a), m1, torch.diag(a)) == pytest.approx(0, abs=1e-12)


def test_the_sample_distance_converges_to_the_population_one():
    gen = torch.Generator().manual_seed(0)
    n = 200_000
    x = torch.randn(n, 3, generator=gen, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5])
    y = torch.randn(n, 3, generator=gen, dtype=torch.float64) * torch.tensor([3.0, 1.0, 0.5]) + 1
    population = 3 + (1 - 3) ** 2 + (2 - 1) ** 2  # means differ by 1 in each of 3 coordinates
    # over 30 seeds the estimate at n = 2e5 measured 8.003 ± 0.029 (SD); this seed gives 7.965
    assert metrics.frechet_distance(x, y) == pytest.approx(population, abs=4 * 0.029)
    with pytest.raises(ValueError, match="same number of features"):
        metrics.frechet_distance(x[:10], y[:10, :2])
    with pytest.raises(ValueError, match="at least 2 rows"):
        metrics.frechet_distance(x[:1], y[:10])


def test_the_shipped_classifier_reads_the_test_digits():
    net = digits_classifier()
    assert DIGITS_CLASSIFIER_FILE.stat().st_size < 300 * 1024  # "a few hundred KB at most"
    x, y = datasets.digits("test", scale="[-1, 1]", return_labels=True)
    x = ds.dequantize(x, bins=datasets.DIGITS_LEVELS, low=-1.0, high=1.0, seed=3)
    with torch.no_grad():
        accuracy = (net(x).argmax(1) == y).double().mean().item()
    assert accuracy > 0.97  # 0.989 when it was trained (its metadata), 359 labelled test images
    assert (
        float(net.metadata["test_accuracy"]) > 0.97
        and "train_digits_classifier" in net.metadata["trained_by"]
    )
    assert all(not p.requires_grad for p in net.parameters())


def test_the_digits_distance_separates_digits_from_degraded_digits():
    x = ds.dequantize(datasets.digits("all", scale="[-1, 1]"), bins=17, low=-1.0, high=1.0, seed=0)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    a, b = x[perm[:898]], x[perm[898:1796]]
    # measured: 11.2 between halves, 1025 after a 3x3 blur, 988 against clamped noise
    same = metrics.digits_frechet_distance(a, b)
    assert same < 30
    assert metrics.digits_frechet_distance(a, torch.nn.functional.avg_pool2d(b, 3, 1, 1)) > 20 * same
    assert metrics.digits_frechet_distance(a, torch.randn(898, 1, 8, 8).clamp(-1, 1)) > 20 * same
    with pytest.raises(ValueError, match=r"x must be 8x8 digit images \(N, 1, 8, 8\), got shape \(10, 64\)"):
        metrics.digits_frechet_distance(a.flatten(1)[:10], b)


class MemorisingScore:
    """The exact score of the training images blurred by N(0, 0.1^2): an image-shaped analytic score."""

    def __init__(self, sde):
        train = datasets.digits("train", scale="[-1, 1]").flatten(1).double()
        self.sde = sde
        self.inner = ds.GaussianMixture(torch.ones(len(train)), train, 0.1).score_fn(sde)

    def __call__(self, x, t):
        return self.inner(x.flatten(1).double(), t.double()).reshape(x.shape).to(x.dtype)


def test_compare_ranks_samplers_on_digit_images_by_the_feature_distance():
    sde = ds.VPSDE()
    reference = ds.dequantize(datasets.digits("test", scale="[-1, 1]"), bins=17, low=-1.0, high=1.0, seed=0)
    res = compare(MemorisingScore(sde), sde, reference=reference, solvers=["ddim"], budgets=[3, 50], n=300,
                  metrics=["digits_fd"], progress=False)  # fmt: skip
    assert set(res.null) == {"digits_fd"}
    z = {r["budget"]: r["digits_fd_z"] for r in res.rows}
    # measured: z = 23.1 at 3 steps, 4.1 at 50 (with sample's keyed prior draws and a 20-pair null; 16.3 and
    # 1.7 with the earlier draws): the 179 images per set make this null wide, so the criterion's own
    # threshold (Z_MAX = 5) is the bar the converged budget must meet, and the coarse one is far past it
    assert z[3] > 8 and z[50] <= Z_MAX
    with pytest.raises(
        ValueError, match=r"'digits_fd' applies to samples of event shape \(1, 8, 8\), not \(2,\)"
    ):
        compare(
            ds.GaussianMixture.ring2d().score_fn(sde),
            sde,
            reference=torch.randn(100, 2),
            metrics=["digits_fd"],
        )


def test_fid_names_the_weights_file_it_needs(tmp_path):
    x = torch.zeros(4, 1, 8, 8)
    missing = tmp_path / metrics.INCEPTION_WEIGHTS
    with pytest.raises(
        FileNotFoundError, match=r"weights-inception-2015-12-05-6726825d\.pth.*nothing is downloaded"
    ):
        metrics.fid(x, x, weights=missing)
    with pytest.raises(ValueError, match="x must be images"):
        metrics.fid(torch.zeros(4, 2, 8, 8), x, weights=missing)
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        missing.write_bytes(b"")  # the file is there, the package is not
        with pytest.raises(ImportError, match="pip install torch-fidelity"):
            metrics.fid(x, x, weights=missing)
