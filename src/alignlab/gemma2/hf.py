"""Hugging Face Gemma 2 checkpoints: config and weight tables, and safetensors I/O.

A checkpoint is a directory with `config.json` (model_type "gemma2") and either one
`model.safetensors` or shards listed in `model.safetensors.index.json`. Our parameter names
are HF's, so the weight table is the identity, except that HF's `lm_head.weight` is the
embedding (tied, paper Table 1) and is left out, as HF's own save_pretrained does.

Only safetensors are read: pickled `.bin` / `.pt` checkpoints can run code when unpickled.
Nothing here imports transformers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from alignlab.core.errors import AlignlabError
from alignlab.core.io import atomic_write_bytes, atomic_write_json
from alignlab.gemma2.config import Gemma2Config
from alignlab.gemma2.model import Gemma2ForCausalLM

# ours -> HF config.json key. rope_theta and the layer pattern are written separately.
CONFIG_TO_HF = {
    "vocab_size": "vocab_size",
    "d_model": "hidden_size",
    "intermediate_size": "intermediate_size",
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "num_kv_heads": "num_key_value_heads",
    "head_dim": "head_dim",
    "query_pre_attn_scalar": "query_pre_attn_scalar",
    "sliding_window": "sliding_window",
    "max_position_embeddings": "max_position_embeddings",
    "rms_norm_eps": "rms_norm_eps",
    "attn_logit_softcap": "attn_logit_softcapping",
    "final_logit_softcap": "final_logit_softcapping",
    "pad_token_id": "pad_token_id",
    "eos_token_id": "eos_token_id",
    "bos_token_id": "bos_token_id",
    "initializer_range": "initializer_range",
}

# The weights of decoder layer i, under "model.layers.{i}." in both naming schemes.
LAYER_WEIGHTS = (
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
    "input_layernorm.weight",
    "post_attention_layernorm.weight",
    "pre_feedforward_layernorm.weight",
    "post_feedforward_layernorm.weight",
)
TIED = {"lm_head.weight": "model.embed_tokens.weight"}
ACTIVATIONS = ("gelu_pytorch_tanh", "gelu_tanh")  # the same tanh-approximated GELU
PICKLED = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def layer_types(config: Gemma2Config) -> list[str]:
    """HF 5's per-layer attention kinds: sliding on even layers, full on odd (paper §2)."""
    return [
        "sliding_attention" if config.is_sliding(i) else "full_attention"
        for i in range(config.num_layers)
    ]


def _int_if_integral(x: float) -> float | int:
    return int(x) if float(x).is_integer() else x  # HF's strict config types this field int


