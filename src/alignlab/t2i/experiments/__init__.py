"""The t2i experiments; importing this package registers them (in this order)."""

from alignlab.t2i.experiments import train  # noqa: F401, I001  (first: it trains the models)
from alignlab.t2i.experiments import human_eval, auto_eval, responsibility  # noqa: F401
