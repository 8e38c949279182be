"""The four environments of the paper, one module each, as grammars (see `world`)."""

from alignlab.core.errors import AlignlabError, did_you_mean
from alignlab.feedback_gaming.envs import action, booking, politics, therapy

ENVS = {m.SPEC.name: m.SPEC for m in (therapy, booking, action, politics)}


def get_env(name: str):
    if name not in ENVS:
        raise AlignlabError(
            f"unknown environment {name!r}{did_you_mean(name, ENVS)}; valid: {', '.join(ENVS)}"
        )
    return ENVS[name]
