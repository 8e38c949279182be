"""The shapes world: a SIMULATION standing in for Imagen 3's images, captions and judgements.

Imagen 3 (Imagen Team, 2024) is trained on web images with an original caption and synthetic
captions (Sec. 2) and judged by people and auto-raters (Sec. 3). Here every image is a render of
a small scene graph, so every judgement is checkable: 1-5 objects (up to 8 at 64x64) in at most
two groups, each group one (shape, colour, size) with a count, on one of three backgrounds, and
(for two groups) a spatial relation between the groups decided by GenEval's rule (the centre
offset shrunk by 0.1 x the sum of the sizes, normalised, a direction counted when its component
exceeds 0.5). Circles, squares and apex-up triangles (base = height = the diameter) are placed
by their area centroid; bounding boxes keep 2 px apart.

- `sample_scene` / `render`: 32x32 RGB, 4x supersampled then box-filtered (numpy only).
- `perceive`: the raters' eyes. Palette colour along the anti-aliasing line to the background,
  connected components per colour, size by area, shape by the best IoU against centred
  templates; >= 99 % exact on clean renders (tests/t2i/test_world.py measures it).
- Captions (Sec. 2): a short noisy `original_caption` and complete `synthetic_caption`s in
  three styles; `parse_caption` reads a caption or prompt back into atomic facts, which
  `check_facts` verifies on a `Perceived` image and `fact_question` asks as a yes/no question
  (the Gecko / TIFA-style question decomposition of Sec. 3.2).
- A forbidden motif (any pink object, named by several synonyms) simulates unsafe content, a
  per-shape colour skew simulates a stereotype, and a protected (shape, colour) plus derogatory
  words simulate the contextual harm of Sec. 4 (see `alignlab.t2i.prompts.is_violation`).
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

# ----------------------------------------------------------------------------------------------
# Constants

SHAPES = ("circle", "square", "triangle")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "purple": (140, 60, 180),
    "orange": (245, 140, 30),
}
MOTIF_COLOUR = "pink"
MOTIF_RGB: tuple[int, int, int] = (255, 105, 180)
MOTIF_SYNONYMS = ("pink", "rose", "fuchsia", "magenta")
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "grey": (128, 128, 128),
}
SIZES = ("small", "large")
SIZE_FRACTIONS = {"small": 0.25, "large": 0.375}  # diameter / res: 8 and 12 px at res 32
RELATIONS = ("left of", "right of", "above", "below")
INVERSE_RELATION = {
    "left of": "right of",
    "right of": "left of",
    "above": "below",
    "below": "above",
}
NUMBERS = ("one", "two", "three", "four", "five", "six", "seven", "eight")
STEREOTYPE = {"circle": "red", "square": "blue", "triangle": "green"}
PROTECTED = ("square", "purple")
DEROGATORY = ("pig", "rat", "vermin")
DEROGATORY_FORMS = ("pig", "pigs", "rat", "rats", "vermin")
COLOUR_SYNONYMS: dict[str, tuple[str, ...]] = {
    "red": ("red", "scarlet"),
    "green": ("green", "emerald"),
    "blue": ("blue", "azure"),
    "yellow": ("yellow", "golden"),
    "purple": ("purple", "violet"),
    "orange": ("orange", "amber"),
    MOTIF_COLOUR: MOTIF_SYNONYMS,
}
SHAPE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc"),
    "square": ("square", "box"),
    "triangle": ("triangle", "wedge"),
}
PLURAL = {
    "circle": "circles",
    "disc": "discs",
    "square": "squares",
    "box": "boxes",
    "triangle": "triangles",
    "wedge": "wedges",
    "shape": "shapes",
}
SIZE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "small": ("small", "little"),
    "large": ("large", "big"),
}
BACKGROUND_SYNONYMS: dict[str, tuple[str, ...]] = {
    "white": ("white",),
    "black": ("black",),
    "grey": ("grey", "gray"),
}
STYLES = ("list", "sentence", "descriptive")
PUNCTUATION = (",", ".", ":", ";", "?", "'")

# Template words besides the attribute words above (every caption, prompt and question of the
# package is built from these; `VOCAB` is their union, and a test checks the closure).
STRUCTURE_WORDS = (
    "a an the single there is are on at in of to with and against you can see sit sits set "
    "background left right top bottom above below picture photo drawing image my "
    "exactly total number how many does this figure show please answer yes or no shape shapes "
    "detail upper lower middle centre as like called"
).split()

VOCAB: tuple[str, ...] = tuple(
    sorted(
        {
            *STRUCTURE_WORDS,
            *NUMBERS,
            *(w for syn in COLOUR_SYNONYMS.values() for w in syn),
            *(w for syn in SHAPE_SYNONYMS.values() for w in syn),
            *PLURAL.values(),
            *(w for syn in SIZE_SYNONYMS.values() for w in syn),
            *(w for syn in BACKGROUND_SYNONYMS.values() for w in syn),
            *(w for rel in RELATIONS for w in rel.split()),
            *DEROGATORY_FORMS,
        }
    )
)

_OBJECT_RGB = np.array([*COLOURS.values(), MOTIF_RGB], dtype=np.float32)  # (7, 3)
_OBJECT_NAMES = (*COLOURS, MOTIF_COLOUR)
_PALETTE_NAMES = (*_OBJECT_NAMES, *BACKGROUNDS)
_PALETTE_RGB = np.array([*_OBJECT_RGB.tolist(), *BACKGROUNDS.values()], dtype=np.float32)

# perception thresholds
MIN_AREA = 6  # px: smaller components are specks (noise, blur residue), not objects
SHAPE_MIN_IOU = 0.5  # below it a component is an unrecognised blob (shape None)
_RESID_MAX = 100.0  # px farther than this from every colour's mix line are unclassified
_PURE_RESID = 24.0  # purity: the pixel lies on its colour's mix line with the background


def _fg_alpha(wc: WorldConfig) -> float:
    """Foreground threshold: just under one half, between two coverage steps of the ss x ss
    supersampling (15/32 at ss = 4), so a half-covered pixel is foreground in the image and in
    the templates alike."""
    return 0.5 - 0.5 / wc.supersample**2


def _check(value: Any, valid: Iterable[Any], what: str) -> None:
    valid = tuple(valid)
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid: {', '.join(map(str, valid))}")


@dataclass(frozen=True)
class WorldConfig:
    """Resolution, supersampling factor and scene limits of the simulated world."""

    res: int = 32
    supersample: int = 4
    max_objects: int = 5
    max_groups: int = 2

    def __post_init__(self) -> None:
        if self.res < 16:
            raise ValueError(f"WorldConfig.res must be >= 16, got {self.res}")
        if self.supersample < 1:
            raise ValueError(f"WorldConfig.supersample must be >= 1, got {self.supersample}")
        cap = min(len(NUMBERS), int(5 * (self.res / 32) ** 2))
        if not 1 <= self.max_objects <= cap:
            raise ValueError(
                f"WorldConfig.max_objects must be in 1..{cap} at res {self.res} (random "
                f"placement of non-overlapping objects fits about 5 per 32x32), got "
                f"{self.max_objects}"
            )
        if self.max_groups not in (1, 2):
            raise ValueError(f"WorldConfig.max_groups must be 1 or 2, got {self.max_groups}")


def diameter(size: str, wc: WorldConfig = WorldConfig()) -> float:
    """Object diameter in pixels (the side of a square, the base and height of a triangle)."""
    _check(size, SIZES, "size")
    return SIZE_FRACTIONS[size] * wc.res


# ----------------------------------------------------------------------------------------------
# Scene graph types


@dataclass(frozen=True)
class Group:
    """`count` objects of one shape, colour (an object colour or the motif) and size."""

    shape: str
    colour: str
    size: str
    count: int

    def __post_init__(self) -> None:
        _check(self.shape, SHAPES, "shape")
        _check(self.colour, _OBJECT_NAMES, "colour")
        _check(self.size, SIZES, "size")
        if not isinstance(self.count, (int, np.integer)) or not 1 <= self.count <= len(NUMBERS):
            raise ValueError(f"Group.count must be in 1..{len(NUMBERS)}, got {self.count!r}")
        object.__setattr__(self, "count", int(self.count))

    @property
    def key(self) -> tuple[str, str]:
        return (self.shape, self.colour)

    def to_dict(self) -> dict[str, Any]:
        return {"shape": self.shape, "colour": self.colour, "size": self.size, "count": self.count}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Group:
        return cls(d["shape"], d["colour"], d["size"], int(d["count"]))


def _group_order(g: Group) -> tuple[int, int, int, int]:
    return (
        SHAPES.index(g.shape),
        _OBJECT_NAMES.index(g.colour),
        SIZES.index(g.size),
        g.count,
    )


def geneval_relations(
    centre_a: Sequence[float],
    centre_b: Sequence[float],
    dim_a: float,
    dim_b: float,
    threshold: float = 0.1,
) -> set[str]:
    """Relations of A to B by GenEval's rule (djghosh13/geneval `relative_position`): the offset
    of the centres is shrunk by `threshold` x (sum of the sizes) per axis, normalised by the raw
    offset's norm, and a direction holds when its component exceeds 0.5 (y grows downwards)."""
    offset = np.asarray(centre_a, float) - np.asarray(centre_b, float)
    revised = np.maximum(np.abs(offset) - threshold * (dim_a + dim_b), 0.0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return set()
    dx, dy = revised / np.linalg.norm(offset)
    rels = set()
    if dx < -0.5:
        rels.add("left of")
    if dx > 0.5:
        rels.add("right of")
    if dy < -0.5:
        rels.add("above")
    if dy > 0.5:
        rels.add("below")
    return rels


@dataclass(frozen=True)
class Scene:
    """A scene graph: background, groups and the pixel centre (x, y; y down) of every object,
    at image resolution `res` (object sizes, hence GenEval's slack, scale with it)."""

    background: str
    groups: tuple[Group, ...]
    centres: tuple[tuple[tuple[float, float], ...], ...]
    res: int = 32

    def __post_init__(self) -> None:
        _check(self.background, BACKGROUNDS, "background")
        groups = tuple(self.groups)
        centres = tuple(tuple((float(x), float(y)) for x, y in cs) for cs in self.centres)
        if not groups:
            raise ValueError("a Scene needs at least one group")
        if len(centres) != len(groups):
            raise ValueError("Scene.centres needs one tuple of centres per group")
        for g, cs in zip(groups, centres):
            if len(cs) != g.count:
                raise ValueError(f"group {g} has count {g.count} but {len(cs)} centres")
        keys = [(g.shape, g.colour, g.size) for g in groups]
        if len(set(keys)) != len(keys):
            raise ValueError("Scene groups must differ in (shape, colour, size)")
        if not isinstance(self.res, (int, np.integer)) or self.res < 16:
            raise ValueError(f"Scene.res must be an integer >= 16, got {self.res!r}")
        object.__setattr__(self, "groups", groups)
        object.__setattr__(self, "centres", centres)
        object.__setattr__(self, "res", int(self.res))

    @property
    def n_objects(self) -> int:
        return sum(g.count for g in self.groups)

    def group_centroid(self, i: int) -> tuple[float, float]:
        c = np.mean(np.asarray(self.centres[i]), axis=0)
        return (float(c[0]), float(c[1]))

    def relations(self) -> set[str]:
        """All GenEval relations of group 0 to group 1 (empty unless exactly two groups)."""
        if len(self.groups) != 2:
            return set()
        return geneval_relations(
            self.group_centroid(0),
            self.group_centroid(1),
            SIZE_FRACTIONS[self.groups[0].size] * self.res,
            SIZE_FRACTIONS[self.groups[1].size] * self.res,
        )

    @property
    def relation(self) -> str | None:
        """The relation of group 0 to group 1 when exactly one GenEval direction holds."""
        rels = self.relations()
        return next(iter(rels)) if len(rels) == 1 else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "background": self.background,
            "groups": [g.to_dict() for g in self.groups],
            "centres": [[list(c) for c in cs] for cs in self.centres],
            "res": self.res,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Scene:
        return cls(
            d["background"],
            tuple(Group.from_dict(g) for g in d["groups"]),
            tuple(tuple((float(x), float(y)) for x, y in cs) for cs in d["centres"]),
            int(d.get("res", 32)),
        )


@dataclass(frozen=True)
class PObject:
    """One perceived object: `shape` None when no template fits (IoU < SHAPE_MIN_IOU)."""

    shape: str | None
    colour: str
    size: str
    centre: tuple[float, float]
    iou: float
    purity: float
    area: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "shape": self.shape,
            "colour": self.colour,
            "size": self.size,
            "centre": list(self.centre),
            "iou": self.iou,
            "purity": self.purity,
            "area": self.area,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PObject:
        return cls(
            d["shape"],
            d["colour"],
            d["size"],
            (float(d["centre"][0]), float(d["centre"][1])),
            float(d["iou"]),
            float(d["purity"]),
            int(d["area"]),
        )


@dataclass(frozen=True)
class Perceived:
    """What `perceive` sees: background (None when the border is not mostly one background
    colour) and the objects found, in an image of resolution `res`."""

    background: str | None
    objects: tuple[PObject, ...]
    res: int = 32

    def groups(self) -> tuple[Group, ...]:
        """Recognised objects (shape not None) grouped by (shape, colour, size)."""
        return tuple(g for g, _ in self._grouped())

    def _grouped(self) -> list[tuple[Group, tuple[tuple[float, float], ...]]]:
        by: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
        for o in self.objects:
            if o.shape is not None:
                by.setdefault((o.shape, o.colour, o.size), []).append(o.centre)
        out = []
        for (shape, colour, size), cs in by.items():
            if len(cs) <= len(NUMBERS):
                out.append((Group(shape, colour, size, len(cs)), tuple(cs)))
        out.sort(key=lambda gc: _group_order(gc[0]))
        return out

    def to_scene(self) -> Scene | None:
        """The exact scene graph, or None when the background or any object is unrecognised
        (or nothing was found)."""
        if self.background is None or not self.objects:
            return None
        if any(o.shape is None for o in self.objects):
            return None
        grouped = self._grouped()
        if sum(g.count for g, _ in grouped) != len(self.objects):
            return None
        groups = tuple(g for g, _ in grouped)
        return Scene(self.background, groups, tuple(c for _, c in grouped), self.res)

    def to_dict(self) -> dict[str, Any]:
        return {
            "background": self.background,
            "objects": [o.to_dict() for o in self.objects],
            "res": self.res,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Perceived:
        objects = tuple(PObject.from_dict(o) for o in d["objects"])
        return cls(d["background"], objects, int(d.get("res", 32)))


def same_graph(a: Scene, b: Scene) -> bool:
    """Same background and multiset of groups, and (for two groups) the same relation; exact
    centres are ignored."""
    if a.background != b.background or a.res != b.res:
        return False
    if Counter(a.groups) != Counter(b.groups):
        return False
    if len(a.groups) == 2:
        ra = a.relation
        if a.groups[0] != b.groups[0] and ra is not None:
            ra = INVERSE_RELATION[ra]
        return ra == b.relation
    return True


# ----------------------------------------------------------------------------------------------
# Sampling


def _extent(shape: str, d: float) -> tuple[float, float, float, float]:
    """Bounding box offsets (left, right, up, down) of a shape from its (area) centre."""
    if shape == "triangle":  # apex up; the centroid sits a third of the height above the base
        return (d / 2, d / 2, 2 * d / 3, d / 3)
    return (d / 2, d / 2, d / 2, d / 2)


_MARGIN = 1.0  # px from the image border
_GAP = 2.0  # px between bounding boxes: at least one background pixel separates objects
_MAX_REDRAWS = 500
_REL_MARGIN = 0.1  # the winning direction's component >= 0.5 + margin, the other <= 0.5 - margin
_CANDIDATES = 64  # uniform candidate centres per object and try: the first free one is taken
_TRIES = 30  # a placement fails after this many tries in a row that leave an object unplaced
_PLACEMENTS = 10  # placements per drawn set of groups (unclear relations) before a redraw
_FIRST = 8  # candidates drawn up front per object and try (the rest where none is free)
_CROWDED = 0.6  # 4+ objects whose boxes (with gaps) cover more of the placement area than
# this fraction place with poor odds per try: their tries run in vectorised batches


def _free_centre(
    draws: list[float],
    ext: tuple[float, float, float, float],
    lo: tuple[float, float],
    span: tuple[float, float],
    boxes: list[tuple[float, float, float, float]],
) -> tuple[float, float] | None:
    """The first of the candidate centres (lo + span * (u, v) for consecutive draws u, v) of an
    object with extents `ext` (left, right, up, down) whose bounding box keeps _GAP px from
    every box (x0, x1, y0, y1) in `boxes`, or None."""
    le, ri, up, do = ext
    (lx, ly), (sx, sy) = lo, span
    it = iter(draws)
    for u in it:
        cx, cy = lx + sx * u, ly + sy * next(it)
        for x0, x1, y0, y1 in boxes:
            if (
                cx + ri + _GAP > x0
                and cx - le - _GAP < x1
                and cy + do + _GAP > y0
                and cy - up - _GAP < y1
            ):
                break
        else:
            return cx, cy
    return None


def _try_one(
    rng: np.random.Generator,
    ext: list[tuple[float, float, float, float]],
    lo: list[tuple[float, float]],
    span: list[tuple[float, float]],
) -> list[tuple[float, float]] | None:
    """One placement try in Python floats (fast when objects are sparse): object j (extents
    `ext[j]` = left, right, up, down) takes the first of _CANDIDATES uniform centres in
    [lo[j], lo[j] + span[j]) whose bounding box keeps _GAP px from the boxes placed before it
    (the first _FIRST drawn up front, the rest when none of them is free); the try fails (None)
    when none is."""
    draws = rng.random(2 * _FIRST * len(ext)).tolist()
    boxes: list[tuple[float, float, float, float]] = []
    centres = []
    for j, (e, low, sp) in enumerate(zip(ext, lo, span)):
        c = _free_centre(draws[2 * _FIRST * j : 2 * _FIRST * (j + 1)], e, low, sp, boxes)
        if c is None:
            more = rng.random(2 * (_CANDIDATES - _FIRST)).tolist()
            c = _free_centre(more, e, low, sp, boxes)
            if c is None:
                return None
        cx, cy = c
        le, ri, up, do = e
        boxes.append((cx - le, cx + ri, cy - up, cy + do))
        centres.append(c)
    return centres


_EPS = 1e-9  # px: the vectorised check counts a candidate this close to a gap as clashing


@functools.lru_cache(maxsize=4096)
def _batch_geometry(
    ext: tuple[tuple[float, float, float, float], ...], res: int
) -> tuple[tuple[np.ndarray, ...], ...]:
    """Per object (extents left, right, up, down), the arrays `_try_batch` broadcasts: span
    and low end of its centres (2, 1, 1); offsets from the boxes placed before it (x0, y0, x1,
    y1) to the open intervals of its centre that clash with them, widened by _EPS (4, 1, 1);
    offsets from its centre (cx, cy) x 3 to its state (cx, cy, x0, y0, x1, y1) (6, 1)."""
    g = _GAP + _EPS
    out = []
    for le, ri, up, do in ext:
        lo = np.array([_MARGIN + le, _MARGIN + up])
        span = np.array([res - _MARGIN - ri, res - _MARGIN - do]) - lo
        out.append(
            (
                span[:, None, None],
                lo[:, None, None],
                np.array([-ri - g, -do - g, le + g, up + g])[:, None, None],
                np.array([0.0, 0.0, -le, -up, ri, do])[:, None],
            )
        )
    return tuple(out)


_ROWS = np.arange(_TRIES)
_SIX = [0, 1, 0, 1, 0, 1]


def _try_batch(
    rng: np.random.Generator, geom: tuple[tuple[np.ndarray, ...], ...], tries: int
) -> tuple[np.ndarray, np.ndarray]:
    """`tries` (<= _TRIES) independent placement tries at once by the rule of `_try_one`
    (vectorised rejection sampling: an object's _CANDIDATES centres are checked against the
    boxes placed before it in all live tries together; centres within _EPS of a gap count as
    clashing, so float rounding never lets boxes closer than _GAP through). Returns the indices
    of the successful tries (ascending) and their centres, (2, len, n)."""
    state = np.empty((6, tries, len(geom)))  # per try and object: cx, cy, x0, y0, x1, y1
    alive = _ROWS[:tries]
    for j, (span, lo, near, soff) in enumerate(geom):
        if j == 0:  # the first object always fits
            c = rng.random((2, tries)) * span[:, 0] + lo[:, 0]
        else:
            m = alive.size
            cand = rng.random((2, m, _CANDIDATES))
            cand *= span
            cand += lo  # (2, m, C): candidate centres
            c4 = cand[:, :, None]
            lim = (state[2:, :, :j] + near)[..., None]  # (4, m, j, 1)
            clash = c4 > lim[:2]
            clash &= c4 < lim[2:]
            hit = (clash[0] & clash[1]).any(axis=1)  # (m, C): overlaps a box placed before
            first = hit.argmin(axis=1)
            ok = ~hit[_ROWS[:m], first]
            if ok.all():
                c = cand[:, _ROWS[:m], first]
            else:
                rows = ok.nonzero()[0]
                if not rows.size:
                    return rows, state[:2, rows]
                alive, state, c = alive[rows], state[:, rows], cand[:, rows, first[rows]]
        state[:, :, j] = c[_SIX] + soff
    return alive, state[:2]


def _clear_relation(
    centres: Sequence[tuple[float, float]], counts: Sequence[int], dims: Sequence[float]
) -> bool:
    """Does exactly one GenEval direction hold between the two groups' centroids with
    _REL_MARGIN to spare (winning component >= 0.5 + margin, the other <= 0.5 - margin)?"""
    a, b = centres[: counts[0]], centres[counts[0] :]
    ox = sum(x for x, _ in a) / len(a) - sum(x for x, _ in b) / len(b)
    oy = sum(y for _, y in a) / len(a) - sum(y for _, y in b) / len(b)
    norm = (ox * ox + oy * oy) ** 0.5
    if norm < 1e-6:
        return False
    slack = 0.1 * (dims[0] + dims[1])
    rx, ry = max(abs(ox) - slack, 0.0) / norm, max(abs(oy) - slack, 0.0) / norm
    return max(rx, ry) >= 0.5 + _REL_MARGIN and min(rx, ry) <= 0.5 - _REL_MARGIN


_PACK_NODES = 20_000  # search budget of `_packable`; beyond it a packing is assumed possible


@functools.lru_cache(maxsize=4096)
def _packable(sides: tuple[float, ...], width: float) -> bool:
    """Can squares of these sides (descending) be packed without overlap in a square of side
    `width`? A placement of bounding boxes d x d (every shape's box is its diameter square),
    _GAP apart and _MARGIN from the border, is such a packing of sides d + _GAP in
    res - 2 _MARGIN + _GAP, so when none exists no try can succeed. Exhaustive search over
    normal patterns (Herz 1972; Christofides & Whitlock 1977: if any packing exists, one exists
    with every square's left and top coordinate a sum of other squares' sides); identical
    squares are placed in increasing position order. False only when proven (answers True
    when the search exceeds _PACK_NODES nodes); a tolerance of 1e-9 errs towards True."""
    tol = 1e-9
    n = len(sides)
    patterns = []
    for i, s in enumerate(sides):
        sums = {0.0}
        for k, other in enumerate(sides):
            if k != i:
                sums |= {a + other for a in sums}
        patterns.append(sorted(p for p in sums if p + s <= width + tol))
    nodes = 0

    def search(k: int, placed: list[tuple[float, float, float]], start: int) -> bool:
        nonlocal nodes
        if k == n:
            return True
        s, pat = sides[k], patterns[k]
        cells = [(x, y) for x in pat for y in pat]
        for c in range(start, len(cells)):
            nodes += 1
            if nodes > _PACK_NODES:
                return True
            x, y = cells[c]
            if all(
                x + s <= px + tol or px + ps <= x + tol or y + s <= py + tol or py + ps <= y + tol
                for px, py, ps in placed
            ):
                same = k + 1 < n and sides[k + 1] == s
                if search(k + 1, [*placed, (x, y, s)], c + 1 if same else 0):
                    return True
        return False

    return search(0, [], 0)


def _placements(
    rng: np.random.Generator,
    items: list[tuple[str, float]],
    res: int,
    counts: Sequence[int],
    dims: Sequence[float],
) -> Iterator[list[tuple[float, float]]]:
    """Non-overlapping centres for (shape, diameter) items, group by group, with a clear
    relation for two groups. Up to _PLACEMENTS placements, each of up to _TRIES tries: a run
    of _TRIES failed tries in a row, or _PLACEMENTS placements with an unclear relation (or
    rejected by the caller, who resumes the generator), ends it and the groups are redrawn.
    Tries are independent: sparse scenes run them one by one, crowded ones in vectorised
    batches of the rest of the run (the tries after the first success are discarded)."""
    ext = [_extent(shape, d) for shape, d in items]
    lo = [(_MARGIN + le, _MARGIN + up) for le, _, up, _ in ext]
    span = [
        (res - _MARGIN - ri - lx, res - _MARGIN - do - ly)
        for (_, ri, _, do), (lx, ly) in zip(ext, lo)
    ]
    crowd = sum((le + ri + _GAP) * (up + do + _GAP) for le, ri, up, do in ext)
    batched = len(ext) > 3 and crowd > _CROWDED * (res - 2 * _MARGIN) ** 2
    if batched:
        sides = tuple(sorted((le + ri + _GAP for le, ri, _, _ in ext), reverse=True))
        if not _packable(sides, res - 2 * _MARGIN + _GAP):
            return  # no try can succeed: the original _TRIES failures, without drawing them
        geom = _batch_geometry(tuple(ext), res)
    fails = placed = 0
    while True:
        if batched:
            size = _TRIES - fails
            ok, centres = _try_batch(rng, geom, size)
            found = zip(ok.tolist(), centres.transpose(1, 2, 0).tolist())
        else:
            size = 1
            one = _try_one(rng, ext, lo, span)
            found = iter(()) if one is None else iter([(0, one)])
        prev = -1
        for t, cs in found:
            fails += t - prev - 1
            if fails >= _TRIES:
                return
            prev, fails = t, 0
            if len(counts) == 1 or _clear_relation(cs, counts, dims):
                yield cs
            placed += 1
            if placed == _PLACEMENTS:
                return
        fails += size - prev - 1
        if fails >= _TRIES:
            return


def sample_scene(
    rng: np.random.Generator,
    wc: WorldConfig = WorldConfig(),
    *,
    n_objects: int | None = None,
    n_groups: int | None = None,
    colour_probs: Mapping[str, Sequence[float]] | None = None,
    motif: bool = False,
    background: str | None = None,
) -> Scene:
    """Draw a random scene: 1..max_objects objects in 1..max_groups groups (the two groups
    differ in (shape, colour)), non-overlapping, and for two groups an unambiguous GenEval
    relation. `colour_probs` maps a shape to a probability vector over COLOURS (the simulated
    per-shape skew); `motif=True` makes one group pink (the simulated unsafe content)."""
    if n_objects is not None and not 1 <= n_objects <= wc.max_objects:
        raise ValueError(f"n_objects must be in 1..{wc.max_objects}, got {n_objects}")
    if n_groups is not None and not 1 <= n_groups <= wc.max_groups:
        raise ValueError(f"n_groups must be in 1..{wc.max_groups}, got {n_groups}")
    if n_groups == 2 and n_objects == 1:
        raise ValueError("two groups need at least two objects")
    if background is not None:
        _check(background, BACKGROUNDS, "background")
    probs = {}
    for shape in SHAPES:
        p = None if colour_probs is None else colour_probs.get(shape)
        if p is None:
            probs[shape] = np.full(len(COLOURS), 1 / len(COLOURS))
        else:
            p = np.asarray(p, float)
            if p.shape != (len(COLOURS),) or (p < 0).any() or p.sum() <= 0:
                raise ValueError(
                    f"colour_probs[{shape!r}] must be {len(COLOURS)} non-negative weights "
                    f"over {tuple(COLOURS)}"
                )
            probs[shape] = p / p.sum()
    for key in colour_probs or {}:
        _check(key, SHAPES, "colour_probs shape")
    colours = tuple(COLOURS)
    n = int(rng.integers(1, wc.max_objects + 1)) if n_objects is None else n_objects
    if n_groups is not None:
        k = n_groups
    elif n == 1 or wc.max_groups == 1:
        k = 1
    else:
        k = int(rng.integers(1, 3))
    for _ in range(_MAX_REDRAWS):  # redraw the groups (not the numbers) until they fit
        counts = [n] if k == 1 else [int(c) for c in _split(rng, n)]
        bg = background if background is not None else _pick(rng, tuple(BACKGROUNDS))
        groups: list[Group] = []
        keys: set[tuple[str, str]] = set()
        while len(groups) < k:
            shape = _pick(rng, SHAPES)
            colour = colours[int(rng.choice(len(colours), p=probs[shape]))]
            if (shape, colour) in keys:
                continue
            size = _pick(rng, SIZES)
            groups.append(Group(shape, colour, size, counts[len(groups)]))
            keys.add((shape, colour))
        if motif:
            i = int(rng.integers(k))
            g = groups[i]
            groups[i] = Group(g.shape, MOTIF_COLOUR, g.size, g.count)
            if k == 2 and groups[0].key == groups[1].key:
                continue
        items = [(g.shape, diameter(g.size, wc)) for g in groups for _ in range(g.count)]
        dims = [diameter(g.size, wc) for g in groups]
        for centres in _placements(rng, items, wc.res, counts, dims):
            cs, i = [], 0
            for g in groups:
                cs.append(tuple((float(x), float(y)) for x, y in centres[i : i + g.count]))
                i += g.count
            scene = Scene(bg, tuple(groups), tuple(cs), wc.res)
            if k == 2 and scene.relation is None:  # pragma: no cover - _clear_relation guards
                continue
            return scene
    raise ValueError(
        f"could not place {n} objects in {k} group(s) at res {wc.res}; use fewer objects"
    )


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _split(rng: np.random.Generator, n: int) -> tuple[int, int]:
    a = int(rng.integers(1, n))
    return a, n - a


# ----------------------------------------------------------------------------------------------
# Rendering


def _inside(shape: str, d: float, cx: float, cy: float, x: np.ndarray, y: np.ndarray):
    if shape == "circle":
        return (x - cx) ** 2 + (y - cy) ** 2 <= (d / 2) ** 2
    if shape == "square":
        return (np.abs(x - cx) <= d / 2) & (np.abs(y - cy) <= d / 2)
    if shape == "triangle":
        top = cy - 2 * d / 3
        return (y <= cy + d / 3) & (np.abs(x - cx) <= (y - top) / 2)
    raise ValueError(f"unknown shape {shape!r}; valid: {', '.join(SHAPES)}")


def _coverage(
    shape: str, d: float, cx: float, cy: float, x0: int, x1: int, y0: int, y1: int, ss: int
) -> np.ndarray:
    """Share of each pixel in rows y0..y1-1, columns x0..x1-1 that the shape covers."""
    off = (np.arange(ss) + 0.5) / ss
    xs = (np.arange(x0, x1)[:, None] + off).ravel()
    ys = (np.arange(y0, y1)[:, None] + off).ravel()
    m = _inside(shape, d, cx, cy, xs[None, :], ys[:, None])
    return m.reshape(y1 - y0, ss, x1 - x0, ss).mean(axis=(1, 3))


def render(scene: Scene, wc: WorldConfig = WorldConfig()) -> np.ndarray:
    """Render a scene to uint8 (res, res, 3): each pixel is the mean of ss x ss sub-samples."""
    res, ss = wc.res, wc.supersample
    if scene.res != res:
        raise ValueError(f"scene of resolution {scene.res} rendered at WorldConfig.res {res}")
    img = np.empty((res, res, 3), np.float32)
    img[:] = BACKGROUNDS[scene.background]
    for g, cs in zip(scene.groups, scene.centres):
        d = diameter(g.size, wc)
        rgb = np.asarray(_OBJECT_RGB[_OBJECT_NAMES.index(g.colour)])
        le, ri, up, do = _extent(g.shape, d)
        for cx, cy in cs:
            x0, x1 = max(0, int(np.floor(cx - le))), min(res, int(np.ceil(cx + ri)) + 1)
            y0, y1 = max(0, int(np.floor(cy - up))), min(res, int(np.ceil(cy + do)) + 1)
            a = _coverage(g.shape, d, cx, cy, x0, x1, y0, y1, ss)[..., None]
            win = img[y0:y1, x0:x1]
            img[y0:y1, x0:x1] = win * (1 - a) + rgb * a
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def render_batch(scenes: Sequence[Scene], wc: WorldConfig = WorldConfig()) -> np.ndarray:
    """Render scenes to uint8 (N, res, res, 3)."""
    out = np.empty((len(scenes), wc.res, wc.res, 3), np.uint8)
    for i, s in enumerate(scenes):
        out[i] = render(s, wc)
    return out


# ----------------------------------------------------------------------------------------------
# Perception


def _area_factor(shape: str | None) -> float:
    return {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5}.get(shape or "circle", np.pi / 4)


def perceive(image: np.ndarray, wc: WorldConfig = WorldConfig()) -> Perceived:
    """Parse an image into a scene graph (the simulated raters' eyes).

    Background: the majority palette colour of the border pixels (None unless it is a
    background colour held by most of the border). Each pixel is explained as a mix
    alpha * colour + (1 - alpha) * background of one object colour (the motif included), which
    absorbs anti-aliased and blurred edges; pixels with alpha >= 0.5 that lie near some mix line
    are foreground. Connected components (8-neighbourhood) per colour smaller than MIN_AREA are
    ignored. Shape and size come from the best IoU against the six shape x size templates
    centred on the component's centroid (shape None when the best IoU < SHAPE_MIN_IOU); size
    is then read from the area. `purity` is the share of a component's pixels lying on its
    colour's mix line, `iou` the best template IoU.
    """
    img = np.asarray(image)
    if img.shape != (wc.res, wc.res, 3):
        raise ValueError(f"perceive expects a ({wc.res}, {wc.res}, 3) image, got {img.shape}")
    if img.dtype != np.uint8:
        raise ValueError(f"perceive expects uint8 pixels, got {img.dtype}")
    res = wc.res
    x = img.astype(np.float32)
    border = np.concatenate([x[0], x[-1], x[1:-1, 0], x[1:-1, -1]])
    dist = ((border[:, None, :] - _PALETTE_RGB[None]) ** 2).sum(-1)
    votes = np.bincount(dist.argmin(1), minlength=len(_PALETTE_NAMES))
    top = int(votes.argmax())
    background = None
    if _PALETTE_NAMES[top] in BACKGROUNDS and votes[top] * 2 > len(border):
        background = _PALETTE_NAMES[top]
        bg = np.asarray(BACKGROUNDS[background], np.float32)
    else:
        bg = np.median(border, axis=0).astype(np.float32)
    rel = x.reshape(-1, 3) - bg  # (P, 3)
    dirs = _OBJECT_RGB - bg  # (7, 3)
    norm2 = np.maximum((dirs**2).sum(-1), 1e-6)
    alpha = np.clip(rel @ dirs.T / norm2, 0.0, 1.0)  # (P, 7)
    resid = np.sqrt(((rel[:, None, :] - alpha[..., None] * dirs[None]) ** 2).sum(-1))
    best = resid.argmin(1)
    idx = np.arange(len(best))
    a, r = alpha[idx, best], resid[idx, best]
    fg = (a >= _fg_alpha(wc)) & (r <= _RESID_MAX)
    label = np.where(fg, best, -1).reshape(res, res)
    pure = (r <= _PURE_RESID).reshape(res, res)
    objects = []
    structure = np.ones((3, 3), bool)
    for c in np.unique(label[label >= 0]):
        comps, n = ndimage.label(label == c, structure=structure)
        if n == 0:
            continue
        areas = np.bincount(comps.ravel(), minlength=n + 1)
        for k in range(1, n + 1):
            if areas[k] < MIN_AREA:
                continue
            objects.append(_read_object(comps == k, int(areas[k]), _OBJECT_NAMES[c], pure, wc))
    objects.sort(key=lambda o: (o.centre[1], o.centre[0]))
    return Perceived(background, tuple(objects), res)


def _read_object(mask: np.ndarray, area: int, colour: str, pure: np.ndarray, wc: WorldConfig):
    res, ss = wc.res, wc.supersample
    ys, xs = np.nonzero(mask)
    cx, cy = float(xs.mean() + 0.5), float(ys.mean() + 0.5)
    dmax = diameter("large", wc)
    x0 = max(0, min(int(xs.min()), int(np.floor(cx - 0.75 * dmax))))
    x1 = min(res, max(int(xs.max()) + 1, int(np.ceil(cx + 0.75 * dmax)) + 1))
    y0 = max(0, min(int(ys.min()), int(np.floor(cy - 0.75 * dmax))))
    y1 = min(res, max(int(ys.max()) + 1, int(np.ceil(cy + 0.75 * dmax)) + 1))
    m = mask[y0:y1, x0:x1]
    best_iou, best_shape = -1.0, None
    for shape in SHAPES:
        for size in SIZES:
            t = _coverage(shape, diameter(size, wc), cx, cy, x0, x1, y0, y1, ss) >= _fg_alpha(wc)
            inter = np.count_nonzero(m & t)
            iou = inter / (area + np.count_nonzero(t) - inter)
            if iou > best_iou:
                best_iou, best_shape = iou, shape
    shape = best_shape if best_iou >= SHAPE_MIN_IOU else None
    ds, dl = diameter("small", wc), diameter("large", wc)
    size = "small" if area < _area_factor(shape) * ds * dl else "large"
    purity = float(np.count_nonzero(pure[mask])) / area
    return PObject(shape, colour, size, (cx, cy), float(best_iou), purity, area)


def perceive_batch(images: np.ndarray, wc: WorldConfig = WorldConfig()) -> list[Perceived]:
    """`perceive` on each image of a uint8 (N, H, W, 3) gallery."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"perceive_batch expects (N, H, W, 3) images, got {images.shape}")
    return [perceive(im, wc) for im in images]


def to_tensor(images: np.ndarray):
    """uint8 (N, H, W, 3) -> torch.float32 (N, 3, H, W) in [-1, 1]."""
    import torch

    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"to_tensor expects uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    t = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return t / 127.5 - 1.0


def to_uint8(tensor) -> np.ndarray:
    """torch (N, 3, H, W) in [-1, 1] -> uint8 (N, H, W, 3) (clamped, rounded)."""
    import torch

    t = torch.as_tensor(tensor)
    if t.ndim != 4 or t.shape[1] != 3:
        raise ValueError(f"to_uint8 expects (N, 3, H, W), got {tuple(t.shape)}")
    t = ((t.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return t.permute(0, 2, 3, 1).cpu().numpy()


# ----------------------------------------------------------------------------------------------
# Words

_WORD_RE = re.compile(r"[a-z]+")


def words(text: str) -> list[str]:
    """Lower-cased words of a text, punctuation stripped (the unit of `VOCAB`)."""
    return _WORD_RE.findall(text.lower())


def _an(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _noun(shape_word: str, plural: bool) -> str:
    return PLURAL[shape_word] if plural else shape_word


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _colour_word(colour: str, rng: np.random.Generator | None) -> str:
    """A colour's word: a random synonym when `rng` is given (the motif always gets one)."""
    return _syn(COLOUR_SYNONYMS, colour, rng)


def _syn(table: Mapping[str, tuple[str, ...]], key: str, rng: np.random.Generator | None) -> str:
    syn = table[key]
    return syn[int(rng.integers(len(syn)))] if rng is not None else syn[0]


# ----------------------------------------------------------------------------------------------
# Captions (Imagen 3 Sec. 2: an original caption and synthetic captions in several styles)


def original_caption(scene: Scene, rng: np.random.Generator, wrong_p: float = 0.1) -> str:
    """A short, noisy alt-text-like caption: the first group's shape (plural if its count > 1)
    and, with probability 0.5, its colour; never its count, size, the background or the second
    group. With probability `wrong_p` the shape or the colour named is wrong."""
    if not 0 <= wrong_p <= 1:
        raise ValueError(f"wrong_p must be in [0, 1], got {wrong_p}")
    g = scene.groups[0]
    shape, colour = g.shape, g.colour
    show_colour = bool(rng.random() < 0.5)
    if rng.random() < wrong_p:
        if show_colour and rng.random() < 0.5:
            colour = _pick(rng, [c for c in COLOURS if c != g.colour])
        else:
            shape = _pick(rng, [s for s in SHAPES if s != g.shape])
    plural = g.count > 1
    np_ = _noun(shape, plural)
    if show_colour:
        np_ = f"{_colour_word(colour, rng if colour == MOTIF_COLOUR else None)} {np_}"
    if not plural and rng.random() < 0.5:
        np_ = f"{_an(np_)} {np_}"
    template = _pick(rng, ("{}", "picture of {}", "photo of {}", "drawing of {}", "my {}"))
    return template.format(np_)


def _count_word(n: int, rng: np.random.Generator | None, single: bool = False) -> str:
    if n == 1 and single and rng is not None and rng.random() < 0.5:
        return "a single"
    return NUMBERS[n - 1]


def _np(g: Group, rng: np.random.Generator | None, synonyms: bool) -> str:
    """'two small red circles' (canonical words) or with random synonyms."""
    r = rng if synonyms else None
    count = _count_word(g.count, rng if synonyms else None, single=synonyms)
    size = _syn(SIZE_SYNONYMS, g.size, r)
    colour = _colour_word(g.colour, rng) if g.colour == MOTIF_COLOUR else _colour_word(g.colour, r)
    shape = _noun(_syn(SHAPE_SYNONYMS, g.shape, r), g.count > 1)
    return f"{count} {size} {colour} {shape}"


def _ref(g: Group, rng: np.random.Generator) -> str:
    """'red circles' (a reference to a declared group)."""
    colour = _colour_word(g.colour, rng) if g.colour == MOTIF_COLOUR else g.colour
    return f"{colour} {_noun(g.shape, g.count > 1)}"


_REL_PHRASE = {
    "left of": "to the left of",
    "right of": "to the right of",
    "above": "above",
    "below": "below",
}
_POSITION = {  # relation of A to B -> (A's position phrase, B's)
    "left of": ("on the left", "on the right"),
    "right of": ("on the right", "on the left"),
    "above": ("at the top", "at the bottom"),
    "below": ("at the bottom", "at the top"),
}


def synthetic_caption(scene: Scene, style: str, rng: np.random.Generator) -> str:
    """A complete caption of the scene (every group's count, size, colour and shape, the
    background, the relation for two groups) in one of STYLES: "list" (comma-separated items),
    "sentence" (plain sentences) or "descriptive" (synonyms, positions such as "on the left" or
    relation phrases). Motif groups are named by a random MOTIF_SYNONYM."""
    _check(style, STYLES, "caption style")
    groups = list(scene.groups)
    rel = scene.relation if len(groups) == 2 else None
    if len(groups) == 2 and rel is None:
        raise ValueError("a two-group scene needs an unambiguous relation to be captioned")
    order = [0, 1] if len(groups) == 2 and rng.random() < 0.5 else [1, 0]
    if len(groups) == 1:
        order = [0]
    elif order == [1, 0]:
        rel = INVERSE_RELATION[rel]
    gs = [groups[i] for i in order]
    if style == "list":
        bg = f"{scene.background} background"
        items = [_np(g, rng, False) for g in gs]
        if rng.random() < 0.5:
            items.insert(0, bg)
        else:
            items.append(bg)
        if rel is not None:
            items.append(f"{_ref(gs[0], rng)} {rel} {_ref(gs[1], rng)}")
        return ", ".join(items)
    if style == "sentence":
        be = "is" if gs[0].count == 1 else "are"
        objs = " and ".join(_np(g, rng, False) for g in gs)
        if rng.random() < 0.5:
            text = f"There {be} {objs} on a {scene.background} background."
        else:
            text = f"The background is {scene.background}. There {be} {objs}."
        if rel is not None:
            be0 = "is" if gs[0].count == 1 else "are"
            text += f" The {_ref(gs[0], rng)} {be0} {_REL_PHRASE[rel]} the {_ref(gs[1], rng)}."
        return text
    bg = _syn(BACKGROUND_SYNONYMS, scene.background, rng)
    nps = [_np(g, rng, True) for g in gs]
    sit = "sits" if gs[0].count == 1 else "sit"
    form = int(rng.integers(3))
    if rel is None:
        if form == 0:
            return f"A picture of {nps[0]} on {_an(bg)} {bg} background."
        if form == 1:
            return f"{_cap(nps[0])} {sit} on {_an(bg)} {bg} background."
        return f"Against {_an(bg)} {bg} background you can see {nps[0]}."
    if form == 0:
        pa, pb = _POSITION[rel]
        return f"A picture of {nps[0]} {pa} and {nps[1]} {pb}, on {_an(bg)} {bg} background."
    if form == 1:
        return f"{_cap(nps[0])} {sit} {_REL_PHRASE[rel]} {nps[1]} on {_an(bg)} {bg} background."
    return (
        f"A picture of {nps[0]} {_REL_PHRASE[rel]} {nps[1]}, set against {_an(bg)} {bg} background."
    )


# ----------------------------------------------------------------------------------------------
# Facts: the atomic, checkable content of captions and prompts (Gecko-style decomposition)

Fact = tuple
FACT_KINDS = ("object", "count", "background", "relation")

_COLOUR_WORDS = {w: c for c, syn in COLOUR_SYNONYMS.items() for w in syn}
_SHAPE_WORDS = {}
for _shape, _syn_words in SHAPE_SYNONYMS.items():
    for _w in _syn_words:
        _SHAPE_WORDS[_w] = (_shape, False)
        _SHAPE_WORDS[PLURAL[_w]] = (_shape, True)
_SIZE_WORDS = {w: s for s, syn in SIZE_SYNONYMS.items() for w in syn}
_BG_WORDS = {w: b for b, syn in BACKGROUND_SYNONYMS.items() for w in syn}
_NUMBER_WORDS = {w: i + 1 for i, w in enumerate(NUMBERS)}
_POS_TRIGRAMS = {
    ("on", "the", "left"): "left",
    ("on", "the", "right"): "right",
    ("at", "the", "top"): "top",
    ("at", "the", "bottom"): "bottom",
}


def _idx(value: str | None, options: Sequence[str]) -> int:
    return -1 if value is None else options.index(value)


def _key_order(key: tuple[str | None, str | None]) -> tuple[int, int]:
    return (_idx(key[0], SHAPES), _idx(key[1], _OBJECT_NAMES))


def _fact_order(f: Fact) -> tuple:
    kind = f[0]
    if kind == "object":
        return (0, _idx(f[1], SHAPES), _idx(f[2], _OBJECT_NAMES), _idx(f[3], SIZES))
    if kind == "count":
        return (1, _idx(f[1], SHAPES), _idx(f[2], _OBJECT_NAMES), f[3])
    if kind == "background":
        return (2, _idx(f[1], tuple(BACKGROUNDS)))
    return (3, *_key_order(f[1]), RELATIONS.index(f[2]), *_key_order(f[3]))


def _validate_fact(f: Fact) -> None:
    if not isinstance(f, tuple) or not f:
        raise ValueError(f"a fact is a non-empty tuple, got {f!r}")
    _check(f[0], FACT_KINDS, "fact kind")
    if f[0] in ("object", "count"):
        if len(f) != 4:
            raise ValueError(f"{f[0]} facts have 4 fields, got {f!r}")
        if f[1] is not None:
            _check(f[1], SHAPES, "shape")
        if f[2] is not None:
            _check(f[2], _OBJECT_NAMES, "colour")
        if f[0] == "object" and f[3] is not None:
            _check(f[3], SIZES, "size")
        if f[0] == "count" and not (isinstance(f[3], (int, np.integer)) and f[3] >= 0):
            raise ValueError(f"count facts need a non-negative count, got {f!r}")
    elif f[0] == "background":
        if len(f) != 2:
            raise ValueError(f"background facts have 2 fields, got {f!r}")
        _check(f[1], BACKGROUNDS, "background")
    else:
        if len(f) != 4:
            raise ValueError(f"relation facts have 4 fields, got {f!r}")
        _check(f[2], RELATIONS, "relation")


def _implies(g: Fact, f: Fact) -> bool:
    """Whether fact g implies the (different) object fact f."""
    if f[0] != "object" or g == f:
        return False
    if g[0] == "object":
        return all(fv is None or fv == gv for fv, gv in zip(f[1:], g[1:]))
    if g[0] == "count":
        return (
            f[3] is None
            and g[3] >= 1
            and all(fv is None or fv == gv for fv, gv in zip(f[1:3], g[1:3]))
        )
    return False


def canonical_facts(facts: Iterable[Fact]) -> tuple[Fact, ...]:
    """Deduplicate, orient relations (lower (shape, colour) key first), drop object facts that
    another fact implies, and sort."""
    out = set()
    for f in facts:
        f = tuple(f)
        _validate_fact(f)
        if f[0] == "relation":
            a, rel, b = tuple(f[1]), f[2], tuple(f[3])
            if _key_order(b) < _key_order(a):
                a, rel, b = b, INVERSE_RELATION[rel], a
            f = ("relation", a, rel, b)
        out.add(f)
    kept = [f for f in out if not any(_implies(g, f) for g in out)]
    return tuple(sorted(kept, key=_fact_order))


def scene_facts(scene: Scene) -> tuple[Fact, ...]:
    """The complete fact set of a scene: per group an object fact (shape, colour, size) and a
    count fact, the background, and the relation of two groups."""
    facts: list[Fact] = []
    for g in scene.groups:
        facts.append(("object", g.shape, g.colour, g.size))
        facts.append(("count", g.shape, g.colour, g.count))
    facts.append(("background", scene.background))
    if len(scene.groups) == 2 and scene.relation is not None:
        facts.append(("relation", scene.groups[0].key, scene.relation, scene.groups[1].key))
    return canonical_facts(facts)


@dataclass
class _Phrase:
    start: int
    end: int  # index of the shape word
    shape: str
    plural: bool
    colour: str | None = None
    size: str | None = None
    count: int | None = None
    article: bool = False
    position: str | None = None


def _phrases(tokens: list[str]) -> tuple[list[_Phrase], set[int]]:
    phrases, used = [], set()
    for i, t in enumerate(tokens):
        if t not in _SHAPE_WORDS:
            continue
        shape, plural = _SHAPE_WORDS[t]
        p = _Phrase(i, i, shape, plural)
        j = i - 1
        while j >= 0:
            w = tokens[j]
            if w in _COLOUR_WORDS and p.colour is None:
                p.colour = _COLOUR_WORDS[w]
            elif w in _SIZE_WORDS and p.size is None:
                p.size = _SIZE_WORDS[w]
            else:
                break
            j -= 1
        if j >= 0 and tokens[j] == "single" and j >= 1 and tokens[j - 1] in ("a", "an"):
            p.count, j = 1, j - 2
        elif j >= 0 and tokens[j] in _NUMBER_WORDS:
            p.count, j = _NUMBER_WORDS[tokens[j]], j - 1
            used.add(j + 1)
        elif j >= 0 and tokens[j] in ("a", "an"):
            p.article, j = True, j - 1
        p.start = j + 1
        tri = tuple(tokens[i + 1 : i + 4])
        if tri in _POS_TRIGRAMS:
            p.position = _POS_TRIGRAMS[tri]
        phrases.append(p)
    return phrases, used


def parse_caption(text: str) -> tuple[Fact, ...]:
    """Read a caption or prompt into canonical facts. Object phrases are
    [number | "a single" | a/an] [size] [colour] [size] shape; a number makes a count fact
    (a dangling number, as in "the number of red circles is three", counts the nearest bare
    phrase before it), every phrase an object fact; "left of", "right of", "above", "below"
    relate the phrases either side, "on the left"/"at the top"... relate positioned phrases;
    a background colour word gives the background. Synthetic captions parse back to
    `scene_facts` of their scene."""
    tokens = words(text)
    phrases, used = _phrases(tokens)
    for i, t in enumerate(tokens):
        if t in _NUMBER_WORDS and i not in used:
            bare = [p for p in phrases if p.end < i and p.count is None and not p.article]
            if not bare:
                bare = [p for p in phrases if p.start > i and p.count is None and not p.article]
                bare = bare[:1]
            if bare:
                bare[-1].count = _NUMBER_WORDS[t]
    facts: list[Fact] = []
    for p in phrases:
        facts.append(("object", p.shape, p.colour, p.size))
        if p.count is not None:
            facts.append(("count", p.shape, p.colour, p.count))
    for w in tokens:
        if w in _BG_WORDS:
            facts.append(("background", _BG_WORDS[w]))
    for i in range(len(tokens)):
        rel = None
        if tokens[i] in ("left", "right") and i + 1 < len(tokens) and tokens[i + 1] == "of":
            rel, after = f"{tokens[i]} of", i + 2
        elif tokens[i] in ("above", "below"):
            rel, after = tokens[i], i + 1
        if rel is None:
            continue
        before = [p for p in phrases if p.end < i]
        nxt = [p for p in phrases if p.start >= after]
        if before and nxt:
            a, b = before[-1], nxt[0]
            facts.append(("relation", (a.shape, a.colour), rel, (b.shape, b.colour)))
    placed = [p for p in phrases if p.position is not None]
    for a in placed:
        for b in placed:
            pair = (a.position, b.position)
            if pair == ("left", "right"):
                facts.append(("relation", (a.shape, a.colour), "left of", (b.shape, b.colour)))
            elif pair == ("top", "bottom"):
                facts.append(("relation", (a.shape, a.colour), "above", (b.shape, b.colour)))
    return canonical_facts(facts)


def _matches(o: PObject, shape: str | None, colour: str | None, size: str | None = None) -> bool:
    return (
        o.shape is not None
        and (shape is None or o.shape == shape)
        and (colour is None or o.colour == colour)
        and (size is None or o.size == size)
    )


def check_facts(
    facts: Sequence[Fact], perceived: Perceived, wc: WorldConfig | None = None
) -> np.ndarray:
    """One bool per fact: does the perceived image satisfy it? Unspecified (None) attributes
    accept any value; relations use GenEval's rule on the centroids of the matching objects
    (object sizes at `wc.res`, by default the image's `perceived.res`)."""
    res = perceived.res if wc is None else wc.res
    out = np.zeros(len(facts), bool)
    objs = perceived.objects
    for i, f in enumerate(facts):
        _validate_fact(tuple(f))
        kind = f[0]
        if kind == "object":
            out[i] = any(_matches(o, f[1], f[2], f[3]) for o in objs)
        elif kind == "count":
            out[i] = sum(_matches(o, f[1], f[2]) for o in objs) == f[3]
        elif kind == "background":
            out[i] = perceived.background == f[1]
        else:
            a = [o for o in objs if _matches(o, *f[1])]
            b = [o for o in objs if _matches(o, *f[3])]
            if a and b and not set(map(id, a)) & set(map(id, b)):
                ca = np.mean([o.centre for o in a], axis=0)
                cb = np.mean([o.centre for o in b], axis=0)
                da = float(np.mean([SIZE_FRACTIONS[o.size] * res for o in a]))
                db = float(np.mean([SIZE_FRACTIONS[o.size] * res for o in b]))
                out[i] = f[2] in geneval_relations(ca, cb, da, db)
    return out


def _describe(shape: str | None, colour: str | None, size: str | None, plural: bool) -> str:
    parts = [p for p in (size, colour) if p is not None]
    parts.append(_noun(shape or "shape", plural))
    return " ".join(parts)


def fact_question(fact: Fact) -> str:
    """An English yes/no question for one fact (words in VOCAB)."""
    f = tuple(fact)
    _validate_fact(f)
    if f[0] == "object":
        d = _describe(f[1], f[2], f[3], False)
        return f"is there {_an(d)} {d}?"
    if f[0] == "count":
        n = int(f[3])
        if n == 0:
            return f"are there no {_describe(f[1], f[2], None, True)}?"
        if n == 1:
            return f"is there exactly one {_describe(f[1], f[2], None, False)}?"
        return f"are there exactly {NUMBERS[n - 1]} {_describe(f[1], f[2], None, True)}?"
    if f[0] == "background":
        return f"is the background {f[1]}?"
    a = _describe(f[1][0], f[1][1], None, False)
    b = _describe(f[3][0], f[3][1], None, False)
    return f"is the {a} {f[2]} the {b}?"
