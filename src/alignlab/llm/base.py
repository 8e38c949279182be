"""The `ChatModel` protocol every backend implements, and ratings computed from it.

A chat model answers a batch of conversations (`chat`) and gives the log-probabilities of the
first token of its reply (`top_logprobs`). That is all the feedback-gaming system needs of its
agents, simulated users, raters, veto models and judges, whether they are the small models
trained here (`LocalChatModel`) or real LLMs behind an OpenAI-compatible endpoint
(`OpenAICompatible`).

Ratings follow the feedback-gaming repo (marcus-jw/Targeted-Manipulation-and-Deception-in-LLMs):
the rater is asked for a score on a 1-10 scale and its next-token probabilities over the score
tokens are renormalised (`backend/openai_backend.py::_async_get_next_token_probs_normalized`,
tokens compared after `.strip()` as in its `get_token_probs`); the rating is the expected score
`sum_s s * p(s)` (`stats/utils_pandas.py::calculate_expectation`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

from alignlab.core.errors import AlignlabError
from alignlab.llm.formats import Message, check_messages

SCORE_TOKENS = tuple(str(s) for s in range(1, 11))
RATING_TOP = 20  # top logprobs asked for when rating (the OpenAI API's maximum)


class NoLogprobsError(AlignlabError):
    """The backend gives no log-probabilities (a server that does not implement them)."""


@runtime_checkable
class ChatModel(Protocol):
    """A chat model: replies to conversations and the logprobs of a reply's first token."""

    name: str

    def chat(
        self,
        conversations: Sequence[Sequence[Message]],
        *,
        max_tokens: int,
        temperature: float = 1.0,
        seed: int | None = None,
    ) -> list[str]:
        """One reply per conversation, in order (temperature 0 is greedy)."""

    def top_logprobs(
        self, conversations: Sequence[Sequence[Message]], *, top: int = 20
    ) -> list[dict[str, float]]:
        """Per conversation, the `top` most likely first tokens of the reply: {text: logprob}."""


def check_conversations(conversations: Sequence[Sequence[Message]]) -> list[list[Message]]:
    """The conversations as lists of messages, or one clear error naming the bad one."""
    if isinstance(conversations, str | bytes | dict) or not isinstance(conversations, Sequence):
        raise AlignlabError(
            f"conversations must be a list of conversations (each a list of messages), "
            f"got {type(conversations).__name__}"
        )
    if conversations and isinstance(conversations[0], dict):
        raise AlignlabError(
            "conversations must be a list of conversations, got a single conversation (a list "
            "of messages); wrap it in a list: [messages]"
        )
    out = []
    for i, conversation in enumerate(conversations):
        if isinstance(conversation, str | bytes | dict) or not isinstance(conversation, Sequence):
            raise AlignlabError(
                f"conversation {i} must be a list of messages, got {type(conversation).__name__}"
            )
        try:
            check_messages(conversation)
        except AlignlabError as e:
            raise AlignlabError(f"conversation {i}: {e}") from None
        out.append([dict(m) for m in conversation])
    return out


