"""LoRA for our Gemma 2, saved and loaded in peft's adapter format.

LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") freezes a
pretrained weight W (out, in) and learns a low-rank update through two small matrices,
A (r, in) and B (out, r):

    y = W x + scaling * B A dropout(x)

A starts Kaiming-uniform and B at zero, so the adapted model equals the base model at
initialisation. rsLoRA (Kalajdzievski 2023, "A Rank Stabilization Scaling Factor for
Fine-Tuning with LoRA") uses scaling = alpha / sqrt(r) instead of the original alpha / r,
which keeps the update's scale stable as r grows. Both follow peft's rule exactly
(`peft.tuners.lora.layer.LoraLayer.update_layer`).

The on-disk format is peft's (`PeftModel.save_pretrained` / `PeftModel.from_pretrained`):
a folder with

- `adapter_config.json`: peft_type "LORA", task_type "CAUSAL_LM", r, lora_alpha,
  lora_dropout, use_rslora, target_modules, bias "none", base_model_name_or_path, ...
- `adapter_model.safetensors`: for each wrapped Linear at HF module path P, the tensors
  `base_model.model.{P}.lora_A.weight` (r, in) and `base_model.model.{P}.lora_B.weight`
  (out, r), without peft's adapter name ("default"), which peft strips when saving.

Our module paths are Hugging Face's (`alignlab.gemma2.hf` maps parameter names by the
identity), e.g. `model.layers.3.self_attn.q_proj`, so an adapter saved here loads onto
transformers' Gemma2ForCausalLM with `peft.PeftModel.from_pretrained`, and one peft saved
loads here with `load_adapter`. Weights are read with safetensors only, never unpickled.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alignlab.core.errors import AlignlabError, did_you_mean
from alignlab.core.io import atomic_write_bytes, atomic_write_json
from alignlab.gemma2.hf import LAYER_WEIGHTS
from alignlab.gemma2.model import Gemma2ForCausalLM

# The Linear layers of a Gemma 2 block, as peft's target_modules names them: the last
# component of each "<sub>.<name>_proj.weight" in hf.py's (identity) weight table.
LINEAR_WEIGHTS = tuple(w.removesuffix(".weight") for w in LAYER_WEIGHTS if "_proj." in w)
TARGETS = tuple(w.rsplit(".", 1)[1] for w in LINEAR_WEIGHTS)  # q_proj, ..., down_proj
PEFT_PREFIX = "base_model.model."  # PeftModel.base_model (LoraModel) .model (the HF model)
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"

# peft LoraConfig fields whose non-default values change the maths; we refuse them on load.
_UNSUPPORTED = {
    "use_dora": (False, None),
    "fan_in_fan_out": (False, None),
    "lora_bias": (False, None),
    "use_qalora": (False, None),
    "modules_to_save": (None, []),
    "layers_to_transform": (None, []),
    "rank_pattern": ({}, None),
    "alpha_pattern": ({}, None),
    "layer_replication": (None,),
    "target_parameters": (None, []),
    "trainable_token_indices": (None, {}, []),
    "exclude_modules": (None, []),
    "alora_invocation_tokens": (None,),
    "use_bdlora": (None, False),
}


@dataclass
class LoRAConfig:
    """LoRA hyperparameters; the defaults are the feedback-gaming paper's (Williams, Carroll
    et al. 2024): r 16, alpha 32, dropout 0.1, rsLoRA, all seven projections of each block.

    `scaling` is alpha / sqrt(r) with rslora (Kalajdzievski 2023), alpha / r without
    (Hu et al. 2021), as peft computes it.
    """

    r: int = 16
    alpha: float = 32
    dropout: float = 0.1
    rslora: bool = True
    target_modules: tuple[str, ...] = TARGETS

    def __post_init__(self) -> None:
        if isinstance(self.target_modules, str):
            self.target_modules = (self.target_modules,)
        self.target_modules = tuple(self.target_modules)
        self.validate()

    def validate(self) -> None:
        """Raise AlignlabError naming the first bad field."""
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise AlignlabError(f"LoRAConfig.r must be a positive integer, got {self.r!r}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, int | float):
            raise AlignlabError(f"LoRAConfig.alpha must be a number, got {self.alpha!r}")
        if not math.isfinite(self.alpha) or self.alpha <= 0:
            raise AlignlabError(f"LoRAConfig.alpha must be positive and finite, got {self.alpha}")
        if (
            isinstance(self.dropout, bool)
            or not isinstance(self.dropout, int | float)
            or not 0 <= self.dropout < 1
        ):
            raise AlignlabError(f"LoRAConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if not isinstance(self.rslora, bool):
            raise AlignlabError(f"LoRAConfig.rslora must be True or False, got {self.rslora!r}")
        if not self.target_modules:
            raise AlignlabError(f"LoRAConfig.target_modules is empty; choose from {TARGETS}")
        for name in self.target_modules:
            if name not in TARGETS:
                raise AlignlabError(
                    f"LoRAConfig.target_modules: {name!r} is not a Linear of a Gemma 2 block "
                    f"(choose from {', '.join(TARGETS)}).{did_you_mean(str(name), TARGETS)}"
                )
        if len(set(self.target_modules)) != len(self.target_modules):
            raise AlignlabError(f"LoRAConfig.target_modules repeats a name: {self.target_modules}")

    @property
    def scaling(self) -> float:
        """peft's rule: alpha / sqrt(r) with rsLoRA, alpha / r without."""
        return self.alpha / math.sqrt(self.r) if self.rslora else self.alpha / self.r

    def to_peft(self, base_model_name_or_path: str = "") -> dict[str, Any]:
        """peft's adapter_config.json for this config (LoraConfig's fields, peft 0.21)."""
        return {
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base_model_name_or_path or None,  # peft writes null
            "revision": None,
            "inference_mode": True,
            "r": self.r,
            "lora_alpha": self.alpha,
            "lora_dropout": self.dropout,
            "use_rslora": self.rslora,
            "target_modules": list(self.target_modules),
            "bias": "none",
            "fan_in_fan_out": False,
            "init_lora_weights": True,
            "modules_to_save": None,
            "layers_to_transform": None,
            "layers_pattern": None,
            "rank_pattern": {},
            "alpha_pattern": {},
            "use_dora": False,
            "lora_bias": False,
            "layer_replication": None,
        }

    @classmethod
    def from_peft(cls, d: Any, source: str = CONFIG_FILE) -> LoRAConfig:
        """Read peft's adapter_config.json dict; what our LoRA cannot express is an error."""
        if not isinstance(d, dict):
            raise AlignlabError(f"{source}: expected a JSON object, got {type(d).__name__}")
        if d.get("peft_type") != "LORA":
            raise AlignlabError(
                f"{source}: peft_type is {d.get('peft_type')!r}; only LoRA adapters ('LORA') load"
            )
        if d.get("task_type") not in ("CAUSAL_LM", None):
            raise AlignlabError(
                f"{source}: task_type is {d.get('task_type')!r}; expected 'CAUSAL_LM' "
                "(an adapter for a causal language model)"
            )
        for key in ("r", "lora_alpha"):
            if key not in d:
                raise AlignlabError(f"{source}: required field {key!r} is missing")
        if d.get("bias", "none") != "none":
            raise AlignlabError(
                f"{source}: bias={d['bias']!r} is not supported (only 'none': no bias training)"
            )
        init = d.get("init_lora_weights", True)
        if not (isinstance(init, bool) or init == "gaussian"):
            raise AlignlabError(
                f"{source}: init_lora_weights={init!r}: such an adapter (PiSSA, OLoRA, LoftQ, "
                "...) expects a base model that its initialisation modified; convert it to plain "
                "LoRA with peft (path_initial_model_for_weight_conversion) first"
            )
        if d.get("loftq_config") not in (None, {}):
            raise AlignlabError(f"{source}: loftq_config is set; LoftQ adapters are not supported")
        for key, value in d.items():
            bad = key in _UNSUPPORTED and value not in _UNSUPPORTED[key]
            # variants peft may add later: use_* switches and *_config blocks (Arrow, EVA, ...)
            bad |= key.startswith("use_") and key != "use_rslora" and bool(value)
            bad |= key.endswith("_config") and key != "megatron_config" and value not in (None, {})
            if bad:
                raise AlignlabError(
                    f"{source}: {key}={value!r} is not supported by alignlab's LoRA "
                    "(plain LoRA on whole Linear layers only)"
                )
        targets = d.get("target_modules")
        if targets == "all-linear":  # peft: every Linear except the output layer
            targets = list(TARGETS)
        if isinstance(targets, str):
            raise AlignlabError(
                f"{source}: target_modules is the regular expression {targets!r}; only a list of "
                f"module names ({', '.join(TARGETS)}) or 'all-linear' is supported"
            )
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            raise AlignlabError(
                f"{source}: target_modules must be a list of names, got {targets!r}"
            )
        dropout = d.get("lora_dropout", 0.0)
        try:
            return cls(
                r=d["r"],
                alpha=d["lora_alpha"],
                dropout=0.0 if dropout is None else dropout,
                rslora=bool(d.get("use_rslora", False)),
                target_modules=tuple(sorted(set(targets), key=_target_order)),
            )
        except AlignlabError as e:
            raise AlignlabError(f"{source}: {e}") from None


