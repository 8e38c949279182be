import pytest
import toy_experiment


@pytest.fixture
def toy(monkeypatch):
    """The toy training experiment, with crashes off unless a test turns them on."""
    monkeypatch.setattr(toy_experiment, "CRASH_AT", -1)
    return toy_experiment
