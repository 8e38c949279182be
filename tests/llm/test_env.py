"""OpenAICompatible.from_env (per-role environment variables) and preflight, against a real
loopback server on 127.0.0.1."""

from __future__ import annotations

import socket

import pytest

from alignlab.core.errors import AlignlabError
from alignlab.llm import OpenAICompatible, serve
from alignlab.llm.base import check_conversations

KEY = "sk-env-secret-8d1e7b"
ROLES = ("FRONTIER", "WEAK")
FIELDS = ("MODEL", "BASE_URL", "API_KEY")


class Echo:
    """A ChatModel that answers every conversation with its last message."""

    name = "echo"

    def chat(self, conversations, *, max_tokens, temperature=1.0, seed=None):
        return [c[-1]["content"] for c in check_conversations(conversations)]

    def top_logprobs(self, conversations, *, top=20):
        return [{"a": 0.0} for _ in check_conversations(conversations)]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for field in FIELDS:
        monkeypatch.delenv(f"OPENAI_{field}", raising=False)
        for role in ROLES:
            monkeypatch.delenv(f"ALIGNLAB_{role}_{field}", raising=False)


@pytest.fixture(scope="module")
def server():
    with serve({"echo": Echo()}, api_key=KEY) as s:
        yield s


def closed_port() -> int:
    """A port nothing listens on: bound, then closed."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_role_variables_win_over_the_openai_fallbacks(monkeypatch, server):
    monkeypatch.setenv("OPENAI_MODEL", "fallback-model")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fallback")
    monkeypatch.setenv("ALIGNLAB_FRONTIER_MODEL", "echo")
    monkeypatch.setenv("ALIGNLAB_FRONTIER_BASE_URL", server.url)
    monkeypatch.setenv("ALIGNLAB_FRONTIER_API_KEY", KEY)
    frontier = OpenAICompatible.from_env("frontier", max_retries=0)
    assert (frontier.role, frontier.model, frontier.base_url) == ("frontier", "echo", server.url)
    assert frontier.max_workers == 8
    assert frontier.chat([[{"role": "user", "content": "hi"}]], max_tokens=2) == ["hi"]
    assert KEY not in repr(frontier)
    # the weak role has no variables of its own: every field falls back to OPENAI_*
    weak = OpenAICompatible.from_env("weak", max_workers=2)
    assert (weak.model, weak.base_url, weak.max_workers) == (
        "fallback-model",
        "http://127.0.0.1:1/v1",
        2,
    )
    # fields fall back one by one, and explicit arguments win over the environment
    monkeypatch.setenv("ALIGNLAB_WEAK_MODEL", "echo")
    weak = OpenAICompatible.from_env("Weak")
    assert (weak.model, weak.base_url) == ("echo", "http://127.0.0.1:1/v1")
    assert OpenAICompatible.from_env("weak", model="other").model == "other"


def test_a_key_without_a_base_url_means_openais_own_api(monkeypatch):
    monkeypatch.setenv("ALIGNLAB_WEAK_MODEL", "gpt-4o-mini")
    monkeypatch.setenv("ALIGNLAB_WEAK_API_KEY", KEY)
    weak = OpenAICompatible.from_env("weak")
    assert weak.base_url == "https://api.openai.com/v1" and KEY not in repr(weak)


@pytest.mark.parametrize(
    "env, expected",
    [
        (
            {},
            "frontier model: set ALIGNLAB_FRONTIER_MODEL and ALIGNLAB_FRONTIER_BASE_URL "
            "(or OPENAI_MODEL / OPENAI_BASE_URL); for OpenAI's own API set "
            "ALIGNLAB_FRONTIER_API_KEY (or OPENAI_API_KEY) instead of a base URL",
        ),
        (
            {"ALIGNLAB_FRONTIER_BASE_URL": "http://127.0.0.1:1/v1"},
            "frontier model: set ALIGNLAB_FRONTIER_MODEL (or OPENAI_MODEL)",
        ),
        (
            {"OPENAI_MODEL": "m", "ALIGNLAB_WEAK_API_KEY": KEY},  # the weak role's key only
            "frontier model: set ALIGNLAB_FRONTIER_BASE_URL (or OPENAI_BASE_URL)",
        ),
    ],
)
def test_missing_settings_are_one_error_naming_the_variables(monkeypatch, env, expected):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(AlignlabError) as info:
        OpenAICompatible.from_env("frontier")
    assert str(info.value).startswith(expected)
    assert KEY not in str(info.value)
    with pytest.raises(AlignlabError, match="role must be a non-empty name"):
        OpenAICompatible.from_env("")


def frontier(monkeypatch, url: str, model: str = "echo", key: str = KEY) -> OpenAICompatible:
    monkeypatch.setenv("ALIGNLAB_FRONTIER_MODEL", model)
    monkeypatch.setenv("ALIGNLAB_FRONTIER_BASE_URL", url)
    monkeypatch.setenv("ALIGNLAB_FRONTIER_API_KEY", key)
    return OpenAICompatible.from_env("frontier", max_retries=0, timeout=10)


def test_preflight_passes_for_a_served_model(monkeypatch, server):
    assert frontier(monkeypatch, server.url).preflight() is None


def preflight_error(model: OpenAICompatible) -> str:
    with pytest.raises(AlignlabError) as info:
        model.preflight()
    return str(info.value)


def test_preflight_names_an_unknown_model_and_the_url(monkeypatch, server):
    message = preflight_error(frontier(monkeypatch, server.url, model="echoo"))
    assert "frontier model 'echoo'" in message and server.url in message
    assert "404" in message and "Did you mean: echo" in message
    assert KEY not in message


def test_preflight_names_a_rejected_key_without_showing_it(monkeypatch, server):
    wrong = "sk-wrong-env-key-5a5a"
    message = preflight_error(frontier(monkeypatch, server.url, key=wrong))
    assert "frontier model 'echo'" in message and server.url in message and "401" in message
    assert "ALIGNLAB_FRONTIER_API_KEY" in message
    assert wrong not in message and KEY not in message


def test_preflight_names_an_unreachable_endpoint(monkeypatch):
    url = f"http://127.0.0.1:{closed_port()}/v1"
    message = preflight_error(frontier(monkeypatch, url))
    assert "frontier model 'echo'" in message and url in message and "cannot reach" in message
    assert "ALIGNLAB_FRONTIER_BASE_URL" in message
    assert KEY not in message


def test_a_roles_own_server_is_not_sent_the_openai_key(monkeypatch, clean_env):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-meant-for-openai")
    monkeypatch.setenv("ALIGNLAB_WEAK_MODEL", "llama")
    monkeypatch.setenv("ALIGNLAB_WEAK_BASE_URL", "http://127.0.0.1:9/v1")
    weak = OpenAICompatible.from_env("weak")
    assert weak._client.api_key == "EMPTY"
    monkeypatch.setenv("ALIGNLAB_WEAK_API_KEY", "own-key")
    assert OpenAICompatible.from_env("weak")._client.api_key == "own-key"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_MODEL", "m")  # the OPENAI_ pair still goes together
    assert OpenAICompatible.from_env("frontier")._client.api_key == "sk-meant-for-openai"
