"""Seeds: the run's global seeding, and the one rule for streams derived from it.

A sub-stream is named by the run seed and what it is for, e.g. `substream(seed, unit.seed,
"cmd2")` or `substream(seed, "eval", 3)`: integers enter numpy's SeedSequence as they are,
anything else as the CRC-32 of its text. Streams with different names are independent, and
adding a stream never shifts another (no shared counter), so a unit's numbers do not depend on
which other units run, in which order, or in which process.
"""

from __future__ import annotations

import random
import zlib

import numpy as np


def seed_everything(seed: int) -> np.random.Generator:
    """Seed python, numpy and torch; return the run's numpy Generator."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        import torch
    except ImportError:  # torch is a core dependency, but the maths of some systems is numpy-only
        pass
    else:
        torch.manual_seed(seed)
    return np.random.default_rng(seed)


def _word(part: object) -> int:
    if isinstance(part, (int, np.integer)) and not isinstance(part, bool):
        if part < 0:
            raise ValueError(f"seed parts must be non-negative integers or names, got {part}")
        return int(part)
    return zlib.crc32(str(part).encode("utf-8"))


def entropy(seed: int, *parts: object) -> list[int]:
    """The SeedSequence entropy of the stream (seed, *parts): integers as they are, names as
    their CRC-32."""
    return [_word(seed), *map(_word, parts)]


def substream(seed: int, *parts: object) -> np.random.SeedSequence:
    """The SeedSequence of the stream named (seed, *parts)."""
    return np.random.SeedSequence(entropy(seed, *parts))


def generator(seed: int, *parts: object) -> np.random.Generator:
    """A numpy Generator on the stream (seed, *parts)."""
    return np.random.default_rng(substream(seed, *parts))


def int_seed(seed: int, *parts: object) -> int:
    """One 32-bit integer drawn from the stream (seed, *parts), e.g. for `torch.manual_seed`."""
    return int(substream(seed, *parts).generate_state(1)[0])


def seed_torch(seed: int, *parts: object) -> None:
    """Seed torch's global generator (weight initialisation) from the stream (seed, *parts)."""
    import torch

    torch.manual_seed(int_seed(seed, *parts))


def torch_generator(seed: int, *parts: object, device: object = "cpu"):
    """A torch.Generator on `device` seeded from the stream (seed, *parts)."""
    import torch

    gen = torch.Generator(device=device)
    gen.manual_seed(int_seed(seed, *parts))
    return gen
