"""alignlab.llm: chat formats, the local and OpenAI-compatible backends, the loopback server
and ratings. Every HTTP test talks to a real server on 127.0.0.1."""

from __future__ import annotations

import json
import math
import random
import socket
import sys
import urllib.error
import urllib.request

import openai
import pytest
import tokenizers
import torch

from alignlab.core.errors import AlignlabError
from alignlab.gemma2.config import Gemma2Config
from alignlab.gemma2.generate import generate
from alignlab.gemma2.model import Gemma2ForCausalLM
from alignlab.gemma2.tokenizer import Tokenizer
from alignlab.llm import (
    ChatModel,
    GemmaFormat,
    LocalChatModel,
    NoLogprobsError,
    OpenAICompatible,
    PlainFormat,
    check_messages,
    expected_score,
    fold_system,
    rate,
    serve,
)
from alignlab.llm.base import check_conversations

pytestmark = pytest.mark.usefixtures("one_torch_thread")

KEY = "sk-test-secret-4f2a9c"
WORDS = (
    "the a cat dog user agent notes sat ran on mat park friend likes rates score answer "
    "please kindly help with my plan today 1 2 3 4 5 6 7 8 9 10"
).split()


@pytest.fixture(scope="module")
def tokenizer():
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))) for _ in range(400)]
    texts += ["user: hello\nagent: hi<eos>", "notes: be kind\n"] * 20
    return Tokenizer.train(texts, vocab_size=300)


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    cfg = Gemma2Config(
        vocab_size=tokenizer.vocab_size,
        d_model=32,
        intermediate_size=64,
        num_layers=2,
        num_heads=2,
        num_kv_heads=1,
        head_dim=16,
        sliding_window=64,
        max_position_embeddings=256,
    )
    return Gemma2ForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def local(model, tokenizer):
    return LocalChatModel(model, tokenizer, name="tiny")


@pytest.fixture(scope="module")
def server(local):
    with serve({"tiny": local, "fixed": FixedRater()}, api_key=KEY) as s:
        yield s


def client(server, model="tiny", **kw) -> OpenAICompatible:
    kw.setdefault("api_key", KEY)
    return OpenAICompatible(model, base_url=server.url, **kw)


CONVS = [
    [{"role": "user", "content": "hello"}],
    [
        {"role": "system", "content": "be kind"},
        {"role": "user", "content": "rate my plan"},
        {"role": "assistant", "content": "the plan"},
        {"role": "user", "content": "please score it from 1 to 10"},
    ],
    [{"role": "user", "content": "the cat sat on the mat and likes my friend"}],
]


class FixedRater:
    """A ChatModel with fixed answers: the reply is REPLIES[seed % 5] for every conversation,
    and the first-token distribution is TOP."""

    REPLIES = ["7", " 8 because it helps", "no idea", "11", "9/10"]
    TOP = {"7": math.log(0.5), "8": math.log(0.25), "x": math.log(0.25)}

    name = "fixed"

    def chat(self, conversations, *, max_tokens, temperature=1.0, seed=None):
        check_conversations(conversations)
        return [self.REPLIES[(seed or 0) % len(self.REPLIES)] for _ in conversations]

    def top_logprobs(self, conversations, *, top=20):
        return [dict(list(self.TOP.items())[:top]) for _ in conversations]


