import pytest
import torch
from hypothesis import settings

import diffsolve as ds

# Property tests: a fixed, derandomised set of examples, so CI runs the same cases every time and
# no example's solve time trips a deadline on a shared machine.
settings.register_profile("diffsolve", max_examples=25, deadline=None, derandomize=True, print_blob=True)
settings.load_profile("diffsolve")


@pytest.fixture(scope="session")
def ring():
    return ds.GaussianMixture.ring2d()


@pytest.fixture(scope="session")
def vp():
    return ds.VPSDE()


@pytest.fixture(scope="session")
def problem():
    """ring2d under VP and its exact score: the problem most tests are judged on."""
    gm, sde = ds.GaussianMixture.ring2d(), ds.VPSDE()
    return gm, sde, gm.score_fn(sde)


ALL_SDES = [ds.VPSDE(), ds.SubVPSDE(), ds.VESDE()]


@pytest.fixture(params=ALL_SDES, ids=lambda s: type(s).__name__)
def any_sde(request):
    return request.param


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
