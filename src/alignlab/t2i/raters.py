"""Simulated human raters for Imagen 3's side-by-side studies (Imagen Team 2024, Sec. 3.1).

The report's raters are people (366,569 ratings from 3,225 raters). Here they are SIMULATED:
noisy oracles whose eyes are `world.perceive` (the exact scene-graph parser of the shapes
world) and whose judgement is a utility per image, compared side by side with per-rater noise
and an explicit indifference option, as in Sec. 3.1's questions:

| aspect | utility of an image (all in [0, 1]) | reads the prompt |
|---|---|---|
| alignment | share of the prompt's atomic facts met (`prompts.alignment_utility`) | yes |
| appeal    | shape regularity x colour purity (`prompts.appeal`)                   | no (hidden, as in Sec. 3.1) |
| overall   | 0.6 * alignment + 0.4 * appeal                                          | yes |
| detailed  | Hungarian-matched similarity to the reference scene (`prompts.detailed_alignment`) | no: compared with the reference render, as DOCCI raters compare with the reference photo |

A rater prefers the image with the larger noisy utility u + s_r * G (G standard Gumbel,
independent per image and rating, s_r the rater's own noise scale, drawn once per rater), and
answers "tie" when the two noisy utilities differ by less than the indifference band: a
Thurstone-Luce choice with indifference, so the Bradley-Terry model fits these ratings.

`count_objects(image, shape)` answers GeckoNum's question "How many <obj> are in the image?"
(Sec. 3.1, numerical reasoning) from the same eyes.

Each image is perceived once (cached by its bytes), since a study rates 2500 pairs drawn from
a fixed gallery.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from alignlab.core.seeding import generator

ASPECTS = ("overall", "alignment", "appeal", "detailed")
CHOICES = ("left", "right", "tie")
OVERALL_WEIGHTS = (0.6, 0.4)  # overall = 0.6 * alignment + 0.4 * appeal


def check_aspect(aspect: str) -> None:
    if aspect not in ASPECTS:
        raise ValueError(f"unknown aspect {aspect!r}; valid aspects: {', '.join(ASPECTS)}")


class SimulatedRaters:
    """A pool of simulated raters (see the module docstring).

    n_raters: size of the pool for integer rater ids; a rater named by a string (the
        evaluation suite's "rater00042") gets its own scale from a stream named by it.
    noise: the mean Gumbel scale; each rater's scale is noise * U(0.5, 1.5), drawn once. With
        the default 0.15 and band 0.05, an image meeting one more of a prompt's four facts
        (+0.25 utility) wins 79 % of a mean-scale rater's ratings, ties 9 % and loses 12 %.
    band: the indifference band on the difference of noisy utilities ("tie" below it).
    """

    def __init__(
        self,
        n_raters: int = 200,
        noise: float = 0.15,
        band: float = 0.05,
        seed: int = 0,
        wc: Any = None,
    ):
        if n_raters < 1:
            raise ValueError(f"n_raters must be >= 1, got {n_raters}")
        if noise < 0 or band < 0:
            raise ValueError(f"noise and band must be >= 0, got noise={noise}, band={band}")
        from alignlab.t2i import world

        self.n_raters, self.noise, self.band, self.seed = int(n_raters), noise, band, seed
        self.wc = world.WorldConfig() if wc is None else wc
        self.scales = noise * generator(seed, "t2i-raters").uniform(0.5, 1.5, self.n_raters)
        self._named: dict[str, float] = {}
        self._seen: dict[bytes, Any] = {}

    # -- eyes --------------------------------------------------------------------------------

    def perceive(self, image: np.ndarray) -> Any:
        """`world.perceive(image)`, computed once per distinct image."""
        from alignlab.t2i import world

        image = np.ascontiguousarray(image)
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise ValueError(f"an image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
        key = hashlib.blake2b(image.tobytes(), digest_size=16).digest() + bytes(
            str(image.shape), "ascii"
        )
        p = self._seen.get(key)
        if p is None:
            p = self._seen[key] = world.perceive(image, self.wc)
        return p

    def count_objects(self, image: np.ndarray, shape: str, colour: str | None = None) -> int:
        """GeckoNum's question, "How many <shape> are in the image?" (optionally of a colour):
        the number of perceived objects of that shape (unparsed blobs do not count)."""
        from alignlab.t2i import world

        if shape not in world.SHAPES:
            raise ValueError(f"unknown shape {shape!r}; valid: {', '.join(world.SHAPES)}")
        return sum(
            o.shape == shape and (colour is None or o.colour == colour)
            for o in self.perceive(image).objects
        )

    # -- utilities ---------------------------------------------------------------------------

    def utility(self, aspect: str, prompt: Any, image: np.ndarray) -> float:
        """The rater-free utility in [0, 1] of one image for one prompt (module table)."""
        from alignlab.t2i import prompts as P

        check_aspect(aspect)
        seen = self.perceive(image)
        if aspect == "appeal":
            return float(P.appeal(seen))
        if aspect == "detailed":
            ref = getattr(prompt, "reference", None)
            if ref is None:
                raise ValueError(
                    "detailed alignment needs a prompt with a reference scene (the docci set)"
                )
            return float(P.detailed_alignment(ref, seen, self.wc))
        align = float(P.alignment_utility(prompt, seen))
        if aspect == "alignment":
            return align
        a, b = OVERALL_WEIGHTS
        return a * align + b * float(P.appeal(seen))

    def utilities(self, aspect: str, prompts: Sequence[Any], images: np.ndarray) -> np.ndarray:
        """One utility per (prompt, image) row."""
        if len(prompts) != len(images):
            raise ValueError(f"got {len(prompts)} prompts but {len(images)} images")
        return np.array([self.utility(aspect, p, im) for p, im in zip(prompts, images)])

    # -- choices -----------------------------------------------------------------------------

    def scale(self, rater: int | str) -> float:
        """Rater's Gumbel scale: pool entry for an integer id, a named stream for a string."""
        if isinstance(rater, (int, np.integer)) and not isinstance(rater, bool):
            if not 0 <= rater < self.n_raters:
                raise ValueError(f"rater id {rater} outside the pool 0..{self.n_raters - 1}")
            return float(self.scales[int(rater)])
        name = str(rater)
        s = self._named.get(name)
        if s is None:
            s = self._named[name] = float(
                self.noise * generator(self.seed, "t2i-rater", name).uniform(0.5, 1.5)
            )
        return s

    def choose(
        self,
        u_left: np.ndarray,
        u_right: np.ndarray,
        raters: Sequence[int | str],
        rng: np.random.Generator,
    ) -> np.ndarray:
        """Vectorised choices ("left" / "right" / "tie") from the two images' utilities."""
        u_left, u_right = np.asarray(u_left, float), np.asarray(u_right, float)
        s = np.array([self.scale(r) for r in raters])
        g = rng.gumbel(size=(2, len(u_left)))
        d = (u_left + s * g[0]) - (u_right + s * g[1])
        return np.where(np.abs(d) < self.band, "tie", np.where(d > 0, "left", "right"))

    def rate_batch(
        self,
        aspect: str,
        prompts: Sequence[Any],
        lefts: np.ndarray,
        rights: np.ndarray,
        raters: Sequence[int | str],
        rng: np.random.Generator,
    ) -> np.ndarray:
        """Choices for many rows at once (perception cached per distinct image)."""
        n = len(prompts)
        if not (len(lefts) == len(rights) == len(raters) == n):
            raise ValueError(
                f"rows disagree: {n} prompts, {len(lefts)} left images, {len(rights)} right "
                f"images, {len(raters)} raters"
            )
        return self.choose(
            self.utilities(aspect, prompts, lefts),
            self.utilities(aspect, prompts, rights),
            raters,
            rng,
        )

    def rate(
        self,
        aspect: str,
        prompt: Any,
        image_left: np.ndarray,
        image_right: np.ndarray,
        rater: int | str,
        rng: np.random.Generator,
    ) -> str:
        """One rating: "left", "right" or "tie"."""
        out = self.rate_batch(
            aspect,
            [prompt],
            np.asarray(image_left)[None],
            np.asarray(image_right)[None],
            [rater],
            rng,
        )
        return str(out[0])
