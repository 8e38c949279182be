"""The ESR experiments and their claims (Myers et al., NeurIPS 2024).

- `gridworld`   esr.gridworld: the obstacle gridworld at 2, 5, 7 and 10 boxes, ESR vs AvE vs a
                random robot vs goal inference, over seeds (Fig. 3); the logged mutual
                information; one assisted episode as a picture strip.
- `overcooked`  esr.overcooked: Cramped Room, Coordination Ring, Asymmetric Advantages with a
                scripted noisy human; the team's and the human's delivered reward with ESR, AvE
                and random assistants (the table on p. 9).
- `common`      what both share: labels, the smoke settings, training a unit's robot.

Every (method, setting, seed) is one unit (`alignlab.core.units`): units run in parallel worker
processes, each drawing its random numbers from streams named by its key, a unit killed
mid-training continues from its own checkpoint, and a resumed run skips finished units.
Importing this package registers both experiments.
"""

from . import gridworld, overcooked

__all__ = ["gridworld", "overcooked"]