def to_hf_config(config: Gemma2Config, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """An HF `config.json` dict that transformers 4.x (rope_theta) and 5.x (rope_parameters,
    layer_types) both read as this model."""
    d: dict[str, Any] = {"architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2"}
    d.update({hf: getattr(config, ours) for ours, hf in CONFIG_TO_HF.items()})
    d["query_pre_attn_scalar"] = _int_if_integral(config.query_pre_attn_scalar)
    d["rope_theta"] = float(config.rope_theta)
    d["rope_parameters"] = {"rope_type": "default", "rope_theta": float(config.rope_theta)}
    d["layer_types"] = layer_types(config)
    dtype_name = str(dtype).removeprefix("torch.")
    d.update(
        hidden_activation="gelu_pytorch_tanh",
        hidden_act="gelu_pytorch_tanh",
        attention_bias=False,
        attention_dropout=0.0,
        tie_word_embeddings=True,
        use_cache=True,
        cache_implementation="hybrid",
        torch_dtype=dtype_name,  # transformers 4.x
        dtype=dtype_name,  # transformers 5.x
    )
    return d


def from_hf_config(d: dict[str, Any]) -> Gemma2Config:
    """A Gemma2Config from an HF config.json dict (4.x or 5.x); unsupported variants are errors.

    Missing keys take HF's Gemma2Config defaults, which are also ours (the 2B model).
    """
    if d.get("model_type") != "gemma2":
        raise AlignlabError(
            f"config.json has model_type {d.get('model_type')!r}; alignlab.gemma2 reads Gemma 2 "
            "checkpoints (model_type 'gemma2')"
        )
    act = d.get("hidden_activation") or d.get("hidden_act") or "gelu_pytorch_tanh"
    if act not in ACTIVATIONS:
        raise AlignlabError(
            f"unsupported hidden_activation {act!r}; Gemma 2 uses gelu_pytorch_tanh"
        )
    if d.get("attention_bias"):
        raise AlignlabError("attention_bias=true is not Gemma 2 (its projections have no bias)")
    if d.get("tie_word_embeddings", True) is False:
        raise AlignlabError(
            "tie_word_embeddings=false is not Gemma 2 (its lm_head is the embedding)"
        )
    if d.get("use_bidirectional_attention"):
        raise AlignlabError("use_bidirectional_attention=true is not supported (Gemma 2 is causal)")
    rope = d.get("rope_parameters") or d.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise AlignlabError(f"unsupported RoPE scaling {rope!r}; Gemma 2 uses plain RoPE")

    kwargs = {ours: d[hf] for ours, hf in CONFIG_TO_HF.items() if hf in d}
    if isinstance(kwargs.get("eos_token_id"), list):
        kwargs["eos_token_id"] = kwargs["eos_token_id"][0]  # e.g. [1, 107] in -it checkpoints
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        if name in kwargs and kwargs[name] is None:
            del kwargs[name]
    if kwargs.get("head_dim") is None and "hidden_size" in d and "num_attention_heads" in d:
        kwargs["head_dim"] = d["hidden_size"] // d["num_attention_heads"]
    if "num_key_value_heads" not in d and "num_attention_heads" in d:
        kwargs["num_kv_heads"] = d["num_attention_heads"]
    theta = rope.get("rope_theta", d.get("rope_theta"))
    if theta is not None:
        kwargs["rope_theta"] = float(theta)
    config = Gemma2Config(**kwargs)
    if d.get("layer_types") is not None and list(d["layer_types"]) != layer_types(config):
        raise AlignlabError(
            "config.json layer_types must alternate sliding_attention (even layers) and "
            f"full_attention (odd layers), as Gemma 2 does; got {d['layer_types']}"
        )
    return config


def hf_weight_shapes(config: Gemma2Config) -> dict[str, tuple[int, ...]]:
    """Every weight an HF Gemma 2 checkpoint stores (lm_head left out), with its shape."""
    c = config
    H, KV, hd, d, f = c.num_heads, c.num_kv_heads, c.head_dim, c.d_model, c.intermediate_size
    per_layer = dict(
        zip(
            LAYER_WEIGHTS,
            [(H * hd, d), (KV * hd, d), (KV * hd, d), (d, H * hd), (f, d), (f, d), (d, f)]
            + [(d,)] * 4,
        )
    )
    shapes = {"model.embed_tokens.weight": (c.vocab_size, d)}
    for i in range(c.num_layers):
        shapes.update({f"model.layers.{i}.{name}": s for name, s in per_layer.items()})
    shapes["model.norm.weight"] = (d,)
    return shapes


def _few(names) -> str:
    names = sorted(names)
    return ", ".join(names[:5]) + (f" (and {len(names) - 5} more)" if len(names) > 5 else "")


def from_hf_state_dict(
    state: dict[str, torch.Tensor], config: Gemma2Config
) -> dict[str, torch.Tensor]:
    """HF weights -> ours: checks names and shapes, drops the tied lm_head.

    Accepts the keys of Gemma2ForCausalLM ("model.layers...") or of Gemma2Model ("layers...").
    """
    if state and not any(k.startswith("model.") for k in state):
        state = {f"model.{k}": v for k, v in state.items()}  # a bare Gemma2Model checkpoint
    state = dict(state)
    for alias, target in TIED.items():
        head = state.pop(alias, None)
        if head is not None and target in state and not torch.equal(head, state[target]):
            raise AlignlabError(f"{alias} differs from {target}; Gemma 2 ties them")
    shapes = hf_weight_shapes(config)
    missing, unexpected = set(shapes) - set(state), set(state) - set(shapes)
    if missing or unexpected:
        raise AlignlabError(
            "the checkpoint's weights do not match its config:"
            + (f" missing {_few(missing)};" if missing else "")
            + (f" unexpected {_few(unexpected)}" if unexpected else "")
        )
    for name, shape in shapes.items():
        if tuple(state[name].shape) != shape:
            raise AlignlabError(
                f"weight {name} has shape {tuple(state[name].shape)}, the config implies {shape}"
            )
    return {name: state[name] for name in shapes}


def to_hf_state_dict(model: Gemma2ForCausalLM) -> dict[str, torch.Tensor]:
    """Ours -> HF weights, as HF's save_pretrained stores them (tied lm_head left out)."""
    state = model.state_dict()
    return {name: state[name].detach() for name in hf_weight_shapes(model.config)}


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint directory: the sharded index if present, else *.safetensors."""
    from safetensors.torch import load_file

    path = Path(path)
    index = path / "model.safetensors.index.json"
    if (path / "model.safetensors").exists():
        files = [path / "model.safetensors"]
    elif index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = sorted({path / f for f in weight_map.values()})
        absent = [f.name for f in files if not f.exists()]
        if absent:
            raise AlignlabError(f"{index} lists shards that are not there: {_few(absent)}")
    else:
        files = sorted(path.glob("*.safetensors"))
    if not files:
        pickled = sorted(p.name for pattern in PICKLED for p in path.glob(pattern))
        if pickled:
            raise AlignlabError(
                f"{path} holds only pickled weights ({_few(pickled)}); alignlab reads safetensors "
                "only and never unpickles (unpickling can run arbitrary code). Convert them "
                "where you trust the file, e.g. with transformers' save_pretrained(..., "
                "safe_serialization=True)"
            )
        raise AlignlabError(f"no *.safetensors weights in {path}")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


def from_pretrained(
    path: str | os.PathLike, dtype: torch.dtype | None = None, attn_impl: str | None = None
) -> Gemma2ForCausalLM:
    """Load a local HF Gemma 2 checkpoint directory (no hub downloads), in eval mode.

    `dtype` converts the weights (default: as stored); `attn_impl` overrides the config's.
    """
    path = Path(path)
    if not path.is_dir():
        raise AlignlabError(
            f"checkpoint directory not found: {path} (from_pretrained reads a local directory "
            "with config.json and *.safetensors)"
        )
    config_file = path / "config.json"
    if not config_file.exists():
        raise AlignlabError(f"{path} has no config.json; is it a Hugging Face checkpoint?")
    config = from_hf_config(json.loads(config_file.read_text()))
    if attn_impl is not None:
        config.attn_impl = attn_impl
        config.validate()
    state = from_hf_state_dict(read_safetensors(path), config)
    with torch.device("meta"):  # no memory and no init for weights about to be replaced
        model = Gemma2ForCausalLM(config)
    model.load_state_dict(state, assign=True)
    if dtype is not None:
        model.to(dtype)
    return model.eval()


def save_pretrained(
    model: Gemma2ForCausalLM, path: str | os.PathLike, max_shard_bytes: int | None = None
) -> None:
    """Write config.json and safetensors in HF's layout; shards + index above max_shard_bytes.

    Every file is written atomically and fsynced (`core.io`): the new weight files first, then
    the index and the config, and only then is what a previous save with other sharding left
    removed, so a crash never leaves the folder without complete weights. Other files in the
    folder (a tokenizer.json) are kept.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in to_hf_state_dict(model).items()}
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in state.items():
        nbytes = t.numel() * t.element_size()
        if max_shard_bytes is not None and shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    written = []
    if len(shards) == 1:
        written.append(_write_safetensors(state, path / "model.safetensors"))
    else:
        weight_map = {}
        for i, shard in enumerate(shards, 1):
            fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            written.append(_write_safetensors(shard, path / fname))
            weight_map.update(dict.fromkeys(shard, fname))
        total = sum(t.numel() * t.element_size() for t in state.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        written.append(path / "model.safetensors.index.json")
        atomic_write_json(written[-1], index)
    dtype = model.model.embed_tokens.weight.dtype
    atomic_write_json(path / "config.json", to_hf_config(model.config, dtype))
    stale = [path / "model.safetensors", path / "model.safetensors.index.json"]
    for f in stale + list(path.glob("model-*-of-*.safetensors")):
        if f not in written:
            f.unlink(missing_ok=True)


def _write_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> Path:
    """One safetensors file, atomically (temporary file, fsync, rename)."""
    from safetensors.torch import save

    # HF refuses safetensors files without the "format" metadata
    atomic_write_bytes(path, save(tensors, metadata={"format": "pt"}))
    return path
