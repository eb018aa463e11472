"""Test-wide settings. One torch thread: the tests run small tensors, where threads cost
more than they give, and a loaded 2-core machine slows multi-threaded runs many-fold."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402

torch.set_num_threads(1)
