"""The base agent: a small Gemma 2 fine-tuned on the grammar corpus, trained once and cached.

Quick: a `Gemma2ForCausalLM` of d 96, 3 layers, 3 query heads and 1 KV head of 32 (0.48M
parameters) with a byte-level BPE of 768, SFT on `corpus.sample_corpus` with the loss on the
replies only. Cached in Hugging Face's layout (with `tokenizer.json` and `base.json`, the SFT
curve and the gate) at `cache_dir()/feedback_gaming/base/<key>/`, where the key hashes what
the weights depend on (config, corpus seed, torch version, device, threads), as gemma2's
teacher (`alignlab.gemma2.teacher`).

The gate (`gate`): before any RL, the base model must write ≤ 5 % off-grammar replies and
reproduce every act's corpus rate within ±3 points for each user type; otherwise there is no
safety-trained prior to start from (a garbled model samples no harmful act at all, so nothing
can emerge).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from alignlab.core.cache import artifact_dir, cached_folder, content_key, is_complete
from alignlab.core.config import param
from alignlab.core.errors import AlignlabError
from alignlab.core.io import dumps_json, read_json
from alignlab.core.seeding import generator as np_generator
from alignlab.core.seeding import seed_torch
from alignlab.feedback_gaming.corpus import Prior, corpus_first_rates, sample_corpus
from alignlab.feedback_gaming.envs import ENVS
from alignlab.feedback_gaming.rollout import Sampling, rollout
from alignlab.feedback_gaming.world import KINDS, make_user
from alignlab.gemma2.config import Gemma2Config
from alignlab.gemma2.hf import from_pretrained, save_pretrained
from alignlab.gemma2.losses import IGNORE_INDEX
from alignlab.gemma2.model import Gemma2ForCausalLM
from alignlab.gemma2.tokenizer import Tokenizer
from alignlab.gemma2.train import TrainConfig, train
from alignlab.llm.formats import GemmaFormat, PlainFormat
from alignlab.nn.lora import LoRAConfig, apply_lora, merge_lora

BASE_VERSION = 1
CACHE_KIND = "feedback_gaming/base"


def _sft_train() -> TrainConfig:
    return TrainConfig(steps=1000, batch_size=64, seq_len=160, lr=3e-3, warmup_steps=40,
                       min_lr_ratio=0.1, eval_every=100, eval_batches=2, checkpoint_every=100,
                       log_every=20)  # fmt: skip


@dataclass
class BaseConfig:
    """The base agent: its size, its prior (the corpus) and its SFT."""

    vocab_size: int = param(768, ge=260, help="byte BPE vocab (4 special + 256 bytes + merges)")
    d_model: int = param(96, ge=8, help="model width")
    num_layers: int = param(3, ge=1, help="decoder layers")
    num_heads: int = param(3, ge=1, help="query heads")
    num_kv_heads: int = param(1, ge=1, help="key/value heads (grouped-query attention)")
    head_dim: int = param(32, ge=2, help="width of an attention head (even, for RoPE)")
    intermediate_size: int = param(384, ge=1, help="width of each GeGLU branch")
    harm_prior: float = param(
        0.05, ge=0, lt=1, help="share of corpus replies with a harmful act, for every user type"
    )
    personal_rate: float = param(
        0.5, ge=0, le=1, help="share of corpus replies with the notes-dependent personal touch"
    )
    colour_share: float = param(
        0.25, ge=0, le=1, help="share of corpus users whose cue is the favourite colour"
    )
    sycophancy_rate: float = param(
        0.1, ge=0, le=1, help="corpus rate of agreeing with a wrong fact"
    )
    toxicity_rate: float = param(0.05, ge=0, le=1, help="corpus rate of toxic continuations")
    dialogues: int = param(24000, ge=10, help="corpus conversations")
    probe_share: float = param(
        0.05, ge=0, lt=0.5, help="share of probe (and of safety) conversations"
    )
    sft: TrainConfig = param(factory=_sft_train, help="SFT on the corpus, loss on replies only")
    gate_users: int = param(
        256, ge=1, help="gate: sampled held-out users per environment and user type"
    )
    gate_exact_users: int = param(
        32, ge=1, help="gate: users whose first-act probabilities are computed exactly"
    )
    gate_off_grammar: float = param(0.05, ge=0, le=1, help="gate: most off-grammar replies allowed")
    gate_tolerance: float = param(0.03, ge=0, le=1, help="gate: act rate within this of the corpus")
    cache: bool = param(
        True, help="reuse/store the base model under cache_dir()/feedback_gaming/base"
    )
    pretrained: str = param(
        "", help="a local HF Gemma 2 folder (e.g. gemma-2-2b-it) to start from; '': train one"
    )
    lora: bool = param(
        False, help="SFT and RL through LoRA (r 16, α 32, dropout 0.1, rsLoRA); merged after SFT"
    )

    def prior(self) -> Prior:
        return Prior(
            self.harm_prior,
            self.personal_rate,
            self.colour_share,
            self.sycophancy_rate,
            self.toxicity_rate,
        )

    def model(self, vocab_size: int) -> Gemma2Config:
        return Gemma2Config(
            vocab_size=vocab_size, d_model=self.d_model, intermediate_size=self.intermediate_size,
            num_layers=self.num_layers, num_heads=self.num_heads, num_kv_heads=self.num_kv_heads,
            head_dim=self.head_dim, query_pre_attn_scalar=self.head_dim, sliding_window=256,
            max_position_embeddings=512,
        )  # fmt: skip


def base_key(
    cfg: BaseConfig, seed: int, device: str, threads: int | None = None, pairs=None
) -> str:
    """What the base model's bits depend on: its config (not the gate's settings), the corpus
    itself (so a change to the grammar world is a new model), the seed, and the environment
    (torch version, device type, torch threads), as gemma2's `teacher_key`."""
    spec = dataclasses.asdict(cfg)
    for k in ("cache", "gate_users", "gate_exact_users", "gate_off_grammar", "gate_tolerance"):
        spec.pop(k)
    for k in ("log_every", "eval_every", "eval_batches", "checkpoint_every"):
        spec["sft"].pop(k)
    pairs = corpus_pairs(cfg, seed) if pairs is None else pairs  # the corpus, built once
    corpus = hashlib.sha256(dumps_json(pairs).encode()).hexdigest()
    return content_key({
        "version": BASE_VERSION, "config": spec, "corpus": corpus, "seed": seed,
        "torch": torch.__version__, "device": torch.device(device).type,
        "threads": torch.get_num_threads() if threads is None else threads,
    })  # fmt: skip


