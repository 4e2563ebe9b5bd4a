import os
import random

import numpy as np
import pytest
import torch

os.environ.setdefault("PYTHONHASHSEED", "0")
# One intra-op thread: robust when the 2 cores are shared (oversubscription is 10x slower).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
