"""The ESR experiments and their claims (Myers et al., NeurIPS 2024).

- `gridworld`   esr.gridworld: the obstacle gridworld at 2, 5, 7 and 10 boxes, ESR vs AvE vs a
                random robot vs goal inference, over seeds (Fig. 3); the logged mutual
                information; one assisted episode as a picture strip.
- `overcooked`  esr.overcooked: Cramped Room, Coordination Ring, Asymmetric Advantages with a
                scripted noisy human; the team's and the human's delivered reward with ESR, AvE
                and random assistants (the table on p. 9).
- `budget`      esr.budget (work in progress: a study): ESR vs random against the
                representation's contrastive steps, 1×-8× the quick budget, for four variants.
- `common`      what both share: labels, the smoke settings, training a unit's robot.

Every (method, setting, seed) is one unit (`alignlab.core.units`): units run in parallel worker
processes, each drawing its random numbers from streams named by its key, a unit killed
mid-training continues from its own checkpoint, and a resumed run skips finished units.
Importing this package registers its experiments.
"""

from . import budget, gridworld, overcooked

__all__ = ["budget", "gridworld", "overcooked"]
