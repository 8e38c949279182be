"""The model_combos experiments; importing this package registers them (in this order)."""

from alignlab.model_combos.experiments import mini  # noqa: F401, I001  (first: it trains the zoo)
from alignlab.model_combos.experiments import scaling, llm  # noqa: F401
