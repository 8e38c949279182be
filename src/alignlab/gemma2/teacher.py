"""The teacher: a Gemma 2 trained by next-token prediction, trained once and cached.

The gemma2 experiments distil students from it (`gemma2.distill`) and cut its sliding window
(`gemma2.window`); Gemma Scope (`alignlab.gemmascope`) trains sparse autoencoders on it, and
later systems train chat models on it. Everything they need is here:

    data = load_data(t)                          # corpus, tokenizer, train/val token streams
    model, info = get_teacher(ctx, t, data)      # the run's stage "teacher": cached or trained

The teacher's weights depend only on `TeacherConfig`, the corpus, the tokenizer, the run seed
and the environment (torch version, device type, torch threads: float reductions may differ
across them). A hash of all that (`teacher_key`) names its cache folder,
`cache_dir()/gemma2/teachers/<key>/` (`teacher_dir`), which holds the model in Hugging Face's
layout, `tokenizer.json` and `teacher.json` (its training curve). The folder is built in a
temporary folder and renamed into place (`core.cache`), so a crash never leaves a partial
teacher, and two processes training the same teacher keep the first complete one.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from alignlab.core.cache import artifact_dir, cached_folder, content_key, is_complete
from alignlab.core.config import ConfigError, param
from alignlab.core.io import dumps_json, read_json
from alignlab.core.seeding import seed_torch

from .config import Gemma2Config
from .data import Corpus, load_corpus, token_stream
from .hf import from_pretrained, save_pretrained
from .model import Gemma2ForCausalLM, count_parameters
from .tokenizer import Tokenizer, default_tokenizer
from .train import TrainConfig, train

TEACHER_VERSION = 1  # bump when the teacher's training code changes what it produces
CACHE_KIND = "gemma2/teachers"  # cache_dir()/gemma2/teachers/<key>/


def model_config(
    d_model: int, num_layers: int, head_dim: int, vocab_size: int, window: int, seq_len: int
) -> Gemma2Config:
    """A CPU-sized Gemma 2 with the paper's proportions: d_model / head_dim query heads, two
    query heads per KV head (paper §2, "num_groups = 2"), feedforward 8 d_model split into
    gate and up branches of 4 d_model each (Table 1: 2B 18432 = 8 x 2304), queries scaled by
    head_dim^-1/2 (2B, 9B)."""
    heads = max(1, d_model // head_dim)
    return Gemma2Config(
        vocab_size=vocab_size,
        d_model=d_model,
        intermediate_size=4 * d_model,
        num_layers=num_layers,
        num_heads=heads,
        num_kv_heads=max(1, heads // 2) if heads % 2 == 0 else heads,
        head_dim=head_dim,
        query_pre_attn_scalar=head_dim,
        sliding_window=window,
        max_position_embeddings=max(seq_len, window),
    )


def _quick_teacher_train() -> TrainConfig:
    return TrainConfig(
        steps=400, batch_size=16, seq_len=128, lr=2e-3, warmup_steps=40, eval_every=100,
        eval_batches=4, checkpoint_every=100,
    )  # fmt: skip


@dataclass
class TeacherConfig:
    """The teacher's corpus, tokenizer, size and training (its objective is always NTP, its
    sampler seed the run's)."""

    corpus: str = param("stdlib", help="load_corpus: stdlib, local .txt/.md paths, or hf:<name>")
    vocab_size: int = param(4096, ge=260, help="byte BPE vocab (4 special + 256 bytes + merges)")
    d_model: int = param(192, ge=1, help="model width")
    num_layers: int = param(6, ge=1, help="decoder layers")
    head_dim: int = param(32, ge=1, help="width of an attention head (even, for RoPE)")
    sliding_window: int = param(64, ge=1, help="even-layer window (< train.seq_len, so it binds)")
    train: TrainConfig = param(factory=_quick_teacher_train, help="teacher NTP training (run seed)")
    cache: bool = param(True, help="reuse/store trained teacher under cache_dir()/gemma2/teachers")

    def validate(self) -> None:
        if self.head_dim % 2:
            raise ConfigError("head_dim", f"must be even (rotary embeddings), got {self.head_dim}")

    def model(self) -> Gemma2Config:
        return model_config(
            self.d_model,
            self.num_layers,
            self.head_dim,
            self.vocab_size,
            self.sliding_window,
            self.train.seq_len,
        )


def smoke_teacher() -> TeacherConfig:
    """A teacher trained in seconds (tests, smoke presets); never cached."""
    return TeacherConfig(
        vocab_size=512,
        d_model=32,
        num_layers=2,
        head_dim=16,
        sliding_window=8,
        train=TrainConfig(
            steps=6, batch_size=4, seq_len=32, lr=3e-3, warmup_steps=2, eval_every=3,
            eval_batches=1, checkpoint_every=3,
        ),
        cache=False,
    )  # fmt: skip


