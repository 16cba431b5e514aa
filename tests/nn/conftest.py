"""One torch thread per test here: these tests run many tiny forward passes, and on a small shared CPU torch's
intra-op threads spin-wait against each other (measured: 0.02 s vs 10 s for the same 25 decoding steps)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
