"""The CMD experiments and their claims (Myers et al., ICML 2024), one module each; importing
this package registers them.

- stitching.py  cmd.stitching: held-out A -> C success from A -> B and B -> C data
- triangle.py   cmd.triangle: d_SD is a quasimetric, the alternatives are not; the learned head
- pointmaze.py  cmd.pointmaze (work in progress): the one-way vortex pointmaze
- common.py     what they share: training every (method, seed) unit, summaries, the plot
"""

from . import pointmaze, stitching, triangle
from .pointmaze import PointmazeConfig
from .stitching import StitchingConfig, epsilon_greedy
from .triangle import TriangleConfig

__all__ = [
    "PointmazeConfig",
    "StitchingConfig",
    "TriangleConfig",
    "epsilon_greedy",
    "pointmaze",
    "stitching",
    "triangle",
]