def _target_order(name: str) -> tuple[int, str]:
    return (TARGETS.index(name) if name in TARGETS else len(TARGETS), name)


class LoRALinear(nn.Module):
    """A frozen `nn.Linear` plus a trainable low-rank update (Hu et al. 2021):

        y = base(x) + B(A(dropout(x))) * scaling

    in peft's order of operations (`peft.tuners.lora.layer.Linear.forward`). Submodules are
    named as peft's (`base_layer`, `lora_A`, `lora_B`, `lora_dropout`), without peft's
    per-adapter dicts. A is Kaiming-uniform (a = sqrt(5), as nn.Linear and peft), B zeros.
    `weight` and `bias` read through to the base layer.
    """

    def __init__(
        self,
        base: nn.Linear,
        r: int,
        scaling: float,
        dropout: float = 0.0,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise AlignlabError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        self.r = r
        self.scaling = scaling
        self.base_layer = base
        for p in base.parameters():
            p.requires_grad_(False)
        kw = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Linear(base.in_features, r, bias=False, **kw)
        self.lora_B = nn.Linear(r, base.out_features, bias=False, **kw)
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_lora_parameters(generator)
        self.train(base.training)  # a model in eval mode stays in eval mode (no dropout)

    def reset_lora_parameters(self, generator: torch.Generator | None = None) -> None:
        """peft's default init: A ~ Kaiming-uniform(a=sqrt(5)), B = 0 (the update starts at 0)."""
        with torch.no_grad():
            if generator is None or self.lora_A.weight.device.type == "meta":
                nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
            else:  # draw on the generator's device, then copy (a CPU generator, a GPU model)
                a = torch.empty_like(self.lora_A.weight, device=generator.device)
                nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=generator)
                self.lora_A.weight.copy_(a)
            nn.init.zeros_(self.lora_B.weight)

    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_layer.bias

    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        dtype = result.dtype
        x = x.to(self.lora_A.weight.dtype)
        result = result + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling
        return result.to(dtype)

    def delta_weight(self) -> torch.Tensor:
        """scaling * B @ A (out, in), computed in fp32 at least."""
        dtype = torch.promote_types(self.lora_B.weight.dtype, torch.float32)
        b, a = self.lora_B.weight.to(dtype), self.lora_A.weight.to(dtype)
        return (b @ a) * self.scaling

    @torch.no_grad()
    def merge(self) -> nn.Linear:
        """A plain Linear with weight W + scaling * B @ A (a new module; this one is unchanged).

        It keeps this module's training mode and the base layer's requires_grad (False: frozen
        by LoRA)."""
        base = self.base_layer
        w = base.weight
        merged = nn.Linear(
            base.in_features,
            base.out_features,
            bias=base.bias is not None,
            device=w.device,
            dtype=w.dtype,
        )
        delta = self.delta_weight()
        merged.weight.copy_((w.to(delta.dtype) + delta).to(w.dtype))
        if base.bias is not None:
            merged.bias.copy_(base.bias)
        for p_new, p_old in zip(merged.parameters(), base.parameters(), strict=True):
            p_new.requires_grad_(p_old.requires_grad)
        return merged.train(self.training)

    def extra_repr(self) -> str:
        return f"r={self.r}, scaling={self.scaling:g}"