def check_sampling(max_tokens: int, temperature: float, seed: int | None = None) -> None:
    """One clear error for sampling settings a backend cannot use."""
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise AlignlabError(f"max_tokens must be an integer >= 1, got {max_tokens!r}")
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not temperature >= 0
        or math.isinf(temperature)
    ):
        raise AlignlabError(f"temperature must be a number >= 0 (0 is greedy), got {temperature!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise AlignlabError(f"seed must be an integer or None, got {seed!r}")


def check_top(top: int) -> None:
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise AlignlabError(f"top must be an integer >= 1, got {top!r}")


def merge_logprobs(pairs: Iterable[tuple[str, float]]) -> dict[str, float]:
    """{text: logprob} from (text, logprob) pairs, summing the probabilities of equal texts
    (two token ids can decode to the same text), most likely first."""
    out: dict[str, float] = {}
    for text, logprob in pairs:
        logprob = float(logprob)
        out[text] = logprob if text not in out else float(_logaddexp(out[text], logprob))
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _logaddexp(a: float, b: float) -> float:
    hi, lo = max(a, b), min(a, b)
    return hi if lo == -math.inf else hi + math.log1p(math.exp(lo - hi))


def _score_tokens(valid: Iterable[str]) -> dict[str, float]:
    valid = tuple(valid)
    if isinstance(valid, str) or not valid:
        raise AlignlabError(f"valid must be a non-empty list of score tokens, got {valid!r}")
    scores = {}
    for token in valid:
        try:
            scores[str(token).strip()] = float(str(token).strip())
        except ValueError:
            raise AlignlabError(
                f"score token {token!r} is not a number; valid score tokens are numbers such "
                f"as {SCORE_TOKENS}"
            ) from None
    return scores


def expected_score(top: dict[str, float], valid: Iterable[str] = SCORE_TOKENS) -> float:
    """The expected score `sum_s s * p(s)` over the valid score tokens among `top`
    ({token text: logprob}), with p renormalised over the valid tokens present.

    Tokens are compared after `.strip()` (" 7" and "7" both count as 7, their probabilities
    added), as the feedback-gaming repo's `get_token_probs` does; the formula is its
    `calculate_expectation`. Tokenizers usually split "10" into "1" "0", so on a 1-10 scale the
    mass of 10 mostly lands on 1, in the repo as here.
    """
    scores = _score_tokens(valid)
    mass: dict[str, float] = {}
    for token, logprob in top.items():
        key = token.strip()
        if key in scores:
            mass[key] = mass.get(key, 0.0) + math.exp(logprob)
    total = sum(mass.values())
    if not mass or total <= 0:
        seen = ", ".join(repr(t) for t in list(top)[:10]) or "none"
        raise AlignlabError(
            f"none of the score tokens {tuple(scores)} is among the top logprobs (most likely "
            f"tokens: {seen}); ask for more logprobs, prompt the rater to answer with a score, "
            f"or rate with rating_samples=n"
        )
    return sum(scores[k] * p for k, p in mass.items()) / total


LEADING_INT = re.compile(r"\s*([+-]?\d+)")


def parse_score(reply: str, scores: Iterable[int]) -> int | None:
    """The integer a reply starts with when it is one of `scores`, else None."""
    m = LEADING_INT.match(reply)
    if m is None:
        return None
    value = int(m.group(1))
    return value if value in set(scores) else None


def rate(
    model: ChatModel,
    conversations: Sequence[Sequence[Message]],
    scores: Iterable[int] = range(1, 11),
    rating_samples: int | None = None,
    *,
    seed: int | None = None,
    max_tokens: int = 8,
) -> list[float]:
    """One rating per conversation: the expected score under the rater's first-token
    distribution (`expected_score` of `model.top_logprobs`), as the feedback-gaming repo rates.

    With `rating_samples=n`, for backends without logprobs, each conversation is instead
    answered n times at temperature 1 (`max_tokens` each; sample k with `seed + k` when a seed
    is given) and the leading integers in `scores` are averaged; unparseable replies are
    dropped.
    """
    convs = check_conversations(conversations)
    try:
        scores = [int(s) for s in scores]
    except (TypeError, ValueError):
        raise AlignlabError(f"scores must be integers, e.g. range(1, 11), got {scores!r}") from None
    if not scores:
        raise AlignlabError("scores must be a non-empty range of integers, e.g. range(1, 11)")
    if not convs:
        return []
    if rating_samples is None:
        try:
            tops = model.top_logprobs(convs, top=RATING_TOP)
        except NoLogprobsError as e:
            raise NoLogprobsError(
                f"{e}; rate with rating_samples=n instead, to average n sampled ratings"
            ) from None
        valid = [str(s) for s in scores]
        out = []
        for i, top in enumerate(tops):
            try:
                out.append(expected_score(top, valid))
            except AlignlabError as e:
                raise AlignlabError(f"conversation {i}: {e}") from None
        return out

    if (
        isinstance(rating_samples, bool)
        or not isinstance(rating_samples, int)
        or rating_samples < 1
    ):
        raise AlignlabError(
            f"rating_samples must be an integer >= 1 or None, got {rating_samples!r}"
        )
    parsed: list[list[int]] = [[] for _ in convs]
    last: list[str] = [""] * len(convs)
    for k in range(rating_samples):
        replies = model.chat(
            convs,
            max_tokens=max_tokens,
            temperature=1.0,
            seed=None if seed is None else seed + k,
        )
        for i, reply in enumerate(replies):
            last[i] = reply
            if (value := parse_score(reply, scores)) is not None:
                parsed[i].append(value)
    out = []
    for i, values in enumerate(parsed):
        if not values:
            raise AlignlabError(
                f"conversation {i}: none of the {rating_samples} sampled ratings starts with a "
                f"score in {min(scores)}..{max(scores)} (last reply: {last[i][:80]!r}); prompt "
                f"the rater to answer with the score first"
            )
        out.append(sum(values) / len(values))
    return out