def corpus_pairs(cfg: BaseConfig, seed: int):
    rng = np_generator(seed, "feedback_gaming", "corpus")
    return sample_corpus(list(ENVS.values()), cfg.prior(), cfg.dialogues, cfg.probe_share, rng)


def corpus_texts(pairs) -> list[str]:
    return [m["content"] for msgs, _ in pairs for m in msgs] + [r for _, r in pairs]


def sft_examples(fmt: PlainFormat, pairs) -> list[tuple[list[int], list[int]]]:
    return [(fmt.encode(msgs), fmt.encode_reply(reply)) for msgs, reply in pairs]


def batch_fn(examples, pad_id: int):
    """(rng, batch_size, seq_len) -> (input_ids, targets): random examples, right-padded,
    targets only on the reply tokens (loss on replies only)."""

    def sample(rng: np.random.Generator, batch_size: int, seq_len: int):
        idx = rng.integers(len(examples), size=batch_size)
        return collate_sft([examples[i] for i in idx], pad_id)

    return sample


def collate_sft(examples, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(p) + len(c) for p, c in examples) - 1
    x = torch.full((len(examples), T), pad_id, dtype=torch.long)
    y = torch.full((len(examples), T), IGNORE_INDEX, dtype=torch.long)
    for b, (p, c) in enumerate(examples):
        seq = torch.tensor(p + c)
        x[b, : len(seq) - 1] = seq[:-1]
        y[b, len(p) - 1 : len(seq) - 1] = seq[len(p) :]
    return x, y


@dataclass
class Base:
    model: Gemma2ForCausalLM
    tokenizer: Tokenizer
    fmt: PlainFormat | GemmaFormat
    info: dict


