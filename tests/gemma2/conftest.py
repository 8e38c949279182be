import os

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test here runs on one torch thread (tests/conftest.py)."""


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Corpus, tokenizer and teacher caches go to a session folder, never ~/.cache (tests
    that want their own folder set ALIGNLAB_CACHE again)."""
    old = os.environ.get("ALIGNLAB_CACHE")
    os.environ["ALIGNLAB_CACHE"] = str(tmp_path_factory.mktemp("alignlab-cache"))
    yield
    if old is None:
        os.environ.pop("ALIGNLAB_CACHE", None)
    else:
        os.environ["ALIGNLAB_CACHE"] = old
