import os

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


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Corpus, tokenizer and teacher caches go to a folder of this test run, never ~/.cache (tests
    that want their own folder set ALIGNLAB_CACHE again)."""
    old = os.environ.get("ALIGNLAB_CACHE")
    os.environ["ALIGNLAB_CACHE"] = str(tmp_path_factory.mktemp("alignlab-cache"))
    yield
    if old is None:
        os.environ.pop("ALIGNLAB_CACHE", None)
    else:
        os.environ["ALIGNLAB_CACHE"] = old