class Unparseable(FixedRater):
    REPLIES = ["great!", "maybe eleven"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(server, method, path, body=None, key=KEY, raw=None):
    """(status, JSON) of a raw request to the server."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(server.url.removesuffix("/v1") + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


# --- formats -------------------------------------------------------------------------------


def test_plain_format_ids_of_a_two_turn_conversation(tokenizer):
    fmt = PlainFormat(tokenizer)
    enc = tokenizer.encode
    conv = [
        {"role": "system", "content": "be kind"},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi there"},
        {"role": "user", "content": "rate it"},
    ]
    ids = fmt.encode(conv)
    expected = [tokenizer.bos_id] + enc("notes: be kind\n") + enc("user: hello\n") + enc("agent:")
    expected += enc(" hi there") + [tokenizer.eos_id] + enc("user: rate it\n") + enc("agent:")
    assert ids == expected
    assert tokenizer.decode(ids) == (
        "<bos>notes: be kind\nuser: hello\nagent: hi there<eos>user: rate it\nagent:"
    )
    assert fmt.encode(conv, add_generation_prompt=False) == expected[: -len(enc("agent:"))]
    assert fmt.stop_ids() == [tokenizer.eos_id]


@pytest.mark.parametrize("reply", ["hi there", "  7 ", "a, b; c!", "the cat\nsat"])
def test_plain_format_reply_ids_are_a_suffix_of_the_conversation(tokenizer, reply):
    fmt = PlainFormat(tokenizer)
    prefix = CONVS[1]
    whole = fmt.encode([*prefix, {"role": "assistant", "content": reply}], False)
    assert whole == fmt.encode(prefix) + fmt.encode_reply(reply)  # prefix ends with "agent:"
    assert fmt.encode(prefix)[-len(tokenizer.encode("agent:")) :] == tokenizer.encode("agent:")
    assert fmt.encode_reply(reply)[-1] == tokenizer.eos_id


@pytest.fixture(scope="module")
def gemma_tokenizer(tokenizer):
    tok = Tokenizer(tokenizers.Tokenizer.from_str(tokenizer.to_json()))
    tok.tokenizer.add_special_tokens(["<start_of_turn>", "<end_of_turn>"])
    return tok


def test_gemma_format_template_fold_and_reply_suffix(gemma_tokenizer):
    tok = gemma_tokenizer
    fmt = GemmaFormat(tok)
    end = tok.tokenizer.token_to_id("<end_of_turn>")
    conv = [
        {"role": "system", "content": "be kind"},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi there"},
        {"role": "user", "content": "rate it"},
    ]
    assert tok.decode(fmt.encode(conv)) == (
        "<bos><start_of_turn>user\nbe kind\n\nhello<end_of_turn>\n"
        "<start_of_turn>model\nhi there<end_of_turn>\n"
        "<start_of_turn>user\nrate it<end_of_turn>\n<start_of_turn>model\n"
    )
    prefix = conv[:2]
    whole = fmt.encode([*prefix, {"role": "assistant", "content": "the cat sat"}], False)
    assert whole == fmt.encode(prefix) + fmt.encode_reply("the cat sat") + tok.encode("\n")
    assert fmt.encode_reply("x")[-1] == end
    assert fmt.stop_ids() == [end, tok.eos_id]
    with pytest.raises(AlignlabError, match="GemmaFormat needs Gemma's tokenizer"):
        GemmaFormat(
            Tokenizer(tokenizers.Tokenizer.from_str(tok.to_json().replace("_turn>", "_x>")))
        )


def test_fold_system():
    sys_, user = {"role": "system", "content": "S"}, {"role": "user", "content": "U"}
    assert fold_system([sys_, user]) == [{"role": "user", "content": "S\n\nU"}]
    assert fold_system([sys_, sys_, user]) == [{"role": "user", "content": "S\n\nS\n\nU"}]
    assert fold_system([sys_]) == [{"role": "user", "content": "S"}]
    reply = {"role": "assistant", "content": "A"}
    assert fold_system([sys_, reply]) == [{"role": "user", "content": "S"}, reply]
    assert fold_system([user, reply]) == [user, reply]
    original = [sys_, user]
    fold_system(original)
    assert original == [sys_, user]  # the input is not modified


@pytest.mark.parametrize(
    "messages, match",
    [
        ([], "at least one message"),
        ([{"role": "robot", "content": "x"}], r"message 0 must be a dict with 'role' in"),
        ([{"role": "user"}], "and 'content'"),
        ([{"role": "user", "content": "x"}, "hello"], "message 1"),
    ],
)
def test_malformed_messages_are_one_clear_error(messages, match, local):
    with pytest.raises(AlignlabError, match=match):
        check_messages(messages)
    with pytest.raises(AlignlabError, match=match):
        local.chat([CONVS[0], messages], max_tokens=2)


def test_a_single_conversation_instead_of_a_list_says_to_wrap_it(local):
    with pytest.raises(AlignlabError, match=r"wrap it in a list: \[messages\]"):
        local.chat(CONVS[0], max_tokens=2)
    with pytest.raises(AlignlabError, match="conversation 1: message 0"):
        local.top_logprobs([CONVS[0], [{"role": "x", "content": ""}]])


# --- ratings -------------------------------------------------------------------------------


def test_expected_score_by_hand():
    top = {"7": math.log(0.5), "8": math.log(0.25), "x": math.log(0.25)}
    assert expected_score(top) == pytest.approx((7 * 0.5 + 8 * 0.25) / 0.75)  # 7.333...
    assert expected_score(top) == pytest.approx(22 / 3)


def test_expected_score_renormalises_over_valid_tokens_and_strips():
    assert expected_score({"1": math.log(0.01), "3": math.log(0.03)}) == pytest.approx(2.5)
    # " 7" and "7" are the same score; their probabilities add
    top = {" 7": math.log(0.25), "7": math.log(0.25), "9": math.log(0.5), "hello": 0.0}
    assert expected_score(top) == pytest.approx(8.0)
    assert expected_score(top, valid=("7",)) == pytest.approx(7.0)
    assert expected_score({"0": math.log(0.2), "1": math.log(0.6)}, ("0", "1")) == pytest.approx(
        0.75
    )


def test_expected_score_errors():
    with pytest.raises(
        AlignlabError, match=r"none of the score tokens .* 'x', 'y'.*rating_samples"
    ):
        expected_score({"x": -0.1, "y": -3.0})
    with pytest.raises(AlignlabError, match="not a number"):
        expected_score({"a": 0.0}, valid=("a",))


def test_rate_from_logprobs_direct_and_through_the_server(server):
    direct = rate(FixedRater(), CONVS[:2])
    assert direct == pytest.approx([22 / 3, 22 / 3])
    via_http = rate(client(server, "fixed", role="rater"), CONVS[:2])
    assert via_http == pytest.approx(direct, abs=1e-9)


def test_rate_without_logprobs_says_to_sample_and_rating_samples_works():
    with serve({"fixed": FixedRater()}, logprobs_supported=False) as s:
        rater = OpenAICompatible("fixed", base_url=s.url, role="rater", api_key=KEY)
        with pytest.raises(NoLogprobsError) as info:
            rate(rater, CONVS[:2])
        message = str(info.value)
        assert "rater" in message and s.url in message and "rating_samples=n" in message
        assert KEY not in message
        # seeds 0..4 give "7", " 8 because...", "no idea" (dropped), "11" (out of range), "9/10"
        assert rate(rater, CONVS[:2], rating_samples=5, seed=0) == [8.0, 8.0]
        assert rate(FixedRater(), CONVS[:2], rating_samples=5, seed=0) == [8.0, 8.0]
        assert rate(rater, CONVS[:1], rating_samples=1, seed=1) == [8.0]
        with pytest.raises(AlignlabError, match=r"conversation 0: none of the 2 sampled ratings"):
            rate(Unparseable(), CONVS[:1], rating_samples=2, seed=0)
        with pytest.raises(AlignlabError, match="rating_samples must be an integer >= 1"):
            rate(rater, CONVS[:1], rating_samples=0)


# --- the local backend -----------------------------------------------------------------------


def test_chat_models_satisfy_the_protocol(local, server):
    assert isinstance(local, ChatModel)
    assert isinstance(FixedRater(), ChatModel)
    assert isinstance(client(server), ChatModel)
    assert not isinstance(object(), ChatModel)


def test_local_chat_is_deterministic_for_a_seed(local, tokenizer):
    a = local.chat(CONVS, max_tokens=12, seed=3)
    assert a == local.chat(CONVS, max_tokens=12, seed=3)
    assert a != local.chat(CONVS, max_tokens=12, seed=4)
    assert local.chat(CONVS, max_tokens=6, temperature=0) == local.chat(
        CONVS, max_tokens=6, temperature=0
    )
    # the replies are generate's new tokens, without the stop token, decoded and stripped
    prompts = [local.format.encode(c) for c in CONVS]
    g = torch.Generator().manual_seed(3)
    new = generate(local.model, prompts, 12, stop_tokens=[tokenizer.eos_id], generator=g)
    for reply, ids in zip(a, new):
        ids = ids[:-1] if ids[-1] == tokenizer.eos_id else ids
        assert reply == tokenizer.decode(ids, skip_special_tokens=True).strip()
    assert local.chat([], max_tokens=3) == []


def test_local_chat_drops_the_stop_token(model, tokenizer):
    class StopAtOnce(PlainFormat):
        """Every token ends a reply, so each reply is its first token, removed: ''."""

        def stop_ids(self):
            return list(range(tokenizer.vocab_size))

    stopper = LocalChatModel(model, tokenizer, format=StopAtOnce(tokenizer))
    assert stopper.chat(CONVS, max_tokens=5, seed=0) == ["", "", ""]


def test_local_batch_size_keeps_replies_deterministic(model, tokenizer, local):
    small = LocalChatModel(model, tokenizer, batch_size=1)
    # batch size 1 and a shared generator: conversation i's reply equals a lone call's with
    # the generator where the previous ones left it; check the first and the determinism
    assert (
        small.chat(CONVS, max_tokens=8, seed=5)[0] == local.chat(CONVS[:1], max_tokens=8, seed=5)[0]
    )
    assert small.chat(CONVS, max_tokens=8, seed=5) == small.chat(CONVS, max_tokens=8, seed=5)


def test_local_top_logprobs_are_the_next_token_log_softmax(local, model, tokenizer):
    tops = local.top_logprobs(CONVS, top=10)
    for conv, top in zip(CONVS, tops):
        values = list(top.values())
        assert 1 <= len(top) <= 10 and values == sorted(values, reverse=True)
        assert all(v <= 0 for v in values)
        ids = torch.tensor([local.format.encode(conv)])
        with torch.no_grad():
            logprobs = model(ids)[0, -1].float().log_softmax(-1)
        # the 10 most likely ids, those decoding to the same text (e.g. partial UTF-8) merged
        expected: dict[str, list[float]] = {}
        for i in logprobs.topk(10).indices.tolist():
            expected.setdefault(tokenizer.decode([i]), []).append(float(logprobs[i]))
        assert set(top) == set(expected)
        for text, values in expected.items():
            assert top[text] == pytest.approx(float(torch.tensor(values).logsumexp(0)), abs=1e-5)
    everything = local.top_logprobs(CONVS[:1], top=10**6)[0]  # the whole vocabulary
    assert sum(math.exp(v) for v in everything.values()) == pytest.approx(1.0, abs=1e-5)


def test_bad_sampling_settings_are_one_clear_error(local, server):
    for backend in (local, client(server)):
        with pytest.raises(AlignlabError, match="max_tokens must be an integer >= 1"):
            backend.chat(CONVS, max_tokens=0)
        with pytest.raises(AlignlabError, match="temperature must be a number >= 0"):
            backend.chat(CONVS, max_tokens=2, temperature=-1)
        with pytest.raises(AlignlabError, match="top must be an integer >= 1"):
            backend.top_logprobs(CONVS, top=0)


def test_min_p_is_passed_to_generate(model, tokenizer):
    # min-p 1 keeps only the most likely token: sampling at temperature 1 is then greedy
    greedy = LocalChatModel(model, tokenizer).chat(CONVS, max_tokens=4, temperature=0)
    top_only = LocalChatModel(model, tokenizer, min_p=1.0)
    assert top_only.chat(CONVS, max_tokens=4, temperature=1.0, seed=0) == greedy
    with pytest.raises(AlignlabError, match="min_p must be in"):
        LocalChatModel(model, tokenizer, min_p=1.5)


# --- the server and the OpenAI-compatible backend --------------------------------------------


def test_replies_through_the_server_equal_direct_replies(server, local):
    remote = client(server, role="agent")
    for temperature in (1.0, 0.0):
        via_http = remote.chat(CONVS, max_tokens=10, temperature=temperature, seed=11)
        direct = [
            local.chat([c], max_tokens=10, temperature=temperature, seed=11)[0] for c in CONVS
        ]
        assert via_http == direct


def test_top_logprobs_through_the_server_equal_direct_values(server, local):
    via_http = client(server, role="rater").top_logprobs(CONVS, top=20)
    direct = local.top_logprobs(CONVS, top=20)
    for a, b in zip(via_http, direct):
        assert list(a) == list(b)
        for token in a:
            assert a[token] == pytest.approx(b[token], abs=1e-5)


def test_the_official_openai_client_reads_the_responses(server, local):
    oai = openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0)
    assert [m.id for m in oai.models.list()] == ["tiny", "fixed"]
    r = oai.chat.completions.create(
        model="tiny", messages=CONVS[1], max_tokens=8, seed=2, n=3, logprobs=True, top_logprobs=5
    )
    assert r.object == "chat.completion" and r.model == "tiny" and r.id.startswith("chatcmpl-")
    assert [c.message.content for c in r.choices] == local.chat(
        [CONVS[1]] * 3, max_tokens=8, seed=2
    )
    assert [c.index for c in r.choices] == [0, 1, 2]
    first = r.choices[0].logprobs.content[0]
    top = local.top_logprobs([CONVS[1]], top=5)[0]
    assert [t.token for t in first.top_logprobs] == list(top)
    assert [t.logprob for t in first.top_logprobs] == pytest.approx(list(top.values()))
    assert first.token in top and first.logprob == pytest.approx(top[first.token])
    assert r.usage.prompt_tokens == len(local.format.encode(CONVS[1]))
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_response_json_has_openai_shape(server):
    body = {"model": "fixed", "messages": CONVS[0], "max_completion_tokens": 3, "logprobs": True}
    status, r = http(server, "POST", "/v1/chat/completions", body)
    assert status == 200
    assert set(r) >= {"id", "object", "created", "model", "choices", "usage"}
    assert isinstance(r["created"], int) and r["object"] == "chat.completion"
    (choice,) = r["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"] == "7"
    (entry,) = choice["logprobs"]["content"]
    assert entry["token"] == "7" and entry["bytes"] == [55]
    assert entry["logprob"] == pytest.approx(math.log(0.5))
    assert entry["top_logprobs"] == []  # top_logprobs not asked for
    assert set(r["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    # developer role and text parts are accepted
    parts = [{"role": "developer", "content": [{"type": "text", "text": "be brief"}]}]
    status, r = http(server, "POST", "/v1/chat/completions", {"model": "fixed", "messages": parts})
    assert status == 200 and r["choices"][0]["logprobs"] is None


@pytest.mark.parametrize(
    "body, status, match",
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "must be a JSON object"),
        ({"model": "nope", "messages": CONVS[0]}, 404, "`nope` does not exist"),
        ({"model": "tiny"}, 400, "'messages' must be a non-empty list"),
        ({"model": "tiny", "messages": [{"role": "tool", "content": "x"}]}, 400, "role 'tool'"),
        ({"model": "tiny", "messages": CONVS[0], "max_tokens": 0}, 400, "'max_tokens'"),
        ({"model": "tiny", "messages": CONVS[0], "stream": True}, 400, "streaming"),
        ({"model": "tiny", "messages": CONVS[0], "top_logprobs": 3}, 400, "needs 'logprobs'"),
    ],
)
def test_bad_requests_get_openai_error_json(server, body, status, match):
    raw = body if isinstance(body, bytes) else None
    got, r = http(server, "POST", "/v1/chat/completions", None if raw else body, raw=raw)
    assert got == status
    assert set(r["error"]) == {"message", "type", "param", "code"}
    assert match in r["error"]["message"]


def test_models_listing_auth_and_unknown_urls(server):
    status, r = http(server, "GET", "/v1/models")
    assert status == 200 and r["object"] == "list"
    assert [m["id"] for m in r["data"]] == ["tiny", "fixed"]
    assert http(server, "GET", "/v1/models/tiny")[1]["id"] == "tiny"
    assert http(server, "GET", "/v1/models/nope")[0] == 404
    assert http(server, "GET", "/v1/nothing")[1]["error"]["code"] == "unknown_url"
    status, r = http(server, "GET", "/v1/models", key=None)
    assert status == 401 and r["error"]["code"] == "invalid_api_key"
    assert http(server, "GET", "/v1/models", key="wrong")[0] == 401


def test_unreachable_endpoint_names_role_and_url_not_the_key():
    url = f"http://127.0.0.1:{free_port()}/v1"
    judge = OpenAICompatible("tiny", base_url=url, api_key=KEY, role="judge", max_retries=0)
    with pytest.raises(AlignlabError) as info:
        judge.chat(CONVS, max_tokens=3)
    message = str(info.value)
    assert "judge" in message and url in message and "cannot reach" in message
    assert KEY not in message
    with pytest.raises(AlignlabError, match="cannot reach"):
        judge.top_logprobs(CONVS)


def test_wrong_api_key_is_a_401_error_without_the_key(server):
    wrong = "sk-wrong-key-123456"
    with pytest.raises(AlignlabError) as info:
        client(server, api_key=wrong, role="veto").chat(CONVS, max_tokens=3)
    message = str(info.value)
    assert "401" in message and "veto" in message and server.url in message
    assert wrong not in message and KEY not in message


def test_unknown_model_is_an_error_listing_the_models(server):
    with pytest.raises(AlignlabError) as info:
        client(server, "tiyn", role="user").chat(CONVS, max_tokens=3)
    message = str(info.value)
    assert "404" in message and "'tiyn'" in message and server.url in message
    assert "Did you mean: tiny" in message


def test_settings_from_the_environment_and_the_key_never_shown(server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    user = OpenAICompatible("tiny", role="user")
    assert user.base_url == server.url
    assert len(user.chat(CONVS[:2], max_tokens=4, seed=0)) == 2
    for text in (repr(user), str(user), repr(client(server))):
        assert KEY not in text and server.url in text
    monkeypatch.delenv("OPENAI_BASE_URL")
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(AlignlabError, match="no API key for https://api.openai.com/v1"):
        OpenAICompatible("gpt-4o-mini", role="judge")


def test_missing_openai_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "openai", None)  # what `import openai` sees when absent
    with pytest.raises(AlignlabError, match=r"pip install 'alignlab\[llm\]'"):
        OpenAICompatible("tiny", base_url="http://127.0.0.1:1/v1")


def test_serve_checks_its_models_and_closes(local):
    with pytest.raises(AlignlabError, match="not a ChatModel"):
        serve({"x": object()})
    with pytest.raises(AlignlabError, match="non-empty dict"):
        serve({})
    s = serve({"tiny": local})
    port = s.port
    assert s.url == f"http://127.0.0.1:{port}/v1" and "serving" in repr(s)
    s.close()
    s.close()  # idempotent
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # nothing listens any more
