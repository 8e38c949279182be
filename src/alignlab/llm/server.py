"""A real OpenAI-compatible HTTP server for any `ChatModel`, on the standard library.

`serve({"name": model, ...})` starts `http.server.ThreadingHTTPServer` in a daemon thread and
returns a `LoopbackServer` (a context manager) whose `.url` is the base URL an OpenAI client
takes (`http://127.0.0.1:PORT/v1`). It implements

- `GET /v1/models` and `GET /v1/models/{id}`;
- `POST /v1/chat/completions` with `model`, `messages` (roles system, developer, user,
  assistant; content a string or a list of text parts), `max_tokens` or
  `max_completion_tokens`, `temperature`, `seed`, `n`, `logprobs` and `top_logprobs`;
  other fields are ignored, `stream: true` is refused.

Responses and errors have the OpenAI API's JSON shapes, so the official `openai` client,
`OpenAICompatible`, or any other tool can talk to our small models, and the feedback-gaming
system's tests run against a real endpoint. `logprobs_supported=False` answers
`"logprobs": null`, as servers without logprobs do; `api_key=` requires
`Authorization: Bearer <key>`.

A `ChatModel` only gives the logprobs of a reply's first token, so `logprobs.content` has one
entry: the first token. `top_logprobs` is the model's `top_logprobs(top=k)`, exactly as a
direct call gives it; the entry's `token` is the likeliest of these candidates that the reply
starts with (the likeliest candidate when none does; 20 candidates when k is 0).
`finish_reason` is always "stop"; `usage` counts tokens when the model has a `usage` method
(`LocalChatModel` does), else reports zeros.
"""

from __future__ import annotations

import hmac
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from alignlab.core.errors import AlignlabError
from alignlab.llm.base import ChatModel, NoLogprobsError

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 256
MATCH_TOP = 20  # candidates looked at to name the reply's first token when top_logprobs is 0
MAX_BODY = 16 * 2**20
ROLE_ALIASES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class RequestError(Exception):
    """An HTTP error answered in OpenAI's error shape."""

    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def error_body(message: str, param: str | None = None, code: str | None = None) -> dict:
    kind = "server_error" if code == "internal_error" else "invalid_request_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _int(body: dict, key: str, default: int | None, low: int) -> int | None:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise RequestError(400, f"'{key}' must be an integer >= {low}, got {value!r}", key)
    return value