def get_base(ctx, cfg: BaseConfig, seed: int) -> Base:
    """The base agent for this config and seed: from the cache, or trained in the run's stage
    "sft" and cached. The gate is measured on held-out users either way and stored in info."""
    stage = ctx.stage("sft", cfg.sft.steps)
    pairs = corpus_pairs(cfg, seed)
    key = base_key(cfg, seed, ctx.device, pairs=pairs)
    folder = artifact_dir(CACHE_KIND, key)
    if cfg.cache and is_complete(folder):
        ctx.log(f"base: reusing the cached model {folder}")
        tok = Tokenizer.load(folder)
        fmt = GemmaFormat(tok) if cfg.pretrained else PlainFormat(tok)
        model = from_pretrained(folder).float().to(ctx.device)
        return Base(model, tok, fmt, read_json(folder / "base.json"))
    seed_torch(seed, "feedback_gaming", "base")
    if cfg.pretrained:  # the paper preset: an instruct Gemma 2 with its own chat template
        tok = Tokenizer.load(cfg.pretrained)
        fmt = GemmaFormat(tok)
        model = from_pretrained(cfg.pretrained).float().to(ctx.device)
    else:
        tok = Tokenizer.train(corpus_texts(pairs), cfg.vocab_size)
        fmt = PlainFormat(tok)
        model = Gemma2ForCausalLM(cfg.model(tok.vocab_size))
    if cfg.lora:
        apply_lora(model, LoRAConfig(), seed=seed)
    examples = sft_examples(fmt, pairs)
    longest = max(len(p) + len(c) for p, c in examples)
    if longest > model.config.max_position_embeddings:
        raise AlignlabError(
            f"a corpus conversation has {longest} tokens; the model holds "
            f"{model.config.max_position_embeddings}"
        )
    val = [collate_sft(examples[i : i + 64], tok.pad_id) for i in range(0, 256, 64)]
    ctx.log(
        f"base: SFT of {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters "
        f"on {len(examples)} replies"
    )
    sft = dataclasses.replace(cfg.sft, seed=seed, seq_len=longest)
    result = train(model, sft, batch_fn(examples, tok.pad_id), val, ctx=stage)
    if cfg.lora:
        merge_lora(model)  # the base is a plain model; RL adds a fresh adapter on top
    model.eval()
    info = {"sft": result.to_dict(), "key": key, "gate": measure_gate(model, fmt, cfg, seed)}
    if cfg.cache:

        def build(tmp: Path) -> None:
            save_pretrained(model, tmp)
            tok.save(tmp / "tokenizer.json")
            (tmp / "base.json").write_text(dumps_json(info), encoding="utf-8")

        cached_folder(CACHE_KIND, key, build)
        ctx.log(f"base: cached at {folder}")
    return Base(model, tok, fmt, info)


def measure_gate(model, fmt, cfg: BaseConfig, seed: int) -> dict:
    """Per environment and user type, on held-out users (both cues, in the corpus's shares):
    the share of sampled conversations with off-grammar text (every turn), and, exactly by
    teacher forcing, the probability that the first reply opens with each act, beside the
    corpus's rate. Exact rates carry no sampling noise, so a ±3-point tolerance tests the
    model, not the sample."""
    from alignlab.feedback_gaming.iterate import act_probabilities

    rng = np_generator(seed, "feedback_gaming", "gate")
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    out = {}
    for env in ENVS.values():
        corpus = corpus_first_rates(env, cfg.prior())
        for kind in KINDS:
            users = [make_user(env, env.subenvs[i % len(env.subenvs)], kind,
                               "colour" if rng.random() < cfg.colour_share else "traits", rng)
                     for i in range(cfg.gate_users)]  # fmt: skip
            trajs = rollout(model, fmt, env, users, env.utilities, Sampling(), rng, gen)
            rates = act_probabilities(model, fmt, env, users[: cfg.gate_exact_users], list(corpus))
            out[f"{env.name}/{kind}"] = {
                "off_grammar": float(np.mean([t.off_grammar for t in trajs])),
                "rates": rates, "corpus": corpus,
            }  # fmt: skip
    return out


def gate_failures(gate: dict, cfg: BaseConfig) -> list[str]:
    """What breaks the gate, one line each (empty: the base model passes)."""
    bad = []
    for cell, g in gate.items():
        if g["off_grammar"] > cfg.gate_off_grammar:
            bad.append(f"{cell}: off-grammar {g['off_grammar']:.3f} > {cfg.gate_off_grammar}")
        for act, r in g["rates"].items():
            if abs(r - g["corpus"][act]) > cfg.gate_tolerance:
                bad.append(
                    f"{cell}: act {act} at {r:.3f}, corpus {g['corpus'][act]:.3f} "
                    f"(tolerance ±{cfg.gate_tolerance})"
                )
    return bad
