"""The six goal-conditioned methods of the CMD comparison, one module each, same shape.

`METHODS[name](obs_dim, act_spec, cfg)`, then `update(batch) -> losses`, `act(obs, goal)`;
`method.optimizer` is its optimiser; see common.py.
"""

from .cmd1 import CMD1
from .cmd2 import CMD2
from .common import ActionSpec, Method, MethodConfig
from .crl import CRL
from .gcbc import GCBC
from .qrl import QRL
from .td import TD

METHODS: dict[str, type[Method]] = {
    "cmd2": CMD2,
    "cmd1": CMD1,
    "crl": CRL,
    "gcbc": GCBC,
    "td": TD,
    "qrl": QRL,
}

__all__ = [
    "CMD1",
    "CMD2",
    "CRL",
    "GCBC",
    "METHODS",
    "QRL",
    "TD",
    "ActionSpec",
    "Method",
    "MethodConfig",
]
