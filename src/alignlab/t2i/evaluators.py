"""Learned auto-eval metrics (Imagen Team 2024, Sec. 3.2.1 and App. C.1), SIMULATED.

Imagen 3 scores prompt-image alignment with CLIPScore, with Gecko (a VQA model answering the
prompt's atomic questions) and with VQAScore (Lin et al.: P("yes" | image, "Does this figure
show '{prompt}'?")), and validates each against human side-by-side verdicts (App. C.1).
The report's evaluators are large pretrained models; here they are small networks trained
from scratch, in seconds, on the shapes world. They are simulations of those evaluators, not
the evaluators themselves, and they are trained ONLY on held-out renders (scenes drawn by
`prompts.heldout_scene` from a stream disjoint from the training pool), with captions and
questions written by `world`.

- `ClipEvaluator`: a CLIP-like dual encoder. Image tower: a small CNN (with coordinate
  channels), mean- and max-pooled, projected. Text tower: mean-pooled word embeddings and an
  MLP, i.e. an explicit bag of words. Why: contrastively trained CLIPs are known to behave
  like bags of words (Yuksekgonul et al. 2023: they barely use word order or attribute
  binding), and a bag of words is
  the cheapest text encoder on 2 CPU cores; the metric-validation experiment relies on this
  property, so it is made explicit rather than hoped for. Loss: symmetric InfoNCE with
  in-batch negatives and a learned temperature. `clip_score` is CLIPScore's form,
  100 * max(cos, 0); `features` gives L2-normalised image embeddings (FD / CMMD space).
- `VQAEvaluator`: P(yes | image, question), a small neuro-symbolic VQA model (in the spirit
  of NS-VQA, Yi et al. 2018: a supervised scene parser and a supervised question parser, with
  the answer logic learned here). Image side: a CNN whose dense head finds object centres and
  reads their shape, colour and size (CenterNet-like, supervised by the renders' scene
  graphs), and a reading of the background. Question side: a GRU (word order matters: "the
  red circle left of the blue square" vs its mirror) emits attribute queries, supervised by
  the facts the question asks. Per query the matched objects give a count, an existence score
  and a centroid, which an MLP turns, with the question, into the answer, trained on the
  labels. Questions: `world.fact_question` questions with minimal-pair negatives (one
  attribute flipped: colour, shape, size, count +-1, background, relation) and whole-caption
  questions (VQASCORE_TEMPLATE around a caption) whose negatives caption a minimally edited
  scene (an attribute, a count, the binding of colours to shapes, the layout mirrored).
  Every label is the truth of the question's facts on the rendered scene's graph.
  `vqascore` asks the whole prompt (VQAScore form); `gecko` averages P(yes) over the prompt's
  atomic fact questions (Gecko form).

Both train deterministically from their config's seed on one torch thread, report held-out
accuracy, and save / load as safetensors (+ JSON) folders, cached content-addressed by
`cached_clip` / `cached_vqa` in `$ALIGNLAB_CACHE/t2i-evaluators/`.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from alignlab.core.cache import cached_folder, content_key
from alignlab.core.config import param
from alignlab.core.errors import AlignlabError
from alignlab.core.io import atomic_write_text
from alignlab.core.resources import torch_threads
from alignlab.core.seeding import generator, seed_torch
from alignlab.nn.infonce import symmetric_infonce

CACHE_KIND = "t2i-evaluators"
VQASCORE_TEMPLATE = "Does this figure show '{}'? Please answer yes or no."
"""Lin et al.'s VQAScore question, the one Imagen 3 used (App. C.1)."""
PAD, UNK = 0, 1


# ---------------------------------------------------------------------------------------------
# Text: a word-level codec over the closed vocabulary


def words(text: str) -> list[str]:
    """Lower-case words, punctuation stripped (the rule of `world.words`)."""
    return re.findall(r"[a-z]+", text.lower())


class WordCodec:
    """Word ids over a closed vocabulary: 0 = <pad>, 1 = <unk>, then the sorted words."""

    def __init__(self, vocab: Sequence[str]):
        self.vocab = tuple(sorted(set(vocab)))
        self.index = {w: i + 2 for i, w in enumerate(self.vocab)}
        self.unknown = 0  # out-of-vocabulary words seen by `encode`

    def __len__(self) -> int:
        return len(self.vocab) + 2

    def encode(self, texts: Sequence[str], max_len: int) -> torch.Tensor:
        """(N, L) int64 ids, L = min(max_len, longest text); longer texts are truncated."""
        rows = [[self.index.get(w, UNK) for w in words(t)][:max_len] for t in texts]
        self.unknown += sum(r.count(UNK) for r in rows)
        width = max(1, max((len(r) for r in rows), default=1))
        out = torch.zeros((len(rows), width), dtype=torch.int64)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.tensor(r, dtype=torch.int64)
        return out


# ---------------------------------------------------------------------------------------------
# Networks