# --------------------------------------------------------------------------------------------
# Whole-model helpers.


def _candidates(model: Gemma2ForCausalLM) -> list[tuple[str, str]]:
    """(module path, target name) of every LoRA-able Linear, in layer order."""
    return [
        (f"model.layers.{i}.{sub}", sub.rsplit(".", 1)[1])
        for i in range(len(model.model.layers))
        for sub in LINEAR_WEIGHTS
    ]


def _set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent), name, module)


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    """Module path (HF's = peft's, e.g. 'model.layers.0.self_attn.q_proj') -> LoRALinear."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def _check_model(model: Any) -> None:
    if not isinstance(model, Gemma2ForCausalLM):
        raise AlignlabError(
            f"LoRA here adapts alignlab.gemma2 Gemma2ForCausalLM models, got {type(model).__name__}"
        )


def apply_lora(
    model: Gemma2ForCausalLM, cfg: LoRAConfig | None = None, seed: int | None = None
) -> list[str]:
    """Wrap every target Linear of `model` in a LoRALinear, in place; freeze everything else.

    Returns the wrapped modules' names as peft names them in HF's Gemma2ForCausalLM
    ('model.layers.{i}.self_attn.q_proj', ...). `seed` makes the A matrices reproducible
    (a private CPU generator; the global RNG is untouched); None draws from the global RNG.
    LoRA parameters are created on the base weights' device and dtype.
    """
    _check_model(model)
    cfg = LoRAConfig() if cfg is None else cfg
    cfg.validate()
    if lora_modules(model):
        raise AlignlabError(
            "the model already has LoRA layers; merge_lora(model) first, or load_adapter into "
            "it to replace their weights"
        )
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.requires_grad_(False)
    wrapped = []
    for path, target in _candidates(model):
        if target not in cfg.target_modules:
            continue
        base = model.get_submodule(path)
        _set_module(model, path, LoRALinear(base, cfg.r, cfg.scaling, cfg.dropout, generator))
        wrapped.append(path)
    return wrapped


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The LoRA A and B matrices, in module order: what the optimiser should train."""
    return [p for m in lora_modules(model).values() for p in (m.lora_A.weight, m.lora_B.weight)]


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace each LoRALinear by a plain Linear with W + scaling * B @ A, in place.

    The model is then an ordinary Gemma2ForCausalLM again (`hf.save_pretrained` works on it).
    Its parameters keep requires_grad False (as apply_lora left them). Returns the model.
    """
    for path, module in lora_modules(model).items():
        _set_module(model, path, module.merge())
    return model


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The LoRA weights under peft's saved names, e.g.
    'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight' (detached tensors)."""
    state = {}
    for path, m in lora_modules(model).items():
        state[f"{PEFT_PREFIX}{path}.lora_A.weight"] = m.lora_A.weight.detach()
        state[f"{PEFT_PREFIX}{path}.lora_B.weight"] = m.lora_B.weight.detach()
    return state


