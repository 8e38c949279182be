"""The CopAC experiments; importing this package registers them."""

from alignlab.copac.experiments import lesions, pendulum, reacher, rnn_brain  # noqa: F401
