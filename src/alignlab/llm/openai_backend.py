"""`OpenAICompatible`: a `ChatModel` behind any OpenAI-compatible chat completions endpoint.

OpenAI itself, vLLM, llama.cpp's server, Ollama, ... or `alignlab.llm.server.serve`. The
feedback-gaming repo talks to OpenAI with one client per role (`backend/openai_backend.py`:
`get_response` for replies, `get_next_token_probs_normalized` with `max_tokens=1,
logprobs=True` for ratings); this does the same with the official `openai` package
(`pip install 'alignlab[llm]'`), one instance per role (agent, user, rater, veto, judge, ...).

Settings come from the arguments, else from the environment: `OPENAI_BASE_URL` (default
https://api.openai.com/v1) and `OPENAI_API_KEY`. `OpenAICompatible.from_env(role)` reads a
whole role from the environment instead (`ALIGNLAB_{ROLE}_MODEL`, `_BASE_URL`, `_API_KEY`,
falling back to `OPENAI_MODEL`, `OPENAI_BASE_URL`, `OPENAI_API_KEY`), as the model-combination
experiments (Jones, Dragan & Steinhardt 2024) need a frontier and a weak model, possibly at
two endpoints; `preflight()` checks an endpoint with one one-token request before a long run.
The key is never logged nor shown in a repr or an error message.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit, urlunsplit

from alignlab.core.errors import AlignlabError, did_you_mean
from alignlab.llm.base import (
    NoLogprobsError,
    check_conversations,
    check_sampling,
    check_top,
    merge_logprobs,
)
from alignlab.llm.formats import Message

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
NO_KEY = "EMPTY"  # sent to servers that need no key (vLLM's convention)
ENV_FIELDS = ("MODEL", "BASE_URL", "API_KEY")  # ALIGNLAB_{ROLE}_{FIELD}, else OPENAI_{FIELD}
PREFLIGHT_MESSAGES = [{"role": "user", "content": "Hi"}]


def env_names(role: str) -> dict[str, tuple[str, str]]:
    """Per field (MODEL, BASE_URL, API_KEY), the role's variable and its OPENAI_ fallback:
    role "frontier" reads ALIGNLAB_FRONTIER_MODEL, else OPENAI_MODEL, and so on."""
    stem = re.sub(r"[^A-Z0-9]+", "_", role.upper()).strip("_")
    if not stem:
        raise AlignlabError(
            f"role must contain letters or digits (it names ALIGNLAB_{{ROLE}}_MODEL), got {role!r}"
        )
    prefix = f"ALIGNLAB_{stem}_"
    return {field: (prefix + field, "OPENAI_" + field) for field in ENV_FIELDS}


def from_environment(names: tuple[str, str]) -> tuple[str | None, str | None]:
    """(value, variable) of the first of `names` set to a non-empty value, else (None, None)."""
    for name in names:
        value = os.environ.get(name)
        if value:
            return value, name
    return None, None


def import_openai():
    """The `openai` module, or one clear error saying how to install it."""
    try:
        import openai
    except ImportError:
        raise AlignlabError(
            "OpenAICompatible needs the openai package: pip install 'alignlab[llm]'"
        ) from None
    return openai


def safe_url(url: str) -> str:
    """The URL without any user:password part, for messages."""
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


class OpenAICompatible:
    """A chat model served over the OpenAI chat completions API, for one role.

    `chat` sends one request per conversation, `max_workers` at a time, and returns the
    replies in order; `top_logprobs` asks for one token with `logprobs=True` and returns its
    top alternatives. Unreachable endpoints, rejected keys and unknown models are one
    `AlignlabError` naming the role and the URL; a response without logprobs is a
    `NoLogprobsError`. `timeout` (seconds) and `max_retries` are the `openai` client's.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        role: str = "agent",
        timeout: float = 30.0,
        max_retries: int = 2,
        max_workers: int = 4,
    ):
        if not isinstance(model, str) or not model:
            raise AlignlabError(f"model must be a non-empty model name, got {model!r}")
        if not isinstance(role, str) or not role:
            raise AlignlabError(f"role must be a non-empty name such as 'rater', got {role!r}")
        if max_workers < 1:
            raise AlignlabError(f"max_workers must be >= 1, got {max_workers}")
        if max_retries < 0:
            raise AlignlabError(f"max_retries must be >= 0, got {max_retries}")
        if not timeout > 0:
            raise AlignlabError(f"timeout must be > 0 seconds, got {timeout}")
        openai = import_openai()
        url = base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        if urlsplit(url).scheme not in ("http", "https"):
            raise AlignlabError(
                f"{role} model {model!r}: base_url must start with http:// or https://, "
                f"got {safe_url(url)!r}"
            )
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            if url.rstrip("/") == DEFAULT_BASE_URL:
                raise AlignlabError(
                    f"{role} model {model!r}: no API key for {DEFAULT_BASE_URL}; set "
                    f"OPENAI_API_KEY or pass api_key=, or point base_url / OPENAI_BASE_URL "
                    f"at another server"
                )
            key = NO_KEY
        self.model = model
        self.name = model
        self.role = role
        self.base_url = url.rstrip("/")
        self.max_workers = max_workers
        # where the URL and the key came from, for error messages (from_env names its variables)
        self._url_hint = "base_url or OPENAI_BASE_URL"
        self._key_hint = "api_key or OPENAI_API_KEY"
        self._openai = openai
        self._client = openai.OpenAI(
            api_key=key, base_url=self.base_url, timeout=timeout, max_retries=max_retries
        )
        log.debug("%s model %s at %s", role, model, safe_url(self.base_url))

    @classmethod
    def from_env(cls, role: str, **kwargs) -> OpenAICompatible:
        """The `role`'s model from the environment: `ALIGNLAB_{ROLE}_MODEL`,
        `ALIGNLAB_{ROLE}_BASE_URL` and `ALIGNLAB_{ROLE}_API_KEY` (ROLE upper-cased, e.g.
        FRONTIER, WEAK), each falling back to `OPENAI_MODEL`, `OPENAI_BASE_URL` and
        `OPENAI_API_KEY`. Keyword arguments go to the constructor (`timeout`, `max_retries`,
        `max_workers`, default 8 here); a `model`, `base_url` or `api_key` given there wins
        over the environment.

        Without a model name, or with neither a base URL nor a key, this is one
        `AlignlabError` naming the variables to set. The key is never shown. A base URL from
        `ALIGNLAB_{ROLE}_BASE_URL` is sent only `ALIGNLAB_{ROLE}_API_KEY` (else no key), never
        the `OPENAI_API_KEY` meant for another server.
        """
        if not isinstance(role, str) or not role.strip():
            raise AlignlabError(f"role must be a non-empty name such as 'frontier', got {role!r}")
        names = env_names(role)
        values = {}
        for field, arg in zip(ENV_FIELDS, ("model", "base_url", "api_key")):
            given = kwargs.pop(arg, None)
            values[field] = (given, arg) if given else from_environment(names[field])
        missing = []
        if not values["MODEL"][0]:
            missing.append("MODEL")
        if not values["BASE_URL"][0] and not values["API_KEY"][0]:
            missing.append("BASE_URL")
        if missing:
            own = " and ".join(names[f][0] for f in missing)
            fallback = " / ".join(names[f][1] for f in missing)
            message = f"{role} model: set {own} (or {fallback})"
            if "BASE_URL" in missing:
                message += (
                    f"; for OpenAI's own API set {names['API_KEY'][0]} (or OPENAI_API_KEY) "
                    "instead of a base URL"
                )
            raise AlignlabError(message)
        if (
            values["BASE_URL"][1] == names["BASE_URL"][0]
            and values["API_KEY"][1] == (names["API_KEY"][1])
        ):  # a role's own server never gets the OPENAI_API_KEY meant for another one
            values["API_KEY"] = (NO_KEY, None)
        kwargs.setdefault("max_workers", 8)
        model = cls(
            values["MODEL"][0],
            base_url=values["BASE_URL"][0],
            api_key=values["API_KEY"][0],
            role=role,
            **kwargs,
        )
        url_var, key_var = values["BASE_URL"][1], values["API_KEY"][1]
        model._url_hint = url_var or " or ".join(names["BASE_URL"])
        model._key_hint = key_var or " or ".join(names["API_KEY"])
        return model

    def __repr__(self) -> str:
        return (
            f"OpenAICompatible(model={self.model!r}, role={self.role!r}, "
            f"base_url={safe_url(self.base_url)!r})"
        )

    __str__ = __repr__

    # --- requests ----------------------------------------------------------------------------

    def _where(self) -> str:
        return f"{self.role} model {self.model!r} at {safe_url(self.base_url)}"

    def _scrub(self, text: str) -> str:
        key = self._client.api_key
        return text.replace(key, "***") if key and key != NO_KEY else text

    def _available(self) -> list[str]:
        """The endpoint's model names (best effort: [] when it cannot list them)."""
        try:
            return [m.id for m in self._client.with_options(max_retries=0).models.list()]
        except Exception:
            return []

    def _create(self, **kwargs):
        """One chat completion, or one clear `AlignlabError` naming role and URL."""
        openai = self._openai
        try:
            return self._client.chat.completions.create(model=self.model, **kwargs)
        except openai.APITimeoutError:
            raise AlignlabError(
                f"{self._where()}: the request timed out; is the server overloaded? raise "
                f"timeout= for slow models"
            ) from None
        except openai.APIConnectionError as e:
            reason = self._scrub(str(e.__cause__ or e))
            raise AlignlabError(
                f"{self._where()}: cannot reach the endpoint ({reason}); is the server "
                f"running? check {self._url_hint}"
            ) from None
        except openai.APIStatusError as e:
            status = e.status_code
            if status in (401, 403):
                raise AlignlabError(
                    f"{self._where()}: the endpoint rejected the API key (HTTP {status}); "
                    f"check {self._key_hint}"
                ) from None
            detail = self._scrub(_message(e))
            if status == 404:
                names = self._available()
                hint = did_you_mean(self.model, names)
                if names and "Available models" not in detail:
                    hint = f" Available models: {', '.join(names)}.{hint}"
                elif not names:
                    hint = " Check the model name and the URL (it usually ends in /v1)."
                raise AlignlabError(
                    f"{self._where()}: not found (HTTP 404: {detail}).{hint}"
                ) from None
            raise AlignlabError(f"{self._where()}: HTTP {status}: {detail}") from None
        except openai.OpenAIError as e:  # e.g. a response that is not the API's JSON
            reason = self._scrub(str(e))
            raise AlignlabError(f"{self._where()}: {type(e).__name__}: {reason}") from None

    def preflight(self) -> None:
        """One tiny request (one token, temperature 0) to check the endpoint before a run.

        An unreachable endpoint, a rejected key (HTTP 401/403), an unknown model (HTTP 404,
        with the endpoint's model names when it lists them) or any other failure is one
        `AlignlabError` naming the role, the model and the base URL.
        """
        response = self._create(messages=PREFLIGHT_MESSAGES, max_tokens=1, temperature=0)
        if not getattr(response, "choices", None):
            raise AlignlabError(f"{self._where()}: the endpoint answered with no choices")
        log.debug("preflight of %s passed", self._where())

    def _map(self, fn, items: list) -> list:
        if len(items) <= 1 or self.max_workers == 1:
            return [fn(x) for x in items]
        pool = ThreadPoolExecutor(max_workers=min(self.max_workers, len(items)))
        try:
            return list(pool.map(fn, items))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def chat(
        self,
        conversations: Sequence[Sequence[Message]],
        *,
        max_tokens: int,
        temperature: float = 1.0,
        seed: int | None = None,
    ) -> list[str]:
        convs = check_conversations(conversations)
        check_sampling(max_tokens, temperature, seed)
        extra = {} if seed is None else {"seed": seed}

        def one(messages: list[Message]) -> str:
            response = self._create(
                messages=messages, max_tokens=max_tokens, temperature=temperature, **extra
            )
            if not response.choices:
                raise AlignlabError(f"{self._where()}: the response has no choices")
            return response.choices[0].message.content or ""

        return self._map(one, convs)

    def top_logprobs(
        self, conversations: Sequence[Sequence[Message]], *, top: int = 20
    ) -> list[dict[str, float]]:
        convs = check_conversations(conversations)
        check_top(top)

        def one(messages: list[Message]) -> dict[str, float]:
            response = self._create(
                messages=messages, max_tokens=1, logprobs=True, top_logprobs=top
            )
            choice = response.choices[0] if response.choices else None
            content = choice.logprobs.content if choice and choice.logprobs else None
            if not content or not content[0].top_logprobs:
                raise NoLogprobsError(
                    f"{self._where()}: the endpoint returned no logprobs (it does not "
                    f"implement logprobs=True / top_logprobs)"
                )
            return merge_logprobs((t.token, t.logprob) for t in content[0].top_logprobs)

        return self._map(one, convs)


def _message(error) -> str:
    """The error message an OpenAI-style error body carries, else the exception's text."""
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if body.get("message"):
            return str(body["message"])
    return str(getattr(error, "message", error))
