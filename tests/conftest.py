import pytest
import torch


@pytest.fixture
def one_torch_thread():
    """Tiny models: one thread is faster, and far faster when other jobs share the CPU.
    Folders of such tests use it in their own conftest.py (autouse)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
