import pytest
import torch

import diffsolve as ds


@pytest.fixture(scope="session")
def ring():
    return ds.GaussianMixture.ring2d()


@pytest.fixture(scope="session")
def vp():
    return ds.VPSDE()


ALL_SDES = [ds.VPSDE(), ds.SubVPSDE(), ds.VESDE()]


@pytest.fixture(params=ALL_SDES, ids=lambda s: type(s).__name__)
def any_sde(request):
    return request.param


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