def _infer_config(model: nn.Module) -> tuple[int, float, set[str]]:
    mods = lora_modules(model)
    if not mods:
        raise AlignlabError("the model has no LoRA layers (call apply_lora or load_adapter first)")
    rs = {m.r for m in mods.values()}
    scalings = {m.scaling for m in mods.values()}
    if len(rs) != 1 or len(scalings) != 1:
        raise AlignlabError(
            f"the model's LoRA layers differ in rank {sorted(rs)} or scaling {sorted(scalings)}; "
            "peft's adapter_config.json holds one of each"
        )
    return rs.pop(), scalings.pop(), set(mods)


def _expected_paths(model: Gemma2ForCausalLM, cfg: LoRAConfig) -> list[str]:
    return [p for p, t in _candidates(model) if t in cfg.target_modules]


def save_adapter(
    model: Gemma2ForCausalLM,
    folder: str | os.PathLike,
    cfg: LoRAConfig,
    base_model_name_or_path: str = "",
) -> Path:
    """Write `adapter_model.safetensors` and `adapter_config.json` in peft's format.

    Each file is written atomically and fsynced (`core.io`), weights first, then the config.
    `cfg` must describe the model's LoRA layers (rank, scaling, wrapped modules). An empty
    `base_model_name_or_path` is written as null, as peft does when it does not know it.
    Other files in the folder are kept. Returns the folder.
    """
    from safetensors.torch import save

    _check_model(model)
    cfg.validate()
    r, scaling, paths = _infer_config(model)
    expected = set(_expected_paths(model, cfg))
    if r != cfg.r or not math.isclose(scaling, cfg.scaling, rel_tol=1e-12) or paths != expected:
        raise AlignlabError(
            f"the LoRAConfig (r={cfg.r}, scaling={cfg.scaling:g}, targets "
            f"{list(cfg.target_modules)}) does not describe the model's LoRA layers (r={r}, "
            f"scaling={scaling:g}, {len(paths)} wrapped modules; config implies {len(expected)})"
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.cpu().contiguous() for k, v in lora_state_dict(model).items()}
    atomic_write_bytes(folder / WEIGHTS_FILE, save(tensors, metadata={"format": "pt"}))
    atomic_write_json(folder / CONFIG_FILE, cfg.to_peft(base_model_name_or_path))
    return folder


