"""One torch thread per test here: these tests run many tiny forward passes, and on a small shared CPU torch's
intra-op threads spin-wait against each other (measured: 0.02 s vs 10 s for the same 25 decoding steps).

The test modules share their small networks and batches through ``_helpers.py``: tests/ is no package (pytest runs
with ``--import-mode=importlib``), so it is loaded here, by file, once, as the module ``nn_helpers``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

if "nn_helpers" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("nn_helpers", Path(__file__).with_name("_helpers.py"))
    sys.modules["nn_helpers"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["nn_helpers"])


@pytest.fixture(autouse=True)
def _one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
