import pytest
import torch


@pytest.fixture(autouse=True, scope="package")
def _flush_denormals():
    """Random-weight detectors produce denormal floats, 10x slower on CPU: flush them here."""
    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)
