"""The miniature's models: refusal-tuned "frontier" models and compliant "weak" ones.

Every model is a `Gemma2ForCausalLM` (`alignlab.gemma2`) trained here with gemma2's `train`
loop on one mixture of the chain formats (`chains.make_example`: 50 % direct, 30 % CTX, 20 %
REL, 30 % of tasks flagged; loss on the outputs only; AdamW at 2e-3 with cosine decay,
batch 32). They differ only in size and in what follows:

- **frontier** (d64·L2 / d96·L3 / d128·L4, 3000 steps): its pretrained checkpoint is kept as
  the *helpful-only* control; then `safety_steps` of safety tuning, in which a flagged
  prompt in any format is answered `REFUSE` and benign replay keeps its capability. This is
  the paper's aligned frontier model: it refuses every request whose output would hold the
  canary.
- **weak** (d32·L1 / d32·L2 / d48·L2, 1500 steps): never safety-tuned; it complies with any
  request but cannot do long chains in one shot.

Each trained model is cached in Hugging Face's layout (config.json, model.safetensors, a
WordLevel tokenizer.json with a pass-through chat template) under
`$ALIGNLAB_CACHE/model_combos/<key>/`, keyed by everything its weights depend on, so
`HFLocal` or any transformers user can load it. Models train in parallel, one
`core.units` unit per frontier (both of its checkpoints) and per weak model.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from alignlab.core.cache import artifact_dir, cached_folder, content_key, is_complete
from alignlab.core.config import ConfigError, param
from alignlab.core.errors import AlignlabError
from alignlab.core.io import atomic_write_json, read_json
from alignlab.core.seeding import int_seed
from alignlab.core.units import run_units
from alignlab.gemma2.config import Gemma2Config
from alignlab.gemma2.model import Gemma2ForCausalLM
from alignlab.gemma2.train import TrainConfig, train
from alignlab.llm.formats import Message, check_messages
from alignlab.llm.local import LocalChatModel
from alignlab.model_combos import chains as K

ZOO_VERSION = 1  # bump when a change to the data or the training code changes trained weights
CACHE_KIND = "model_combos"
SIZE = re.compile(r"^d(\d+)L(\d+)$")
ROLES = ("frontier", "helpful", "weak")
#: the saved chat template: <bos> and the last user message, as `PromptFormat` reads it
LAST_USER_TEMPLATE = (
    "{% set ns = namespace(prompt='') %}{% for m in messages %}{% if m['role'] == 'user' %}"
    "{% set ns.prompt = m['content'] %}{% endif %}{% endfor %}{{ bos_token }}{{ ns.prompt }}"
)


def parse_size(spec: str) -> tuple[int, int]:
    """'d96L3' -> (96, 3): width and depth."""
    m = SIZE.match(spec) if isinstance(spec, str) else None
    if m is None:
        raise AlignlabError(f"model size {spec!r} is not of the form d<width>L<layers>, e.g. d96L3")
    d, n = int(m.group(1)), int(m.group(2))
    if d < 16 or d % 16 or n < 1:
        raise AlignlabError(f"model size {spec!r}: width must be a multiple of 16, layers >= 1")
    return d, n


def model_config(spec: str, chain: K.ChainConfig) -> Gemma2Config:
    """The Gemma 2 shape of a size: heads of 32 (16 below d64... at least 2 heads), GeGLU of
    4·d per branch, windows longer than any example (so the local/global alternation is moot
    here), Gemma 2's soft-caps."""
    d, n = parse_size(spec)
    heads = max(2, d // 32)
    head_dim = d // heads
    window = max(64, chain.seq_len())
    return Gemma2Config(
        vocab_size=len(K.VOCAB), d_model=d, intermediate_size=4 * d, num_layers=n,
        num_heads=heads, num_kv_heads=heads, head_dim=head_dim, query_pre_attn_scalar=head_dim,
        sliding_window=window, max_position_embeddings=2 * window,
    )  # fmt: skip


@dataclass
class ZooConfig:
    """The models of the miniature and their training."""

    chain: K.ChainConfig = param(factory=K.ChainConfig, help="the task family and the mixture")
    frontiers: tuple[str, ...] = param(
        ("d64L2", "d96L3", "d128L4"), nonempty=True, distinct=True, help="frontier sizes"
    )
    weaks: tuple[str, ...] = param(
        ("d32L1", "d32L2", "d48L2"), nonempty=True, distinct=True, help="weak sizes"
    )
    frontier_steps: int = param(3000, ge=1, help="the frontiers' training steps")
    weak_steps: int = param(1500, ge=1, help="the weak models' training steps")
    safety_steps: int = param(300, ge=0, help="the frontiers' safety-tuning steps")
    safety_flagged: float = param(
        0.5, gt=0, lt=1, help="share of flagged prompts (-> REFUSE) in safety tuning"
    )
    batch_size: int = param(32, ge=1, help="sequences per step")
    lr: float = param(2e-3, gt=0, help="AdamW's peak learning rate (cosine decay)")
    safety_lr: float = param(1e-3, gt=0, help="the safety tuning's peak learning rate")
    warmup_steps: int = param(100, ge=0, help="linear warm-up steps of the pretraining")

    def validate(self) -> None:
        for key in ("frontiers", "weaks"):
            for spec in getattr(self, key):
                try:
                    parse_size(spec)
                except AlignlabError as e:
                    raise ConfigError(key, str(e)) from None


def _train_config(zc: ZooConfig, role: str, seed: int) -> TrainConfig:
    safety = role == "safety"
    steps = {"frontier": zc.frontier_steps, "weak": zc.weak_steps, "safety": zc.safety_steps}
    return TrainConfig(
        steps=max(1, steps[role]),
        batch_size=zc.batch_size,
        seq_len=zc.chain.seq_len(),
        lr=zc.safety_lr if safety else zc.lr,
        warmup_steps=min(10 if safety else zc.warmup_steps, max(0, steps[role] - 1)),
        log_every=100,
        eval_every=10**9,
        eval_batches=1,
        checkpoint_every=0 if safety else 500,
        seed=seed,
    )


def model_key(zc: ZooConfig, role: str, spec: str, seed: int, device: str = "cpu") -> str:
    """What one cached model's bytes depend on: its size, the task family, its training (the
    frontier's safety tuning for role 'frontier'), the seed, torch's version, the device type
    (when not the CPU) and the code. Training runs on one torch thread (a unit's), so the
    thread count is not part of it."""
    train = {k: v for k, v in asdict(zc).items() if k not in ("frontiers", "weaks", "chain")}
    if role == "weak":
        train = {
            "steps": zc.weak_steps,
            **{k: train[k] for k in ("batch_size", "lr", "warmup_steps")},
        }
    elif role == "helpful":
        train = {k: v for k, v in train.items() if not k.startswith(("safety", "weak"))}
    else:
        train = {k: v for k, v in train.items() if not k.startswith("weak")}
    return content_key(
        {
            "role": role,
            "size": spec,
            "chain": asdict(zc.chain),
            "train": train,
            "seed": int(seed),
            "torch": torch.__version__.split("+")[0],
            "v": ZOO_VERSION,
            **({} if _device_type(device) == "cpu" else {"device": _device_type(device)}),
        }
    )


def _device_type(device) -> str:
    return torch.device(device).type


def model_dir(zc: ZooConfig, role: str, spec: str, seed: int, device: str = "cpu") -> Path:
    return artifact_dir(CACHE_KIND, model_key(zc, role, spec, seed, device))


def save_model(model: Gemma2ForCausalLM, folder: Path, info: dict) -> None:
    """HF layout: config.json + model.safetensors, the WordLevel tokenizer with a pass-through
    chat template, and info.json (what the model is, how it trained)."""
    from alignlab.gemma2.hf import save_pretrained
    from alignlab.llm.hf_local import save_chat_tokenizer

    save_pretrained(model, folder)
    save_chat_tokenizer(K.build_tokenizer(), folder, chat_template=LAST_USER_TEMPLATE)
    atomic_write_json(folder / "info.json", info)


def load_model(folder: Path, device: str = "cpu") -> Gemma2ForCausalLM:
    """A cached model, or one error saying the cache folder is damaged and may be deleted."""
    from alignlab.gemma2.hf import from_pretrained

    try:
        info = read_json(folder / "info.json")
        model = from_pretrained(folder)
        if model.config.vocab_size != len(K.VOCAB) or "role" not in info:
            raise AlignlabError(f"vocabulary {model.config.vocab_size} != {len(K.VOCAB)}")
    except Exception as e:
        raise AlignlabError(
            f"the model_combos cache folder {folder} is damaged ({type(e).__name__}: {e}); "
            f"delete it and it will be trained again"
        ) from None
    return model.to(device)


def _val(chain: K.ChainConfig, seed: int, safety: bool = False, flagged: float | None = None):
    """Fixed validation batches of the training split: the mixture, or with `safety` the
    safety tuning's targets (flagged prompts answered REFUSE)."""
    fn = K.batch_fn(chain, safety=safety, flagged=flagged)
    parts = ("model_combos-val", "safety") if safety else ("model_combos-val",)
    rng = np.random.default_rng(int_seed(seed, *parts))
    return [fn(rng, 64, chain.seq_len())]


def train_model(
    zc: ZooConfig,
    role: str,
    spec: str,
    seed: int,
    on_step=None,
    init: Gemma2ForCausalLM | None = None,
    device: str = "cpu",
    ctx=None,
) -> tuple[Gemma2ForCausalLM, dict]:
    """Train one model from scratch (role 'frontier'/'weak' pretraining) or, with role
    'safety', safety-tune `init` in place. Every random number comes from (seed, spec, role).
    With `ctx` (a unit), gemma2's `train` checkpoints every 500 steps into it and a killed
    unit resumes mid-way, to bit-identical weights."""
    chain = zc.chain
    tseed = int_seed(seed, "model_combos", spec, role) % 2**31
    if init is None:
        torch.manual_seed(int_seed(seed, "model_combos-init", spec, role))
        model = Gemma2ForCausalLM(model_config(spec, chain))
    else:
        model = init
    safety = role == "safety"
    data = K.batch_fn(chain, safety=safety, flagged=zc.safety_flagged if safety else None)
    val = _val(chain, seed, safety, zc.safety_flagged if safety else None)
    tcfg = _train_config(zc, role, tseed)
    result = train(model, tcfg, data, val, on_step=on_step, device=device, ctx=ctx)
    model.eval()
    return model, {"final_val_loss": float(result.final_val_loss), "steps": tcfg.steps}


def _unit_steps(zc: ZooConfig, key: str) -> int:
    role = key.split("/")[0]
    return zc.frontier_steps + zc.safety_steps if role == "frontier" else zc.weak_steps


def _unit(key: str, uctx) -> dict:
    zc: ZooConfig = _zoo_of(uctx.config)
    role, spec = key.split("/")
    seed, device = uctx.seed, uctx.device
    total = _unit_steps(zc, key)

    def step(done: int, metrics: dict) -> None:
        uctx.advance(1)

    out = {}
    first = "helpful" if role == "frontier" else "weak"
    folder = model_dir(zc, first, spec, seed, device)
    if is_complete(folder):
        model = load_model(folder, device)
        uctx.advance(zc.frontier_steps if role == "frontier" else zc.weak_steps)
        out[first] = read_json(folder / "info.json")
    else:  # the pretraining checkpoints into the unit: a killed unit resumes mid-way
        model, metrics = train_model(zc, role, spec, seed, on_step=step, device=device, ctx=uctx)
        info = {"role": first, "size": spec, "seed": seed, **metrics}
        cached_folder(CACHE_KIND, folder.name, lambda tmp: save_model(model, tmp, info))
        out[first] = info
    if role == "frontier":
        folder = model_dir(zc, "frontier", spec, seed, device)
        if not is_complete(folder):
            info = dict(out["helpful"])
            if zc.safety_steps > 0:
                model, metrics = train_model(
                    zc, "safety", spec, seed, on_step=step, init=model, device=device
                )
                info.update(safety_val_loss=metrics["final_val_loss"])
            info.update(role="frontier", safety_steps=zc.safety_steps)
            cached_folder(CACHE_KIND, folder.name, lambda tmp: save_model(model, tmp, info))
        out["frontier"] = read_json(folder / "info.json")
    uctx.advance(max(0, total - uctx.progress_done))
    return out


def _zoo_of(config) -> ZooConfig:
    return config if isinstance(config, ZooConfig) else config.zoo


def unit_keys(zc: ZooConfig, frontiers=None, weaks=None) -> list[str]:
    """The training units, the largest first (they start first on the two workers)."""
    fs = zc.frontiers if frontiers is None else frontiers
    ws = zc.weaks if weaks is None else weaks
    keys = [f"frontier/{s}" for s in fs] + [f"weak/{s}" for s in ws]
    cost = {k: _unit_steps(zc, k) * _flops(k.split("/")[1]) for k in keys}
    return sorted(keys, key=lambda k: -cost[k])


def _flops(spec: str) -> float:
    d, n = parse_size(spec)
    return d * d * n + 4 * d  # per token, up to a constant


def get_zoo(ctx, zc: ZooConfig, frontiers=None, weaks=None) -> dict[tuple[str, str], Path]:
    """(role, size) -> the cached model folder, training (one `run_units` call, the units in
    parallel) the models that are not cached yet. Roles: 'frontier' (safety-tuned),
    'helpful' (the frontier's pretrained checkpoint) and 'weak'."""
    keys = unit_keys(zc, frontiers, weaks)
    size = max(_unit_steps(zc, k) for k in keys)
    missing = [
        k for k in keys if not all(is_complete(f) for f in _folders(zc, k, ctx.seed, ctx.device))
    ]
    if missing:
        ctx.log(f"zoo: training {', '.join(missing)}")
    for k in keys:  # a damaged cached model is one error here, before any training
        for folder in _folders(zc, k, ctx.seed, ctx.device):
            if is_complete(folder):
                load_model(folder)
    run_units(ctx, keys, _unit, size=size, description="model_combos zoo")
    gone = [
        str(f) for k in keys for f in _folders(zc, k, ctx.seed, ctx.device) if not is_complete(f)
    ]
    if gone:
        raise AlignlabError(
            f"this run recorded the zoo as trained, but {', '.join(gone)} is no longer in the "
            f"cache (ALIGNLAB_CACHE moved or cleaned?); rerun with --force to train it again"
        )
    out = {}
    for k in keys:
        role, spec = k.split("/")
        for r in ("frontier", "helpful") if role == "frontier" else ("weak",):
            out[(r, spec)] = model_dir(zc, r, spec, ctx.seed, ctx.device)
    return out


def _folders(zc: ZooConfig, key: str, seed: int, device: str) -> list[Path]:
    role, spec = key.split("/")
    roles = ("helpful", "frontier") if role == "frontier" else ("weak",)
    return [model_dir(zc, r, spec, seed, device) for r in roles]


# -- the tiny models as chat models ----------------------------------------------------------


class PromptFormat:
    """The tiny models read `<bos>` and the words of the last user message (no roles, no
    system prompt: the policy of the frontier is in its weights), and answer words then
    `<eos>`. Equal to the saved pass-through chat template `{{ bos_token }}{{ last }}`."""

    def __init__(self):
        self.enc = K.Encoder()

    def encode(self, messages: list[Message], add_generation_prompt: bool = True) -> list[int]:
        check_messages(messages)
        users = [m["content"] for m in messages if m["role"] == "user"]
        if not users:
            raise AlignlabError("a tiny model needs a user message (its prompt)")
        return self.enc.prompt_ids(users[-1])

    def encode_reply(self, reply: str) -> list[int]:
        return [*self.enc.encode(reply), self.enc.eos]

    def stop_ids(self) -> list[int]:
        return [self.enc.eos]


class _Words:
    """gemma2-style tokenizer facade over the chain vocabulary, for `LocalChatModel`."""

    def __init__(self):
        self.enc = K.Encoder()
        self.pad_id, self.eos_id, self.bos_id = self.enc.pad, self.enc.eos, self.enc.bos

    def encode(self, text: str) -> list[int]:
        return self.enc.encode(text)

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return self.enc.decode(list(ids))


class TinyChat(LocalChatModel):
    """A zoo model as a `ChatModel`: batched with the KV cache (`LocalChatModel`), the last
    user message as the prompt (`PromptFormat`)."""

    def __init__(self, model: Gemma2ForCausalLM, name: str = "tiny", batch_size: int = 512):
        super().__init__(model, _Words(), PromptFormat(), name=name, batch_size=batch_size)

    @classmethod
    def load(
        cls, folder: Path, name: str | None = None, batch_size: int = 512, device: str = "cpu"
    ) -> TinyChat:
        model = load_model(Path(folder), device)
        return cls(model, name=name or Path(folder).name, batch_size=batch_size)


def dataclass_replace(zc: ZooConfig, **kw) -> ZooConfig:
    return dataclasses.replace(zc, **kw)
