"""The feedback-gaming experiments; importing this package registers them."""

from alignlab.feedback_gaming.experiments import (  # noqa: F401
    emergence,
    safety_mix,
    targeting,
    veto,
)