def paper_teacher() -> TeacherConfig:
    """Table 7's setting scaled to one GPU: a ~100M teacher on a larger corpus."""
    return TeacherConfig(
        vocab_size=32768,
        d_model=768,
        num_layers=12,
        head_dim=64,
        sliding_window=512,
        train=TrainConfig(
            steps=20_000, batch_size=64, seq_len=1024, lr=6e-4, warmup_steps=1000,
            eval_every=500, eval_batches=16, checkpoint_every=500,
        ),
    )  # fmt: skip


# ---------------------------------------------------------------------------------------
# data


@dataclass
class Data:
    corpus: Corpus
    tokenizer: Tokenizer
    train: np.ndarray  # token streams, documents as <bos> ... <eos>
    val: np.ndarray


def load_data(t: TeacherConfig) -> Data:
    """The teacher's corpus and tokenizer (both cached), and the train and validation streams."""
    corpus = load_corpus(t.corpus)
    tok = default_tokenizer(t.vocab_size, corpus)

    def stream(split: str) -> np.ndarray:
        return token_stream(tok.encode_batch(corpus.texts(split)), tok.bos_id, tok.eos_id)

    return Data(corpus, tok, stream("train"), stream("val"))


# ---------------------------------------------------------------------------------------
# the cache


# TrainConfig fields that change what is logged, not the weights (objective and seed are set
# by get_teacher: NTP, the run seed)
_NOT_WEIGHTS = ("objective", "seed", "log_every", "eval_every", "eval_batches", "checkpoint_every")


def teacher_key(
    t: TeacherConfig, data: Data, seed: int, device: str = "cpu", threads: int | None = None
) -> str:
    """What the trained teacher's bits depend on: its model and training settings, the corpus,
    the tokenizer and the seed, and the environment (torch version, device type, threads,
    default: this process's torch threads), since float reductions may differ across them."""
    train = {k: v for k, v in dataclasses.asdict(t.train).items() if k not in _NOT_WEIGHTS}
    return content_key(
        {
            "version": TEACHER_VERSION,
            "model": t.model().to_dict(),
            "train": train,
            "corpus": data.corpus.sha256,
            "tokenizer": hashlib.sha256(data.tokenizer.to_json().encode()).hexdigest(),
            "seed": seed,
            "torch": torch.__version__,
            "device": torch.device(device).type,
            "threads": torch.get_num_threads() if threads is None else threads,
        }
    )


def teacher_dir(key: str) -> Path:
    """Where the teacher with this `teacher_key` is cached (complete or not)."""
    return artifact_dir(CACHE_KIND, key)


def teacher_checkpoint(
    t: TeacherConfig, seed: int = 0, device: str = "cpu", threads: int = 2
) -> Path | None:
    """The cached teacher's folder (HF layout + tokenizer.json + teacher.json), if one was
    trained with these settings (the quick presets train on the CPU with 2 threads)."""
    path = teacher_dir(teacher_key(t, load_data(t), seed, device, threads))
    return path if is_complete(path) else None


# ---------------------------------------------------------------------------------------
# the teacher of a run


def seeded_model(cfg: Gemma2Config, seed: int, *what: int) -> Gemma2ForCausalLM:
    """A freshly initialised model whose weights come from the stream (seed, *what)."""
    seed_torch(seed, *what)
    return Gemma2ForCausalLM(cfg)


def n_params(cfg: Gemma2Config) -> int:
    c = count_parameters(cfg)
    return c["embedding"] + c["non_embedding"]


def get_teacher(ctx, t: TeacherConfig, data: Data) -> tuple[Gemma2ForCausalLM, dict]:
    """The teacher for this config and run seed, in eval mode, and its info (its training
    result, key and torch version): from the cache, or trained in the run's stage "teacher"
    (and cached when `t.cache`). The stage is created either way, so a run's later stages
    number their metric steps the same whether the teacher was cached or not."""
    stage = ctx.stage("teacher", t.train.steps)
    key = teacher_key(t, data, ctx.seed, ctx.device)
    folder = teacher_dir(key)
    if t.cache and is_complete(folder):
        ctx.log(f"teacher: reusing the cached checkpoint {folder}")
        model = from_pretrained(folder).float().to(ctx.device)
        return model, read_json(folder / "teacher.json")
    model = seeded_model(t.model(), ctx.seed, 0)
    ctx.log(f"teacher: training {n_params(t.model()) / 1e6:.2f}M parameters by NTP")
    cfg = dataclasses.replace(t.train, objective="ntp", seed=ctx.seed)
    result = train(model, cfg, data.train, data.val, ctx=stage)
    info = {"train": result.to_dict(), "key": key, "torch": torch.__version__}
    if t.cache:

        def build(tmp: Path) -> None:
            save_pretrained(model, tmp)
            data.tokenizer.save(tmp / "tokenizer.json")
            (tmp / "teacher.json").write_text(dumps_json(info), encoding="utf-8")

        _, built = cached_folder(CACHE_KIND, key, build)
        ctx.log(f"teacher: cached at {folder}" if built else f"teacher: found cached at {folder}")
    return model.eval(), info
