import os

import pytest
import torch

# Two cores: keep torch from oversubscribing them when pytest-xdist or gloo workers run. An
# explicit OMP_NUM_THREADS wins, so `OMP_NUM_THREADS=1 make test` runs the in-process tests on
# one thread too (the suite must pass at 1 and 2).
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 0)
                      or max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
