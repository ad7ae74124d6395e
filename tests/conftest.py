import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("HESSNORM_TEST_THREADS", "2")))


@pytest.fixture(scope="session")
def problems():
    """Float64 operators and their dense Hessians for the reference problems (built once)."""
    from hessnorm.estimators import exact
    from hessnorm.testing import make_problem

    out = {}
    for name in ("mlp", "conv_bn", "transformer"):
        op = make_problem(name)
        out[name] = (op, exact.hessian(op))
    return out
