import os

import pytest
import torch

# The tests run the plain-PyTorch reference unless a test asks for another backend.
os.environ.pop("SSM_KERNELS_BACKEND", None)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
