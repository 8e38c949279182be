"""The three Gemma Scope sites per layer, read or replaced on our model and on HF's.

Gemma Scope (Lieberum et al. 2024, §4 and the notes' "Sites per layer") trains one SAE per
site and layer (layers zero-indexed):

    "attn_z"      concatenated attention head outputs *before* W_O, i.e. the input of
                  `self_attn.o_proj`, shape (B, T, num_heads * head_dim);
    "mlp_out"     the MLP output *after* the post-MLP RMSNorm, i.e. the output of
                  `post_feedforward_layernorm`, shape (B, T, d_model);
    "resid_post"  the residual stream after the block, i.e. the output of
                  `model.model.layers[L]`, shape (B, T, d_model).

`capture_sites` and `replace_site` give these the same meaning on

* `alignlab.gemma2.Gemma2ForCausalLM`, by delegating to its HookPoints
  (`model.capture` / `model.replace`), and
* a Hugging Face `transformers` Gemma 2 (`Gemma2ForCausalLM` or the bare `Gemma2Model`), by
  PyTorch hooks on the modules named above: a forward *pre*-hook on `o_proj` for attn_z, and
  forward hooks on `post_feedforward_layernorm` and on the decoder layer. transformers is
  never imported here; HF models are recognised by their module structure.

Captured tensors are the live activations (not detached, not copied): run under
`torch.no_grad()` unless gradients through them are wanted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from alignlab.core.errors import AlignlabError, did_you_mean
from alignlab.gemma2.model import SITES, Gemma2ForCausalLM

__all__ = [
    "SITES",
    "SiteKey",
    "capture_sites",
    "check_sites",
    "is_hf_gemma2",
    "model_num_layers",
    "parse_site_name",
    "replace_site",
    "site_dim",
    "site_name",
]

SiteKey = tuple[str, int]
"""(site, layer), e.g. ("resid_post", 3)."""


# --------------------------------------------------------------------------------------------
# Model introspection


def _hf_layers(model: nn.Module) -> Any | None:
    """The decoder layers of an HF-style Gemma 2 (ForCausalLM or bare model), else None."""
    inner = getattr(model, "model", model)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        return None
    first = layers[0]
    attn = getattr(first, "self_attn", None)
    if attn is None or not isinstance(getattr(attn, "o_proj", None), nn.Module):
        return None
    if not isinstance(getattr(first, "post_feedforward_layernorm", None), nn.Module):
        return None
    return layers


def is_hf_gemma2(model: nn.Module) -> bool:
    """True for a Hugging Face Gemma 2 (or any model with its module layout), not ours."""
    return not isinstance(model, Gemma2ForCausalLM) and _hf_layers(model) is not None


def _kind(model: nn.Module) -> str:
    if isinstance(model, Gemma2ForCausalLM):
        return "ours"
    if _hf_layers(model) is not None:
        return "hf"
    raise AlignlabError(
        f"unsupported model type {type(model).__module__}.{type(model).__name__}; valid models: "
        "alignlab.gemma2.Gemma2ForCausalLM or a Hugging Face transformers Gemma2ForCausalLM / "
        "Gemma2Model (decoder layers at model.model.layers with self_attn.o_proj and "
        "post_feedforward_layernorm)"
    )


def model_num_layers(model: nn.Module) -> int:
    """Number of decoder layers of our model or of an HF Gemma 2."""
    if _kind(model) == "ours":
        return model.config.num_layers
    return len(_hf_layers(model))


def site_dim(model: nn.Module, site: str) -> int:
    """Width of `site`: num_heads * head_dim for "attn_z", d_model for the other two."""
    _check_site_name(site)
    if _kind(model) == "ours":
        cfg = model.config
        return cfg.num_heads * cfg.head_dim if site == "attn_z" else cfg.d_model
    layer0 = _hf_layers(model)[0]
    if site == "attn_z":
        return layer0.self_attn.o_proj.in_features
    return layer0.self_attn.o_proj.out_features


def _check_site_name(site: str) -> None:
    if site not in SITES:
        raise AlignlabError(
            f"unknown Gemma Scope site {site!r}; valid sites: {', '.join(SITES)}."
            + did_you_mean(str(site), SITES)
        )


def check_sites(model: nn.Module, sites: Sequence[SiteKey]) -> list[SiteKey]:
    """Validate (site, layer) pairs against `model`; return them as a list of tuples.

    Raises AlignlabError for an unknown site, a layer out of range, a malformed pair or a
    duplicate.
    """
    n = model_num_layers(model)
    out: list[SiteKey] = []
    for key in sites:
        if not (isinstance(key, tuple | list) and len(key) == 2):
            raise AlignlabError(
                f"a site must be a (site, layer) pair such as ('resid_post', 3), got {key!r}"
            )
        site, layer = key
        _check_site_name(site)
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n:
            raise AlignlabError(f"layer {layer!r} of site {site!r} out of range [0, {n})")
        if (site, layer) in out:
            raise AlignlabError(f"site ({site!r}, {layer}) requested twice")
        out.append((site, layer))
    return out


def site_name(key: SiteKey) -> str:
    """("attn_z", 3) -> "attn_z.3" (the tensor name used by activation shards)."""
    site, layer = key
    return f"{site}.{layer}"


def parse_site_name(name: str) -> SiteKey:
    """Inverse of `site_name`: "attn_z.3" -> ("attn_z", 3)."""
    site, _, layer = name.rpartition(".")
    if site not in SITES or not layer.isdigit():
        raise AlignlabError(
            f"malformed site name {name!r}; expected '<site>.<layer>' with site one of "
            f"{', '.join(SITES)}, e.g. 'resid_post.3'"
        )
    return site, int(layer)


# --------------------------------------------------------------------------------------------
# HF hooks


def _hf_handle(
    model: nn.Module, site: str, layer: int, on_value: Callable[[torch.Tensor], Any]
) -> torch.utils.hooks.RemovableHandle:
    """Register a hook at (site, layer) of an HF Gemma 2 that calls `on_value(x)` with the
    site's activation x; if it returns a tensor, that tensor replaces x downstream."""
    block = _hf_layers(model)[layer]
    if site == "attn_z":

        def pre_hook(_module, args, kwargs):
            if args:
                new = on_value(args[0])
                return None if new is None else ((new, *args[1:]), kwargs)
            new = on_value(kwargs["input"])
            return None if new is None else (args, {**kwargs, "input": new})

        return block.self_attn.o_proj.register_forward_pre_hook(pre_hook, with_kwargs=True)

    if site == "mlp_out":

        def post_hook(_module, _args, output):
            return on_value(output)

        return block.post_feedforward_layernorm.register_forward_hook(post_hook)

    def layer_hook(_module, _args, output):
        # transformers 5 returns the hidden states; 4.x returns (hidden_states, *extras).
        if isinstance(output, tuple):
            new = on_value(output[0])
            return None if new is None else (new, *output[1:])
        return on_value(output)

    return block.register_forward_hook(layer_hook)


