import os

import pytest
import torch

# The tests run the plain-PyTorch reference unless a test asks for another backend.
os.environ.pop("SSM_KERNELS_BACKEND", None)
# Without a GPU the Triton kernels run under Triton's interpreter (set before ssm_kernels is imported),
# with every output buffer NaN-poisoned so that an element a kernel does not write fails the test.
if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
os.environ["SSM_KERNELS_POISON"] = "1"  # read when ssm_kernels.triton is imported


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
