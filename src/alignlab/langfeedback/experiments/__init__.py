"""The langfeedback experiments; importing this package registers them (in this order)."""

from alignlab.langfeedback.experiments import latent  # noqa: F401, I001  (first: trains Φ)
from alignlab.langfeedback.experiments import improve  # noqa: F401, E402
from alignlab.langfeedback.experiments import reward  # noqa: F401, E402
from alignlab.langfeedback.experiments import metaworld  # noqa: F401, E402