# --------------------------------------------------------------------------------------------
# Public context managers


@contextlib.contextmanager
def capture_sites(
    model: nn.Module, sites: Sequence[SiteKey]
) -> Iterator[dict[SiteKey, torch.Tensor]]:
    """`with capture_sites(model, [("attn_z", 1), ("resid_post", 2)]) as acts: model(ids)`.

    Each forward pass overwrites `acts[(site, layer)]` with that site's activation, after any
    replacement registered earlier (`replace_site` entered before this). Works for our
    Gemma2ForCausalLM and for HF's Gemma 2 with identical site definitions (module docstring).
    """
    keys = check_sites(model, sites)
    if _kind(model) == "ours":
        with model.capture(keys) as acts:
            yield acts
        return

    acts: dict[SiteKey, torch.Tensor] = {}

    def recorder(key: SiteKey) -> Callable[[torch.Tensor], None]:
        def record(x: torch.Tensor) -> None:
            acts[key] = x

        return record

    handles = [_hf_handle(model, s, i, recorder((s, i))) for s, i in keys]
    try:
        yield acts
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def replace_site(
    model: nn.Module, site: str, layer: int, fn: Callable[[torch.Tensor], torch.Tensor]
) -> Iterator[None]:
    """Within the block, the activation x at (site, layer) is replaced by fn(x) downstream.

    fn receives a tensor of shape (B, T, site_dim(model, site)) and must return one of the
    same shape (e.g. an SAE reconstruction, to measure delta LM loss; notes "Evaluation").
    """
    ((site, layer),) = check_sites(model, [(site, layer)])
    if _kind(model) == "ours":
        with model.replace(site, layer, fn):
            yield
        return
    handle = _hf_handle(model, site, layer, fn)
    try:
        yield
    finally:
        handle.remove()