def _text(content: Any, i: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise RequestError(
                    400, f"messages[{i}].content: only text parts are supported", "messages"
                )
            parts.append(str(part.get("text", "")))
        return "".join(parts)
    raise RequestError(400, f"messages[{i}].content must be a string or text parts", "messages")


def parse_messages(messages: Any) -> list[dict[str, str]]:
    """OpenAI messages as our `Message`s (developer -> system, text parts joined)."""
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "'messages' must be a non-empty list", "messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLE_ALIASES:
            role = m.get("role") if isinstance(m, dict) else None
            raise RequestError(
                400,
                f"messages[{i}]: role {role!r} is not supported; roles: {', '.join(ROLE_ALIASES)}",
                "messages",
            )
        out.append({"role": ROLE_ALIASES[m["role"]], "content": _text(m.get("content"), i)})
    return out


def _entry(token: str, logprob: float) -> dict:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


def first_token(reply: str, top: Mapping[str, float]) -> str:
    """The candidate the reply starts with (the longest; the likeliest among equals), else
    the likeliest candidate. Replies are stripped, so candidates are compared stripped too."""
    starts = [t for t in top if t.strip() and reply.lstrip().startswith(t.strip())]
    if starts:
        return max(starts, key=lambda t: (len(t.strip()), top[t]))
    return max(top, key=top.__getitem__)


def logprobs_block(reply: str, top: Mapping[str, float], k: int) -> dict:
    token = first_token(reply, top)
    alternatives = [_entry(t, lp) for t, lp in list(top.items())[:k]]
    return {
        "content": [{**_entry(token, top[token]), "top_logprobs": alternatives}],
        "refusal": None,
    }


def chat_completion(
    models: Mapping[str, ChatModel], body: Any, logprobs_supported: bool = True
) -> dict:
    """The response to a chat completions request body, or a `RequestError`."""
    if not isinstance(body, dict):
        raise RequestError(400, "the request body must be a JSON object")
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise RequestError(400, "'model' is required (a model name)", "model")
    if name not in models:
        raise RequestError(
            404,
            f"The model `{name}` does not exist. Available models: {', '.join(models)}",
            "model",
            "model_not_found",
        )
    model = models[name]
    conversation = parse_messages(body.get("messages"))
    if body.get("stream"):
        raise RequestError(400, "streaming is not supported by this server", "stream")
    max_tokens = _int(body, "max_completion_tokens", None, 1)
    max_tokens = _int(body, "max_tokens", max_tokens or DEFAULT_MAX_TOKENS, 1)
    n = _int(body, "n", 1, 1)
    seed = _int(body, "seed", None, -(2**63))
    top = _int(body, "top_logprobs", 0, 0)
    temperature = body.get("temperature")
    temperature = 1.0 if temperature is None else temperature
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or temperature < 0:
        raise RequestError(
            400, f"'temperature' must be a number >= 0, got {temperature!r}", "temperature"
        )
    want_logprobs = body.get("logprobs") or False
    if not isinstance(want_logprobs, bool):
        raise RequestError(400, f"'logprobs' must be a boolean, got {want_logprobs!r}", "logprobs")
    if body.get("top_logprobs") is not None and not want_logprobs:
        raise RequestError(400, "'top_logprobs' needs 'logprobs': true", "top_logprobs")

    try:
        replies = model.chat(
            [conversation] * n, max_tokens=max_tokens, temperature=float(temperature), seed=seed
        )
        top_dict = None
        if want_logprobs and logprobs_supported:
            try:
                top_dict = model.top_logprobs([conversation], top=top or MATCH_TOP)[0]
            except NoLogprobsError:
                top_dict = None
    except AlignlabError as e:
        raise RequestError(400, str(e), "messages") from None

    prompt_tokens = completion_tokens = 0
    if callable(getattr(model, "usage", None)):
        prompt_tokens, completion_tokens = model.usage(conversation, replies)
    choices = [
        {
            "index": j,
            "message": {"role": "assistant", "content": reply, "refusal": None},
            "logprobs": logprobs_block(reply, top_dict, top) if top_dict else None,
            "finish_reason": "stop",
        }
        for j, reply in enumerate(replies)
    ]
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": name,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
        "system_fingerprint": None,
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, models, api_key, logprobs_supported):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.models = dict(models)
        self.api_key = api_key
        self.logprobs_supported = logprobs_supported
        self.created = int(time.time())
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the openai client expects
    server_version = "alignlab-llm"
    timeout = 60  # an idle keep-alive connection is closed after this many seconds
    server: _Server

    def log_message(self, format: str, *args) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, e: RequestError) -> None:
        self._send(e.status, error_body(e.message, e.param, e.code))

    def _authorised(self) -> bool:
        key = self.server.api_key
        if key is None:
            return True
        given = self.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {key}".encode()):
            return True
        self._error(RequestError(401, "Incorrect API key provided.", None, "invalid_api_key"))
        return False

    def _model_card(self, name: str) -> dict:
        return {
            "id": name,
            "object": "model",
            "created": self.server.created,
            "owned_by": "alignlab",
        }

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        if not self._authorised():
            return
        if path == "/v1/models":
            data = [self._model_card(name) for name in self.server.models]
            self._send(200, {"object": "list", "data": data})
        elif path.startswith("/v1/models/") and path[len("/v1/models/") :] in self.server.models:
            self._send(200, self._model_card(path[len("/v1/models/") :]))
        elif path.startswith("/v1/models/"):
            name = path[len("/v1/models/") :]
            self._error(
                RequestError(404, f"The model `{name}` does not exist.", "model", "model_not_found")
            )
        else:
            self._unknown_url()

    def _unknown_url(self) -> None:
        self._error(
            RequestError(
                404,
                f"Unknown request URL: {self.command} {self.path}. This server implements "
                f"GET /v1/models and POST /v1/chat/completions.",
                None,
                "unknown_url",
            )
        )

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True
            self._error(RequestError(400, "a JSON body with a valid Content-Length is required"))
            return
        raw = self.rfile.read(length)
        if not self._authorised():
            return
        if path != "/v1/chat/completions":
            self._unknown_url()
            return
        try:
            try:
                body = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise RequestError(400, f"the request body is not valid JSON: {e}") from None
            self._send(
                200, chat_completion(self.server.models, body, self.server.logprobs_supported)
            )
        except RequestError as e:
            self._error(e)
        except Exception as e:  # a model failing must not kill the connection silently
            log.exception("chat completion failed")
            self._error(
                RequestError(
                    500, f"internal error: {type(e).__name__}: {e}", None, "internal_error"
                )
            )


class LoopbackServer:
    """A running `serve` server: `.url` for clients, `.close()` (or `with`) to stop it."""

    def __init__(self, httpd: _Server, thread: threading.Thread, host: str):
        self._httpd = httpd
        self._thread = thread
        self.host = host
        self.port = httpd.server_address[1]
        shown = "127.0.0.1" if host in ("", "0.0.0.0") else host
        shown = f"[{shown}]" if ":" in shown else shown
        self.url = f"http://{shown}:{self.port}/v1"
        self.closed = False

    @property
    def models(self) -> dict[str, ChatModel]:
        return self._httpd.models

    def close(self) -> None:
        """Stop serving and free the port (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> LoopbackServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "serving"
        return f"LoopbackServer({self.url}, models={list(self.models)}, {state})"


def serve(
    models: Mapping[str, ChatModel],
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    api_key: str | None = None,
    logprobs_supported: bool = True,
) -> LoopbackServer:
    """Serve `models` (name -> ChatModel) over the OpenAI chat API; port 0 picks a free port.

    The default host is loopback; another host exposes the models to the network, so pass an
    `api_key` then.
    """
    if not isinstance(models, Mapping) or not models:
        raise AlignlabError("serve needs a non-empty dict of model name -> ChatModel")
    for name, model in models.items():
        if not isinstance(name, str) or not name:
            raise AlignlabError(f"model names must be non-empty strings, got {name!r}")
        if not isinstance(model, ChatModel):
            raise AlignlabError(
                f"models[{name!r}] is a {type(model).__name__}, not a ChatModel (it needs "
                f"name, chat and top_logprobs)"
            )
    try:
        httpd = _Server((host, port), models, api_key, logprobs_supported)
    except OSError as e:
        raise AlignlabError(f"cannot serve on {host}:{port}: {e.strerror or e}") from None
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name="llm-serve"
    )
    thread.start()
    server = LoopbackServer(httpd, thread, host)
    log.info("serving %s at %s", ", ".join(models), server.url)
    return server