def coords(n: int, h: int, w: int) -> torch.Tensor:
    """(n, 2, h, w) x and y coordinate channels in [-1, 1] (CoordConv)."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    return torch.stack([xx, yy]).expand(n, 2, h, w)


class ImageStem(nn.Module):
    """A small CNN: 32x32 image (+ coordinates) -> (N, C, H/4, W/4) feature map."""

    def __init__(self, channels: Sequence[int]):
        super().__init__()
        c0, c1, c2 = channels
        self.c1 = nn.Conv2d(5, c0, 3, padding=1)
        self.c2 = nn.Conv2d(c0, c1, 3, stride=2, padding=1)
        self.c3 = nn.Conv2d(c1, c2, 3, stride=2, padding=1)
        self.out_channels = c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        x = torch.cat([x, coords(n, h, w)], 1)
        return F.relu(self.c3(F.relu(self.c2(F.relu(self.c1(x))))))


def pool(f: torch.Tensor) -> torch.Tensor:
    """Mean and max over space: (N, C, H, W) -> (N, 2C)."""
    return torch.cat([f.mean((2, 3)), f.amax((2, 3))], 1)


class BagOfWords(nn.Module):
    """Mean-pooled word embeddings and a 2-layer MLP (word order is ignored by design)."""

    def __init__(self, vocab_size: int, width: int, out: int):
        super().__init__()
        self.emb = nn.Embedding(vocab_size, width, padding_idx=PAD)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, out))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != PAD).float().unsqueeze(-1)
        mean = (self.emb(ids) * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return self.mlp(mean)


class DualEncoder(nn.Module):
    """CLIP-like: CNN image tower, bag-of-words text tower, learned temperature."""

    def __init__(self, vocab_size: int, channels: Sequence[int], width: int, embed: int):
        super().__init__()
        self.stem = ImageStem(channels)
        self.img_proj = nn.Sequential(
            nn.Linear(2 * self.stem.out_channels, width), nn.ReLU(), nn.Linear(width, embed)
        )
        self.text = BagOfWords(vocab_size, width, embed)
        self.log_scale = nn.Parameter(torch.tensor(float(np.log(10.0))))  # CLIP: 1 / 0.07

    def image_embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.img_proj(pool(self.stem(x))), dim=-1)

    def text_embed(self, ids: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text(ids), dim=-1)

    def logits(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        scale = self.log_scale.clamp(max=float(np.log(100.0))).exp()
        return scale * self.image_embed(x) @ self.text_embed(ids).T


AUX_OUT = 1 + 3 + 7 + 2  # centre-ness, shape, colour (6 + motif), size per feature cell


N_COUNTS = 9  # count features: soft indicators of 0..8 objects
RELATION_PAIRS = ((0, 1), (0, 2), (1, 2))  # query pairs whose centroid offsets the head sees


class QueryVQA(nn.Module):
    """P(yes | image, question) by question-conditioned attribute queries over detected objects.

    Image side: a small CNN gives a feature per 4x4-pixel cell, and a dense head on it predicts
    per cell the centre-ness of an object and that object's shape, colour and size
    (CenterNet-like). It is trained on the renders' scene graphs (detection pretraining), and by
    the answers. Question side: a GRU reads the question (word order matters) and emits `slots`
    queries, each a distribution over every attribute's values plus "any". A query's match with
    a cell is the product over attributes of (query . predicted attribute distribution), so per
    query the centre-weighted matches give a count (their sum, also as soft indicators of
    0..8), an existence score (their max) and a centroid (their weighted mean position). An MLP
    combines these with the question and pooled image features into the answer's logit."""

    def __init__(
        self, vocab_size: int, channels: Sequence[int], width: int, blocks: int, slots: int = 8
    ):
        super().__init__()
        self.stem = ImageStem(channels)
        c = self.stem.out_channels
        self.slots = slots
        self.emb = nn.Embedding(vocab_size, width // 2, padding_idx=PAD)
        self.gru = nn.GRU(width // 2, width, batch_first=True)
        layers: list[nn.Module] = []
        for i in range(blocks):  # the first with 3x3 context (shapes), the rest 1x1
            layers += [nn.Conv2d(c, c, 3 if i == 0 else 1, padding=1 if i == 0 else 0), nn.ReLU()]
        self.cells = nn.Sequential(*layers)
        self.aux = nn.Conv2d(c, AUX_OUT, 1)
        self.query = nn.Linear(width, slots * (4 + 8 + 3))
        self.bg_read = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 3))
        self.bg_query = nn.Linear(width, 4)  # 3 backgrounds + "any"
        per_slot = N_COUNTS + 1 + 1 + 2
        n_pairs = sum(j < slots for _, j in RELATION_PAIRS)
        self.head = nn.Sequential(
            nn.Linear(2 * c + 1 + width + per_slot * slots + 2 * n_pairs, 2 * width),
            nn.ReLU(),
            nn.Linear(2 * width, width),
            nn.ReLU(),
            nn.Linear(width, 1),
        )

    def question(self, ids: torch.Tensor) -> torch.Tensor:
        lengths = (ids != PAD).sum(1).clamp_min(1)
        packed = nn.utils.rnn.pack_padded_sequence(
            self.emb(ids), lengths, batch_first=True, enforce_sorted=False
        )
        return self.gru(packed)[1][0]

    def forward(
        self, x: torch.Tensor, ids: torch.Tensor, with_aux: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        f0 = self.stem(x)
        aux = self.aux(self.cells(f0))
        q = self.question(ids)
        n, c, h, w = f0.shape
        a = aux.flatten(2)  # (n, AUX_OUT, hw)
        centre = torch.sigmoid(a[:, 0])[:, None]  # (n, 1, hw)
        qk = self.query(q).view(n, self.slots, 15)
        match = torch.ones((n, self.slots, h * w))
        for lo, hi, qlo in ((1, 4, 0), (4, 11, 4), (11, 13, 12)):
            p = torch.softmax(a[:, lo:hi], 1)  # (n, values, hw)
            k = hi - lo
            qv = torch.softmax(qk[..., qlo : qlo + k + 1], -1)  # values + "any"
            match = match * (torch.einsum("nkv,nvp->nkp", qv[..., :k], p) + qv[..., k:])
        m = match * centre
        count = m.sum(2)
        exist = m.amax(2)
        xy = coords(1, h, w).flatten(2)[0]  # (2, hw)
        centroid = torch.einsum("nkp,cp->nkc", m, xy) / (count[..., None] + 1e-2)
        levels = torch.arange(N_COUNTS, dtype=count.dtype)
        soft = torch.exp(-((count[..., None] - levels) ** 2) / 0.18)  # (n, k, N_COUNTS)
        slot_feats = torch.cat([soft, count[..., None] / 4, exist[..., None], centroid], -1)
        # the background: read from the border colour, queried like an attribute
        border = torch.cat([x[:, :, 0], x[:, :, -1], x[:, :, :, 0], x[:, :, :, -1]], 2)
        bg_logits = self.bg_read(border.mean(2))
        bq_logits = self.bg_query(q)
        bq = torch.softmax(bq_logits, -1)
        bg_match = (bq[:, :3] * torch.softmax(bg_logits, -1)).sum(1, keepdim=True) + bq[:, 3:]
        # relations: centroid offsets between the first queries (a relation's two sides)
        offsets = [centroid[:, i] - centroid[:, j] for i, j in RELATION_PAIRS if j < self.slots]
        feats = torch.cat([pool(f0), bg_match, q, slot_feats.flatten(1), *offsets], 1)
        logit = self.head(feats).squeeze(1)
        if with_aux:
            return logit, {"dense": aux, "slots": qk, "bg": bg_logits, "bg_query": bq_logits}
        return logit


def aux_targets(scenes: Sequence, wc: Any, cells: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense targets of the auxiliary head on a `cells` x `cells` grid: centre-ness (N, h, w)
    and (N, 3, h, w) class ids (shape, colour, size) of the object centred in a cell, -100
    where none is."""
    from alignlab.t2i import world

    colours = (*world.COLOURS, world.MOTIF_COLOUR)
    centre = torch.zeros((len(scenes), cells, cells))
    cls = torch.full((len(scenes), 3, cells, cells), -100, dtype=torch.int64)
    for i, s in enumerate(scenes):
        for g, cs in zip(s.groups, s.centres):
            for x, y in cs:
                cx = min(cells - 1, int(x * cells / wc.res))
                cy = min(cells - 1, int(y * cells / wc.res))
                centre[i, cy, cx] = 1.0
                cls[i, 0, cy, cx] = world.SHAPES.index(g.shape)
                cls[i, 1, cy, cx] = colours.index(g.colour)
                cls[i, 2, cy, cx] = world.SIZES.index(g.size)
    return centre, cls


def aux_loss(out: torch.Tensor, centre: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """Centre-ness BCE plus shape / colour / size cross-entropy at object centres."""
    loss = F.binary_cross_entropy_with_logits(out[:, 0], centre, pos_weight=torch.tensor(4.0))
    for j, (lo, hi) in enumerate(((1, 4), (4, 11), (11, 13))):
        if (cls[:, j] >= 0).any():
            loss = loss + F.cross_entropy(out[:, lo:hi], cls[:, j], ignore_index=-100)
    return loss


# ---------------------------------------------------------------------------------------------
# Configs


@dataclass(frozen=True)
class ClipConfig:
    n_scenes: int = param(3000, ge=32, help="held-out scenes rendered for training")
    n_eval: int = param(512, ge=32, help="further held-out scenes for the reported accuracy")
    steps: int = param(1200, ge=1, help="optimiser steps")
    batch: int = param(64, ge=2, help="batch size (in-batch negatives)")
    lr: float = param(2e-3, gt=0, help="AdamW learning rate")
    channels: tuple[int, int, int] = param((16, 32, 48), help="CNN widths")
    width: int = param(96, ge=8, help="hidden width of the towers")
    embed: int = param(64, ge=8, help="joint embedding size")
    max_len: int = param(64, ge=4, help="words read per text")
    augment: float = param(0.5, ge=0, le=1, help="share of images blurred and noised")
    seed: int = param(0, ge=0, help="training seed (weights, data, batches)")


@dataclass(frozen=True)
class VQAConfig:
    n_scenes: int = param(3000, ge=32, help="held-out scenes rendered for training")
    n_questions: int = param(30000, ge=64, help="training questions (balanced yes / no)")
    n_eval: int = param(600, ge=32, help="held-out scenes for the reported accuracy")
    whole_share: float = param(0.35, ge=0, le=1, help="share of whole-caption questions")
    steps: int = param(1400, ge=1, help="optimiser steps")
    batch: int = param(64, ge=2, help="batch size")
    lr: float = param(2e-3, gt=0, help="AdamW learning rate")
    channels: tuple[int, int, int] = param((16, 32, 48), help="CNN widths")
    width: int = param(96, ge=8, help="question GRU width")
    blocks: int = param(2, ge=0, help="conv layers between the stem and the dense head")
    slots: int = param(8, ge=1, help="question-conditioned object queries")
    aux_weight: float = param(
        1.0, ge=0, help="weight of the auxiliary losses (objects, question parse, background)"
    )
    max_len: int = param(64, ge=4, help="words read per question")
    augment: float = param(0.5, ge=0, le=1, help="share of images blurred and noised")
    seed: int = param(0, ge=0, help="training seed (weights, data, batches)")


CLIP_PRESETS = {
    "smoke": ClipConfig(n_scenes=128, n_eval=64, steps=30, batch=32),
    "quick": ClipConfig(),
}
VQA_PRESETS = {
    "smoke": VQAConfig(n_scenes=128, n_questions=512, n_eval=64, steps=30, batch=32),
    "quick": VQAConfig(),
}


# ---------------------------------------------------------------------------------------------
# Shared helpers


def as_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1], with one clear error otherwise."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"images must be uint8 of shape (N, H, W, 3), got {images.dtype} {images.shape}"
        )
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


_BLUR = None


def augment(x: torch.Tensor, share: float, gen: torch.Generator) -> torch.Tensor:
    """Blur (3x3 binomial, 1-2 passes) and noise a `share` of the images, so evaluators trained
    on clean renders also read the blurry outputs of a small diffusion model."""
    global _BLUR
    if share <= 0:
        return x
    if _BLUR is None:
        k = torch.tensor([1.0, 2.0, 1.0])
        _BLUR = (k[:, None] * k[None, :] / 16).expand(3, 1, 3, 3).contiguous()
    n = x.shape[0]
    pick = torch.rand(n, generator=gen) < share
    if not pick.any():
        return x
    y = x[pick]
    passes = int(torch.randint(1, 3, (1,), generator=gen))
    for _ in range(passes):
        y = F.conv2d(F.pad(y, (1, 1, 1, 1), mode="replicate"), _BLUR, groups=3)
    y = y + 0.04 * torch.randn(y.shape, generator=gen)
    x = x.clone()
    x[pick] = y.clamp(-1, 1)
    return x


def _save(folder: Path, net: nn.Module, info: dict) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in net.state_dict().items()}, folder / "model.safetensors"
    )
    atomic_write_text(folder / "evaluator.json", json.dumps(info, indent=1, sort_keys=True))


def _load(folder: str | Path) -> tuple[dict, dict]:
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        info = json.loads((folder / "evaluator.json").read_text(encoding="utf-8"))
        tensors = load_file(str(folder / "model.safetensors"))
    except Exception as e:
        raise AlignlabError(
            f"{folder} is not a complete evaluator folder (evaluator.json + model.safetensors): "
            f"{type(e).__name__}: {e}"
        ) from e
    return info, tensors


def _batched(fn, n: int, batch: int = 256) -> torch.Tensor:
    return torch.cat([fn(slice(i, min(n, i + batch))) for i in range(0, n, batch)])


def _check_lengths(images: np.ndarray, texts: Sequence[Any]) -> None:
    if len(images) != len(texts):
        raise ValueError(f"got {len(images)} images but {len(texts)} prompts/questions")


def _text(p: Any) -> str:
    """A prompt's text: a `prompts.Prompt` or a plain string."""
    text = getattr(p, "text", p)
    if not isinstance(text, str):
        raise ValueError(f"expected a prompt (str or Prompt), got {type(p).__name__}")
    return text


def _facts(p: Any) -> tuple:
    """A prompt's atomic facts: `Prompt.facts`, or the facts `world.parse_caption` reads."""
    from alignlab.t2i import world

    facts = getattr(p, "facts", None)
    return tuple(facts) if facts is not None else tuple(world.parse_caption(_text(p)))


# ---------------------------------------------------------------------------------------------
# Held-out data: scenes, renders, truthful labels


def heldout_scenes(n: int, rng: np.random.Generator, wc: Any) -> list:
    """`n` scenes from the held-out stream (`prompts.heldout_scene`), never the training pool."""
    from alignlab.t2i import prompts

    return [prompts.heldout_scene(rng, wc) for _ in range(n)]


def scene_perceived(scene: Any) -> Any:
    """The `world.Perceived` a perfect eye would report for `scene` (every object parsed)."""
    from alignlab.t2i import world

    objects = []
    for g, centres in zip(scene.groups, scene.centres):
        for c in centres:
            objects.append(
                world.PObject(
                    shape=g.shape,
                    colour=g.colour,
                    size=g.size,
                    centre=tuple(c),
                    iou=1.0,
                    purity=1.0,
                    area=1,
                )
            )
    return world.Perceived(background=scene.background, objects=tuple(objects))


def facts_true(facts: Sequence[tuple], scene: Any) -> bool:
    """Whether every fact holds on the scene's graph (world.check_facts on a perfect eye)."""
    from alignlab.t2i import world

    if not facts:
        return True
    return bool(np.all(world.check_facts(tuple(facts), scene_perceived(scene))))


def _other(options: Sequence, value: Any, rng: np.random.Generator) -> Any:
    rest = [o for o in options if o != value]
    return rest[int(rng.integers(len(rest)))]


def _loosen(fact: tuple, rng: np.random.Generator) -> tuple:
    """Drop some attributes of an object / count fact (prompts are often partial)."""
    kind = fact[0]
    if kind == "object" and rng.random() < 0.5:
        f = list(fact)
        keep = rng.random(3) < 0.5
        keep[int(rng.integers(3))] = True
        for i in range(3):
            if not keep[i]:
                f[1 + i] = None
        return tuple(f)
    if kind == "count" and rng.random() < 0.3:
        f = list(fact)
        f[1 + int(rng.integers(2))] = None
        if f[1] is None and f[2] is None:
            f[1] = fact[1]
        return tuple(f)
    return fact


def flip_fact(fact: tuple, rng: np.random.Generator) -> tuple:
    """A minimal-pair edit of one fact: one attribute changed (colour, shape, size, count +-1,
    background, relation or its sides swapped)."""
    from alignlab.t2i import world

    colours, kind = tuple(world.COLOURS), fact[0]
    if kind == "object":
        f = list(fact)
        slots = [i for i in (1, 2, 3) if f[i] is not None] or [1]
        i = slots[int(rng.integers(len(slots)))]
        f[i] = _other((world.SHAPES, colours, world.SIZES)[i - 1], f[i], rng)
        return tuple(f)
    if kind == "count":
        f = list(fact)
        r = rng.random()
        if r < 0.6 or (f[1] is None and f[2] is None):
            n = int(f[3])
            f[3] = n + 1 if n <= 1 or rng.random() < 0.5 else n - 1
        elif f[2] is not None and (f[1] is None or r < 0.8):
            f[2] = _other(colours, f[2], rng)
        else:
            f[1] = _other(world.SHAPES, f[1], rng)
        return tuple(f)
    if kind == "background":
        return ("background", _other(tuple(world.BACKGROUNDS), fact[1], rng))
    if kind == "relation":
        _, a, rel, b = fact
        r = rng.random()
        if r < 0.4:
            return ("relation", a, _other(world.RELATIONS, rel, rng), b)
        if r < 0.7:
            return ("relation", b, rel, a)
        side = list(a if r < 0.85 else b)
        j = 1 if side[1] is not None else 0
        side[j] = _other(colours if j == 1 else world.SHAPES, side[j], rng)
        return ("relation", tuple(side), rel, b) if r < 0.85 else ("relation", a, rel, tuple(side))
    raise ValueError(f"unknown fact kind {kind!r}; valid: object, count, background, relation")


def _edit_scene(scene: Any, rng: np.random.Generator, wc: Any) -> Any:
    import dataclasses

    from alignlab.t2i import world

    groups, centres = list(scene.groups), [list(c) for c in scene.centres]
    ops = ["colour", "shape", "size", "count", "background"]
    if len(groups) == 2:
        ops += ["swap", "swap", "mirror", "mirror"]
    op = ops[int(rng.integers(len(ops)))]
    g = int(rng.integers(len(groups)))
    grp = groups[g]
    if op == "colour":
        groups[g] = dataclasses.replace(grp, colour=_other(tuple(world.COLOURS), grp.colour, rng))
    elif op == "shape":
        groups[g] = dataclasses.replace(grp, shape=_other(world.SHAPES, grp.shape, rng))
    elif op == "size":
        groups[g] = dataclasses.replace(grp, size=_other(world.SIZES, grp.size, rng))
    elif op == "count":
        total = sum(x.count for x in groups)
        if grp.count == 1 or (total < wc.max_objects and rng.random() < 0.5):
            x, y = centres[g][-1]
            centres[g].append((min(wc.res - 1.0, x + 1.0), y))
        else:
            centres[g].pop()
        groups[g] = dataclasses.replace(grp, count=len(centres[g]))
    elif op == "background":
        return dataclasses.replace(
            scene, background=_other(tuple(world.BACKGROUNDS), scene.background, rng)
        )
    elif op == "swap":
        a, b = groups
        if a.colour != b.colour:  # bind the colours the other way round
            groups = [
                dataclasses.replace(a, colour=b.colour),
                dataclasses.replace(b, colour=a.colour),
            ]
        else:  # same colour: bind the shapes the other way round
            groups = [dataclasses.replace(a, shape=b.shape), dataclasses.replace(b, shape=a.shape)]
    else:  # mirror the layout: the relation flips
        axis = 0 if scene.relation in ("left of", "right of") else 1
        centres = [
            [(wc.res - x, y) if axis == 0 else (x, wc.res - y) for x, y in c] for c in centres
        ]
    return world.Scene(scene.background, tuple(groups), tuple(tuple(c) for c in centres))


def perturb_scene(scene: Any, rng: np.random.Generator, wc: Any) -> Any:
    """A minimally edited scene: one group's colour, shape, size or count, the background,
    the two groups' colours swapped (binding), or the layout mirrored (relation). Edits that
    give an invalid scene (two equal groups, an ambiguous relation) are redrawn."""
    for _ in range(20):
        try:
            out = _edit_scene(scene, rng, wc)
        except ValueError:
            continue
        if len(out.groups) < 2 or out.relation is not None:
            return out
    return scene


def partial_caption(scene: Any, rng: np.random.Generator) -> str:
    """A prompt-like, partial description: each group (or one of two) with some of its
    attributes and maybe its count, maybe the background, maybe the relation."""
    from alignlab.t2i import world

    def pick(options):
        return options[int(rng.integers(len(options)))]

    def mention(g) -> str:
        parts = []
        if rng.random() < 0.3:
            parts.append(pick(world.SIZE_SYNONYMS[g.size]))
        if rng.random() < 0.7 or g.colour == world.MOTIF_COLOUR:
            parts.append(pick(world.COLOUR_SYNONYMS[g.colour]))
        noun = pick(world.SHAPE_SYNONYMS[g.shape])
        counted = rng.random() < 0.5
        if counted:
            noun = world.PLURAL[noun] if g.count > 1 else noun
            return " ".join([world.NUMBERS[g.count - 1], *parts, noun])
        head = " ".join([*parts, noun])
        return f"{'an' if head[0] in 'aeiou' else 'a'} {head}"

    groups = list(scene.groups)
    if len(groups) == 2 and rng.random() < 0.7:
        a, b = (0, 1) if rng.random() < 0.5 else (1, 0)
        ta, tb = mention(groups[a]), mention(groups[b])
        rel = scene.relation if a == 0 else world.INVERSE_RELATION[scene.relation]
        if rel is not None and rng.random() < 0.5:
            phrase = {"left of": "to the left of", "right of": "to the right of"}.get(rel, rel)
            text = f"{ta} {phrase} {tb}"
        else:
            text = f"{ta} and {tb}"
    else:
        text = mention(pick(groups))
    if rng.random() < 0.4:
        bg = pick(world.BACKGROUND_SYNONYMS[scene.background])
        text = f"{text} on {'an' if bg[0] in 'aeiou' else 'a'} {bg} background"
    if rng.random() < 0.2:
        text = f"{pick(('a picture of', 'a drawing of', 'a photo of'))} {text}"
    return text


def caption_of(scene: Any, rng: np.random.Generator) -> str:
    """A text describing the scene: a complete synthetic caption (any style, 40 %), a clean
    original caption (15 %) or a partial, prompt-like description (45 %)."""
    from alignlab.t2i import world

    r = rng.random()
    if r < 0.4:
        style = world.STYLES[int(rng.integers(len(world.STYLES)))]
        return world.synthetic_caption(scene, style, rng)
    if r < 0.55:
        return world.original_caption(scene, rng, wrong_p=0.0)
    return partial_caption(scene, rng)


def fact_example(scene: Any, rng: np.random.Generator, negative: bool) -> tuple[str, int, tuple]:
    """One atomic question about `scene`, its truthful label and the fact it asks."""
    from alignlab.t2i import world

    facts = world.scene_facts(scene)
    f = _loosen(facts[int(rng.integers(len(facts)))], rng)
    if negative:
        f = flip_fact(f, rng)
    return world.fact_question(f), int(facts_true((f,), scene)), (f,)


def whole_example(
    scene: Any, rng: np.random.Generator, negative: bool, wc: Any
) -> tuple[str, int, tuple]:
    """One whole-caption question (VQASCORE_TEMPLATE around a caption) and its label: the
    caption describes the scene, or (negative) a minimally edited copy of it."""
    from alignlab.t2i import world

    src = perturb_scene(scene, rng, wc) if negative else scene
    text = caption_of(src, rng)
    facts = world.parse_caption(text)
    return VQASCORE_TEMPLATE.format(text), int(facts_true(facts, scene)), facts


def _render(scenes: Sequence, wc: Any) -> np.ndarray:
    from alignlab.t2i import world

    return world.render_batch(list(scenes), wc)


def _world_config(wc: Any) -> Any:
    from alignlab.t2i import world

    return world.WorldConfig() if wc is None else wc


def _wc_dict(wc: Any) -> dict:
    return asdict(wc)


def _vocab() -> tuple[str, ...]:
    from alignlab.t2i import world

    return tuple(world.VOCAB)


# ---------------------------------------------------------------------------------------------
# CLIP-like dual encoder


class _Evaluator:
    """What the trained evaluators share: the network, its vocabulary, config and info, and
    saving / loading as `evaluator.json` + `model.safetensors` tagged with the `kind`."""

    kind = ""
    config_type: type = object

    def __init__(self, net: nn.Module, codec: WordCodec, config: Any, info: dict):
        self.net, self.codec, self.config, self.info = net.eval(), codec, config, info

    @property
    def metrics(self) -> dict:
        return self.info["metrics"]

    @classmethod
    def build_net(cls, n_words: int, cfg: Any) -> nn.Module:
        raise NotImplementedError

    def save(self, folder: str | Path) -> None:
        _save(Path(folder), self.net, {**self.info, "kind": self.kind, "vocab": self.codec.vocab})

    @classmethod
    def load(cls, folder: str | Path):
        info, tensors = _load(folder)
        if info.get("kind") != cls.kind:
            raise AlignlabError(
                f"{folder} holds a {info.get('kind')!r} evaluator, not {cls.kind!r}"
            )
        cfg = _config_from(cls.config_type, info["config"])
        codec = WordCodec(info["vocab"])
        net = cls.build_net(len(codec), cfg)
        net.load_state_dict(tensors)
        return cls(net, codec, cfg, {k: v for k, v in info.items() if k not in ("vocab", "kind")})


class ClipEvaluator(_Evaluator):
    """A trained CLIP-like dual encoder (SIMULATED CLIPScore, Imagen 3 Sec. 3.2.1)."""

    kind, config_type = "clip", ClipConfig

    @classmethod
    def build_net(cls, n_words: int, cfg: ClipConfig) -> nn.Module:
        return DualEncoder(n_words, cfg.channels, cfg.width, cfg.embed)

    @torch.no_grad()
    def _image_embed(self, images: np.ndarray) -> torch.Tensor:
        x = as_tensor(images)
        with torch_threads(1):
            return _batched(lambda s: self.net.image_embed(x[s]), len(x))

    @torch.no_grad()
    def _text_embed(self, texts: Sequence[str]) -> torch.Tensor:
        ids = self.codec.encode([_text(t) for t in texts], self.config.max_len)
        with torch_threads(1):
            return _batched(lambda s: self.net.text_embed(ids[s]), len(ids))

    def features(self, images: np.ndarray) -> np.ndarray:
        """(N, embed) float64 L2-normalised image embeddings (the FD / CMMD feature space)."""
        return self._image_embed(images).double().numpy()

    def clip_score(self, images: np.ndarray, prompts: Sequence[Any]) -> np.ndarray:
        """CLIPScore form: 100 * max(cos(image, prompt), 0), one per (image, prompt) row."""
        _check_lengths(images, prompts)
        cos = (self._image_embed(images) * self._text_embed(prompts)).sum(1)
        return (100.0 * cos.clamp_min(0.0)).double().numpy()


def _config_from(cls: type, data: dict) -> Any:
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def train_clip(cfg: ClipConfig | None = None, wc: Any = None, log=None) -> ClipEvaluator:
    """Train the dual encoder on held-out renders and their world captions (in-batch
    negatives, symmetric InfoNCE, learned temperature); deterministic given `cfg.seed`."""
    cfg = cfg or CLIP_PRESETS["quick"]
    wc = _world_config(wc)
    t0 = time.process_time()
    rng = generator(cfg.seed, "t2i-clip-data")
    scenes = heldout_scenes(cfg.n_scenes + cfg.n_eval, rng, wc)
    images = as_tensor(_render(scenes, wc))
    train_x, eval_x = images[: cfg.n_scenes], images[cfg.n_scenes :]
    k = 4  # captions per training scene, one sampled per step
    caps = [[caption_of(s, rng) for _ in range(k)] for s in scenes[: cfg.n_scenes]]
    codec = WordCodec(_vocab())
    ids = codec.encode([c for row in caps for c in row], cfg.max_len).view(cfg.n_scenes, k, -1)
    data_s = time.process_time() - t0
    seed_torch(cfg.seed, "t2i-clip-init")
    net = DualEncoder(len(codec), cfg.channels, cfg.width, cfg.embed)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    losses = []
    with torch_threads(1):
        net.train()
        for step in range(cfg.steps):
            rows = torch.from_numpy(rng.choice(cfg.n_scenes, cfg.batch, replace=False))
            which = torch.from_numpy(rng.integers(k, size=cfg.batch))
            x = augment(train_x[rows], cfg.augment, gen)
            loss = symmetric_infonce(net.logits(x, ids[rows, which]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            if log is not None and (step + 1) % 200 == 0:
                log(f"clip step {step + 1}/{cfg.steps}: loss {np.mean(losses[-200:]):.3f}")
    net.eval()
    train_s = time.process_time() - t0
    ev = ClipEvaluator(net, codec, cfg, {"config": asdict(cfg), "world": _wc_dict(wc)})
    # held-out top-1 retrieval (image -> caption) in batches of 32, sentence-style captions
    from alignlab.t2i import world

    erng = generator(cfg.seed, "t2i-clip-eval")
    eval_scenes = scenes[cfg.n_scenes :]
    texts = [world.synthetic_caption(s, "sentence", erng) for s in eval_scenes]
    with torch.no_grad():
        img, txt = ev._image_embed(_render(eval_scenes, wc)), ev._text_embed(texts)
    hits, total = 0, 0
    for i in range(0, len(texts) - 31, 32):
        sim = img[i : i + 32] @ txt[i : i + 32].T
        hits += int((sim.argmax(1) == torch.arange(32)).sum())
        total += 32
    ev.info["metrics"] = {
        "top1_retrieval_32": hits / max(1, total),
        "final_loss": float(np.mean(losses[-50:])),
        "temperature": float(1.0 / net.log_scale.detach().exp()),
        "data_cpu_s": data_s,
        "train_cpu_s": train_s,
        "unknown_words": codec.unknown,
    }
    del eval_x
    return ev


# ---------------------------------------------------------------------------------------------
# VQA model, VQAScore and Gecko


class VQAEvaluator(_Evaluator):
    """A trained P(yes | image, question) model (SIMULATED VQA backbone of Gecko / VQAScore,
    Imagen 3 Sec. 3.2.1, App. C.1)."""

    kind, config_type = "vqa", VQAConfig

    @classmethod
    def build_net(cls, n_words: int, cfg: VQAConfig) -> nn.Module:
        return QueryVQA(n_words, cfg.channels, cfg.width, cfg.blocks, cfg.slots)

    @torch.no_grad()
    def vqa(self, images: np.ndarray, questions: Sequence[str]) -> np.ndarray:
        """P(yes) for each (image, question) row."""
        _check_lengths(images, questions)
        x = as_tensor(images)
        ids = self.codec.encode([_text(q) for q in questions], self.config.max_len)
        with torch_threads(1):
            logit = _batched(lambda s: self.net(x[s], ids[s]), len(x))
        return torch.sigmoid(logit).double().numpy()

    def vqascore(self, images: np.ndarray, prompts: Sequence[Any]) -> np.ndarray:
        """VQAScore form (Lin et al.): P(yes | "does this figure show '{prompt}'?")."""
        return self.vqa(images, [VQASCORE_TEMPLATE.format(_text(p)) for p in prompts])

    def gecko(self, images: np.ndarray, prompts: Sequence[Any]) -> np.ndarray:
        """Gecko form: mean P(yes) over the prompt's atomic fact questions
        (`Prompt.facts`, or the facts `world.parse_caption` reads from a string)."""
        from alignlab.t2i import world

        _check_lengths(images, prompts)
        images = np.asarray(images)
        rows, questions = [], []
        for i, p in enumerate(prompts):
            for f in _facts(p):
                rows.append(i)
                questions.append(world.fact_question(f))
        out = np.full(len(prompts), np.nan)
        if questions:
            p_yes = self.vqa(images[np.asarray(rows)], questions)
            sums = np.bincount(rows, weights=p_yes, minlength=len(prompts))
            counts = np.bincount(rows, minlength=len(prompts))
            out = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        return out


def vqa_examples(
    scenes: Sequence, n: int, whole_share: float, rng: np.random.Generator, wc: Any
) -> tuple[np.ndarray, list[str], np.ndarray, list[tuple]]:
    """`n` (scene index, question, label, facts asked) rows, balanced between true and false
    labels: atomic fact questions with minimal-pair negatives, and whole-caption questions
    whose negatives caption a minimally edited scene. Labels are always the truth."""
    idx, qs, ys, fs = [], [], [], []
    want = [n - n // 2, n // 2]  # label 0 / label 1 still needed
    tries = 0
    while sum(want) > 0 and tries < 20 * n:
        tries += 1
        i = int(rng.integers(len(scenes)))
        negative = bool(want[0] > 0 and (want[1] == 0 or rng.random() < 0.5))
        if rng.random() < whole_share:
            q, y, facts = whole_example(scenes[i], rng, negative, wc)
        else:
            q, y, facts = fact_example(scenes[i], rng, negative)
        if want[y] <= 0:
            continue
        want[y] -= 1
        idx.append(i)
        qs.append(q)
        ys.append(y)
        fs.append(facts)
    return np.asarray(idx), qs, np.asarray(ys, dtype=np.float32), fs


def slot_targets(facts_per_question: Sequence[tuple], slots: int) -> torch.Tensor:
    """The question parser's targets (N, slots, 3): per slot the (shape, colour, size) class
    to query, the last class of each attribute meaning "any", -100 for unused slots. Slots
    follow the question's object and count facts in order, one per distinct
    (shape, colour, size) description; a relation's two sides take slots of their own."""
    from alignlab.t2i import world

    colours = (*world.COLOURS, world.MOTIF_COLOUR)
    out = torch.full((len(facts_per_question), slots, 3), -100, dtype=torch.int64)

    def code(shape, colour, size) -> tuple[int, int, int]:
        return (
            3 if shape is None else world.SHAPES.index(shape),
            7 if colour is None else colours.index(colour),
            2 if size is None else world.SIZES.index(size),
        )

    for i, facts in enumerate(facts_per_question):
        seen: list[tuple[int, int, int]] = []
        for f in facts:
            if f[0] in ("object", "count"):
                c = code(f[1], f[2], f[3] if f[0] == "object" else None)
                if f[0] == "count":
                    # a count fact shares the slot of an object fact of the same shape / colour
                    if any(s[:2] == c[:2] for s in seen):
                        continue
                if c not in seen:
                    seen.append(c)
            elif f[0] == "relation" and len(facts) == 1:
                seen += [code(*f[1], None), code(*f[3], None)]
        for j, c in enumerate(seen[:slots]):
            out[i, j] = torch.tensor(c)
    return out


def parse_loss(qlogits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the question parser's slot queries against `slot_targets`."""
    loss = qlogits.new_zeros(())
    for j, (lo, hi) in enumerate(((0, 4), (4, 12), (12, 15))):
        t = targets[..., j]
        if (t >= 0).any():
            loss = loss + F.cross_entropy(qlogits[..., lo:hi].reshape(-1, hi - lo), t.reshape(-1))
    return loss


def train_vqa(cfg: VQAConfig | None = None, wc: Any = None, log=None) -> VQAEvaluator:
    """Train P(yes | image, question) on held-out renders; deterministic given `cfg.seed`."""
    from alignlab.t2i import world

    cfg = cfg or VQA_PRESETS["quick"]
    wc = _world_config(wc)
    t0 = time.process_time()
    rng = generator(cfg.seed, "t2i-vqa-data")
    scenes = heldout_scenes(cfg.n_scenes, rng, wc)
    images = as_tensor(_render(scenes, wc))
    idx, qs, ys, fs = vqa_examples(scenes, cfg.n_questions, cfg.whole_share, rng, wc)
    slots_t = slot_targets(fs, cfg.slots)
    codec = WordCodec(_vocab())
    ids = codec.encode(qs, cfg.max_len)
    idx_t, ys_t = torch.from_numpy(idx), torch.from_numpy(ys)
    centre, cls = aux_targets(scenes, wc, wc.res // 4)
    bgs = tuple(world.BACKGROUNDS)
    bg_t = torch.tensor([bgs.index(sc.background) for sc in scenes])
    bq_t = torch.tensor(
        [next((bgs.index(f[1]) for f in facts if f[0] == "background"), 3) for facts in fs]
    )
    data_s = time.process_time() - t0
    seed_torch(cfg.seed, "t2i-vqa-init")
    net = QueryVQA(len(codec), cfg.channels, cfg.width, cfg.blocks, cfg.slots)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    losses = []
    with torch_threads(1):
        net.train()
        for step in range(cfg.steps):
            rows = torch.from_numpy(rng.choice(len(qs), cfg.batch, replace=False))
            q = ids[rows]
            q = q[:, : max(1, int((q != PAD).sum(1).max()))]
            sid = idx_t[rows]
            x = augment(images[sid], cfg.augment, gen)
            logit, aux = net(x, q, with_aux=True)
            answer = F.binary_cross_entropy_with_logits(logit, ys_t[rows])
            loss = answer
            if cfg.aux_weight > 0:
                loss = loss + cfg.aux_weight * (
                    aux_loss(aux["dense"], centre[sid], cls[sid])
                    + parse_loss(aux["slots"], slots_t[rows])
                    + F.cross_entropy(aux["bg"], bg_t[sid])
                    + F.cross_entropy(aux["bg_query"], bq_t[rows])
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(answer.detach()))
            if log is not None and (step + 1) % 200 == 0:
                log(f"vqa step {step + 1}/{cfg.steps}: answer loss {np.mean(losses[-200:]):.3f}")
    net.eval()
    train_s = time.process_time() - t0
    ev = VQAEvaluator(net, codec, cfg, {"config": asdict(cfg), "world": _wc_dict(wc)})
    ev.info["metrics"] = {
        **vqa_heldout_accuracy(ev, cfg.n_eval, generator(cfg.seed, "t2i-vqa-eval"), wc),
        "final_loss": float(np.mean(losses[-50:])),
        "data_cpu_s": data_s,
        "train_cpu_s": train_s,
        "unknown_words": codec.unknown,
    }
    return ev


def vqa_heldout_accuracy(ev: VQAEvaluator, n: int, rng: np.random.Generator, wc: Any) -> dict:
    """Accuracy on fresh held-out scenes: atomic minimal pairs (a true fact and its flip, when
    the flip is false), and whole-caption pairs (the scene's caption vs a minimally edited
    scene's caption) ranked by VQAScore."""
    from alignlab.t2i import world

    scenes = heldout_scenes(n, rng, wc)
    images = _render(scenes, wc)
    rows, qs, ys, kinds = [], [], [], []
    for i, s in enumerate(scenes):
        facts = world.scene_facts(s)
        f = facts[int(rng.integers(len(facts)))]
        g = flip_fact(f, rng)
        if facts_true((g,), s):
            continue
        rows += [i, i]
        qs += [world.fact_question(f), world.fact_question(g)]
        ys += [1, 0]
        kinds += [f[0], f[0]]
    p = ev.vqa(images[np.asarray(rows)], qs)
    ys, kinds = np.asarray(ys), np.asarray(kinds)
    right = (p > 0.5) == (ys == 1)
    fact_acc = float(np.mean(right))
    fact_pair = float(np.mean(p[0::2] > p[1::2]))
    by_kind = {k: float(right[kinds == k].mean()) for k in world.FACT_KINDS if (kinds == k).any()}
    good, bad, keep = [], [], []
    for i, s in enumerate(scenes):
        text = world.synthetic_caption(s, world.STYLES[i % len(world.STYLES)], rng)
        other = world.synthetic_caption(
            perturb_scene(s, rng, wc), world.STYLES[i % len(world.STYLES)], rng
        )
        if facts_true(world.parse_caption(other), s):
            continue
        good.append(text)
        bad.append(other)
        keep.append(i)
    sel = images[np.asarray(keep)]
    pg, pb = ev.vqascore(sel, good), ev.vqascore(sel, bad)
    return {
        "fact_accuracy": fact_acc,
        "fact_pair_accuracy": fact_pair,
        "fact_accuracy_by_kind": by_kind,
        "whole_pair_accuracy": float(np.mean(pg > pb)),
        "whole_accuracy": float(np.mean(np.r_[pg > 0.5, pb < 0.5])),
        "n_fact_pairs": len(qs) // 2,
        "n_whole_pairs": len(keep),
    }


# ---------------------------------------------------------------------------------------------
# Cached artifacts


def _cached(kind: str, cfg: Any, wc: Any, train, load, log=None, root=None):
    wc = _world_config(wc)
    spec = {"evaluator": kind, "config": asdict(cfg), "world": _wc_dict(wc), "version": 1}
    key = f"{kind}-{content_key(spec)}"
    made: list = []

    def build(tmp: Path) -> None:
        ev = train(cfg, wc, log)
        ev.save(tmp)
        made.append(ev)

    folder, _ = cached_folder(CACHE_KIND, key, build, root=root)
    return made[0] if made else load(folder)


def cached_clip(cfg: ClipConfig | None = None, wc: Any = None, log=None, root=None):
    """The CLIP-like evaluator for (cfg, wc): from `$ALIGNLAB_CACHE/t2i-evaluators/`, or
    trained now and cached."""
    cfg = cfg or CLIP_PRESETS["quick"]
    return _cached("clip", cfg, wc, train_clip, ClipEvaluator.load, log, root)


def cached_vqa(cfg: VQAConfig | None = None, wc: Any = None, log=None, root=None):
    """The VQA evaluator for (cfg, wc): from the cache, or trained now and cached."""
    cfg = cfg or VQA_PRESETS["quick"]
    return _cached("vqa", cfg, wc, train_vqa, VQAEvaluator.load, log, root)