def read_adapter_config(folder: str | os.PathLike) -> LoRAConfig:
    """The LoRAConfig of a peft adapter folder; AlignlabError naming the file if it is bad."""
    path = Path(folder) / CONFIG_FILE
    if not Path(folder).is_dir():
        raise AlignlabError(f"adapter folder not found: {folder}")
    if not path.is_file():
        raise AlignlabError(f"{path} is missing; is {folder} a peft LoRA adapter folder?")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AlignlabError(f"{path} is not valid JSON: {e}") from None
    return LoRAConfig.from_peft(d, source=str(path))


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = folder / WEIGHTS_FILE
    if not path.is_file():
        pickled = folder / "adapter_model.bin"
        hint = (
            f" ({pickled.name} is there, but alignlab never unpickles: re-save it with peft's "
            "save_pretrained(..., safe_serialization=True) where you trust the file)"
            if pickled.exists()
            else ""
        )
        raise AlignlabError(f"{path} is missing{hint}")
    try:
        return load(path.read_bytes())
    except (SafetensorError, ValueError, RuntimeError, OSError) as e:
        raise AlignlabError(f"{path} is not a readable safetensors file: {e}") from None


def _few(names: Iterable[str]) -> str:
    names = sorted(names)
    return ", ".join(names[:3]) + (f" (and {len(names) - 3} more)" if len(names) > 3 else "")


def load_adapter(model: Gemma2ForCausalLM, folder: str | os.PathLike) -> LoRAConfig:
    """Apply LoRA to `model` as the peft adapter in `folder` says and load its weights.

    Reads `adapter_config.json` and `adapter_model.safetensors` (peft's names, with or
    without the adapter name "default" that older peft versions and in-memory state dicts
    carry), checks every name, shape and value before touching the model, then calls
    `apply_lora` and copies the weights (cast to the model's dtype). A model that already
    has the same LoRA layers gets new weights instead. Returns the adapter's LoRAConfig.
    Bad or missing files raise one AlignlabError naming the file and the problem.
    """
    _check_model(model)
    folder = Path(folder)
    cfg = read_adapter_config(folder)
    weights_path = folder / WEIGHTS_FILE
    state = _read_weights(folder)
    state = {
        k.replace(".lora_A.default.", ".lora_A.").replace(".lora_B.default.", ".lora_B."): v
        for k, v in state.items()
    }

    paths = _expected_paths(model, cfg)
    expected: dict[str, tuple[int, ...]] = {}
    for path in paths:
        base = model.get_submodule(path)
        expected[f"{PEFT_PREFIX}{path}.lora_A.weight"] = (cfg.r, base.in_features)
        expected[f"{PEFT_PREFIX}{path}.lora_B.weight"] = (base.out_features, cfg.r)
    missing, unexpected = set(expected) - set(state), set(state) - set(expected)
    if missing or unexpected:
        raise AlignlabError(
            f"{weights_path} does not match {CONFIG_FILE} and this model"
            + (f": missing {_few(missing)}" if missing else "")
            + (";" if missing and unexpected else "")
            + (f": unexpected {_few(unexpected)}" if unexpected else "")
        )
    for name, shape in expected.items():
        t = state[name]
        if tuple(t.shape) != shape:
            raise AlignlabError(
                f"{weights_path}: {name} has shape {tuple(t.shape)}, expected {shape} "
                f"(r={cfg.r} and the model's layer sizes)"
            )
        if not t.is_floating_point():
            raise AlignlabError(f"{weights_path}: {name} has dtype {t.dtype}, not floating point")
        if not bool(torch.isfinite(t).all()):
            raise AlignlabError(f"{weights_path}: {name} holds NaN or infinite values")

    existing = lora_modules(model)
    if existing:
        r, scaling, have = _infer_config(model)
        if (
            r != cfg.r
            or not math.isclose(scaling, cfg.scaling, rel_tol=1e-12)
            or have != set(paths)
        ):
            raise AlignlabError(
                f"the model already has other LoRA layers (r={r}, scaling={scaling:g}) than "
                f"{folder / CONFIG_FILE} describes (r={cfg.r}, scaling={cfg.scaling:g}); "
                "merge_lora(model) first or load into a fresh model"
            )
        for m in existing.values():  # the file's dropout wins
            m.lora_dropout = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
            m.lora_dropout.train(m.training)
    else:
        apply_lora(model, cfg)
    mods = lora_modules(model)
    with torch.no_grad():
        for path in paths:
            m = mods[path]
            m.lora_A.weight.copy_(state[f"{PEFT_PREFIX}{path}.lora_A.weight"])
            m.lora_B.weight.copy_(state[f"{PEFT_PREFIX}{path}.lora_B.weight"])
    return cfg
