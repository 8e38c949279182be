"""The t2i experiments; importing this package registers them."""

from alignlab.t2i.experiments import auto_eval, human_eval, responsibility, train  # noqa: F401
