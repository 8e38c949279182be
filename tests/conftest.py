import os
from pathlib import Path

import pytest
import torch

# Meta-World runs in its own venv (it pins MuJoCo 3.3.0); `make setup` builds .venv-mw and
# `make test` names it. Running pytest directly finds the same one.
_MW = Path(__file__).resolve().parents[1] / ".venv-mw" / "bin" / "python"
if "ALIGNLAB_METAWORLD_PYTHON" not in os.environ and _MW.exists():
    os.environ["ALIGNLAB_METAWORLD_PYTHON"] = str(_MW)


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
