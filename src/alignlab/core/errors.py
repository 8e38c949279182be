"""The one error type the command line turns into a clear message and a non-zero exit."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class AlignlabError(Exception):
    """A user-facing error: bad input, a malformed file, a missing optional dependency."""


class MissingDependency(AlignlabError):
    """An optional outside requirement is absent (an interpreter, a package, an endpoint): the
    message names the fix. The contract tests skip, with that message, an experiment whose
    preflight raises it."""


def did_you_mean(word: str, options: Iterable[str], n: int = 3) -> str:
    """' Did you mean: a, b?' for the closest options, or '' when nothing is close."""
    close = difflib.get_close_matches(word, list(options), n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(close)}?" if close else ""


def check_choice(what: str, value: object, valid: Iterable[object]) -> object:
    """`value` itself when it is one of `valid`, else one AlignlabError:
    "unknown <what> <value>; valid: a, b. Did you mean: ...?"."""
    valid = tuple(valid)
    if value in valid:
        return value
    names = [str(v) for v in valid]
    hint = did_you_mean(str(value), [str(v) for v in valid if v is not None])
    raise AlignlabError(f"unknown {what} {value!r}; valid: {', '.join(names)}.{hint}")
