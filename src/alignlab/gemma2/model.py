"""The Gemma 2 decoder (paper §2, Table 1), one small module per concept.

Forward pass (paper §2; HF `modeling_gemma2.py`; gemma_pytorch `gemma/model.py`):

    h = embed(ids) * sqrt(d_model)
    for each layer i (sliding window on even i, global causal on odd i):
        h = h + post_attention_layernorm(attn(input_layernorm(h)))
        h = h + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(h)))
    logits = 30 * tanh(embed.weight @ norm(h) / 30)

Parameter names mirror Hugging Face's, so `alignlab.gemma2.hf` converts by a table.

Gemma Scope sites (Lieberum et al. 2024). Every block carries three `HookPoint`s, identity
modules whose forward hooks may read or *replace* the activation (to splice in an SAE):

    "attn_z"      model.layers.{i}.self_attn.hook_attn_z   concatenated heads before o_proj,
                                                            shape (B, T, num_heads * head_dim)
    "mlp_out"     model.layers.{i}.hook_mlp_out             MLP output after
                                                            post_feedforward_layernorm, (B, T, d)
    "resid_post"  model.layers.{i}.hook_resid_post          the residual stream after block i

`Gemma2ForCausalLM.capture` and `.replace` wrap them in context managers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from alignlab.core.errors import AlignlabError
from alignlab.gemma2.config import Gemma2Config

SITES = ("attn_z", "mlp_out", "resid_post")


def soft_cap(x: torch.Tensor, cap: float | None) -> torch.Tensor:
    """cap * tanh(x / cap) (paper §2 "Logit soft-capping"); in place when no gradient is needed.

    Same three operations, in the same order, as HF, so the results are bit-identical.
    Only call it on a fresh intermediate: without autograd it overwrites `x`.
    """
    if cap is None:
        return x
    if x.requires_grad:  # tanh's backward needs its own output, so no in-place chain here
        return torch.tanh(x / cap) * cap
    return x.div_(cap).tanh_().mul_(cap)


class RMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps) * (1 + weight), computed in fp32 (weights stored as offsets)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))  # zeros = unit scale, as in HF and JAX

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        if torch.is_grad_enabled() and (h.requires_grad or self.weight.requires_grad):
            h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
            return (h * (1.0 + self.weight.float())).type_as(x)
        # The same operations on the same values, in place on fresh intermediates.
        h = h * h.pow(2).mean(-1, keepdim=True).add_(self.eps).rsqrt_()
        return h.mul_(1.0 + self.weight.float()).type_as(x)


def rotary_cos_sin(
    positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE tables for integer positions (B, T): cos and sin of shape (B, 1, T, head_dim)."""
    inv_freq = 1.0 / (
        theta
        ** (torch.arange(0, head_dim, 2, dtype=torch.float, device=positions.device) / head_dim)
    )
    freqs = positions[..., None].float() * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)  # half-split pairing: dim j rotates with j + hd/2
    return emb.cos().to(dtype)[:, None], emb.sin().to(dtype)[:, None]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + rotate_half(x) * sin


class HookPoint(nn.Module):
    """An identity at a named activation site. A forward hook that returns a tensor replaces it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def hooked(module: nn.Module) -> bool:
    """Whether calling `module` could run a hook, forward or backward, its own or a global one."""
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or module._backward_hooks
        or module._backward_pre_hooks
        or _global_hooks()
    )


def _global_hooks() -> bool:
    """Whether a hook is registered for every module (torch.nn.modules.module.register_module_*)."""
    m = nn.modules.module
    return bool(
        m._global_forward_hooks
        or m._global_forward_pre_hooks
        or m._global_backward_hooks
        or m._global_backward_pre_hooks
    )


def through(hook: HookPoint, x: torch.Tensor) -> torch.Tensor:
    """hook(x), skipping nn.Module's call machinery when no hook could see it (the common case)."""
    return hook(x) if hooked(hook) else x


# ---------------------------------------------------------------------------------------------
# Attention kernels. Both take q (B, H, T, hd), k and v (B, KV, S, hd), and an additive mask
# (B or 1, T, S) holding 0 where key j is visible from query i and the dtype's minimum where not
# (finite, like HF, so a fully padded row gives a uniform softmax rather than NaN), or None when
# every key is visible (adding zeros changes no score). They return
# the concatenated heads (B, T, H * hd), the Gemma Scope "attn_z" site.


def _softmax_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)  # fp32 at least, as HF (fp64 kept)


def eager_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    scaling: float,
    softcap: float | None,
) -> torch.Tensor:
    """The reference, as paper §2 and HF's eager_attention_forward write it, op for op."""
    B, H, T, hd = q.shape
    groups = H // k.shape[1]
    k = k.repeat_interleave(groups, dim=1)  # query head h reads KV head h // groups
    v = v.repeat_interleave(groups, dim=1)
    scores = torch.matmul(q, k.transpose(2, 3)) * scaling
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap  # soft-cap BEFORE the mask
    if mask is not None:
        scores = scores + mask[:, None]
    probs = F.softmax(scores, dim=-1, dtype=_softmax_dtype(q)).to(q.dtype)
    return torch.matmul(probs, v).transpose(1, 2).reshape(B, T, H * hd)


def _as_matrices(x: torch.Tensor) -> torch.Tensor:
    """x (B, KV, S, hd) as a batch of row-major matrices that bmm reads without a copy: x itself
    when it already is one (contiguous, or a KV-cache buffer's view), else a contiguous copy."""
    B, KV, S, hd = x.shape
    if x.stride(3) == 1 and x.stride(2) == hd and (B == 1 or x.stride(0) == KV * x.stride(1)):
        return x
    return x.contiguous()


def fast_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    scaling: float,
    softcap: float | None,
    window: int | None,
    q_offset: int = 0,
    block: int = 64,
) -> torch.Tensor:
    """The same maths as `eager_attention`, op for op, computed block by block over queries.

    Query i sits at key index i + q_offset (q_offset = keys cached before this call), so a
    block of queries [a, b) can only see keys in [a + q_offset - window + 1, b + q_offset):
    key blocks that the causal or sliding mask removes entirely are never computed, and a
    sliding layer costs T * (block + window) scores instead of T * T. Each block's scores
    stay in cache while the scale, soft-cap, mask and softmax run over them in place.
    Adjacent query heads reach their shared KV head through a reshape, without repeat_kv's
    copy. Keys that are computed but masked (block edges, padding) are masked as in the
    reference, so outputs agree with it to float rounding (bit-identical for T <= block).

    Keys and values are laid out as matrices once, so every block reads them as views. Without
    autograd the queries are laid out (kv head, query, group), so that a block's rows are
    one contiguous slab too; with autograd they keep the (kv head, group, query) order, whose
    backward sums the key gradient in that order (one copy of the block's rows instead), and
    the query blocks are split off, so that their gradients are concatenated rather than
    each padded with zeros to the queries' size and summed.
    Each row is the same dot products and softmax either way, so both orders give the same
    outputs bit for bit.
    """
    B, H, T, hd = q.shape
    KV = k.shape[1]
    groups = H // KV
    k, v = _as_matrices(k), _as_matrices(v)
    inplace = not (q.requires_grad or k.requires_grad or v.requires_grad)
    if inplace:
        q = q.reshape(B, KV, groups, T, hd).transpose(2, 3).contiguous()  # (B, KV, T, g, hd)
    else:  # head h = kv * groups + g; split, not sliced, so that the backward is one cat
        q_blocks = q.reshape(B, KV, groups, T, hd).split(block, dim=3)
    outs = []
    for a in range(0, T, block):
        b = min(a + block, T)
        lo = 0 if window is None else max(0, a + q_offset - window + 1)
        hi = b + q_offset
        if inplace:
            qb = q[:, :, a:b].view(B, KV, (b - a) * groups, hd)
            s = torch.matmul(qb, k[:, :, lo:hi].transpose(2, 3))
            s = s.mul_(scaling)  # HF's order of operations, in place on a block in cache
            if softcap is not None:
                s = s.div_(softcap).tanh_().mul_(softcap)
            if mask is not None:
                s.view(B, KV, b - a, groups, hi - lo).add_(mask[:, None, a:b, None, lo:hi])
        else:
            qb = q_blocks[a // block].reshape(B, KV, groups * (b - a), hd)
            s = torch.matmul(qb, k[:, :, lo:hi].transpose(2, 3)) * scaling
            if softcap is not None:
                s = torch.tanh(s / softcap) * softcap
            if mask is not None:
                s = s.view(B, KV, groups, b - a, hi - lo) + mask[:, None, None, a:b, lo:hi]
        p = F.softmax(s, dim=-1, dtype=_softmax_dtype(q)).to(q.dtype)
        o = torch.matmul(p.view(B, KV, -1, hi - lo), v[:, :, lo:hi])
        if inplace:
            outs.append(o.view(B, KV, b - a, groups, hd).transpose(1, 2))
        else:
            outs.append(o.view(B, KV, groups, b - a, hd).permute(0, 3, 1, 2, 4))
    z = outs[0].contiguous() if len(outs) == 1 else torch.cat(outs, dim=1)  # (B, T, KV, g, hd)
    return z.view(B, T, H * hd)


class Attention(nn.Module):
    """Grouped-query attention with RoPE, soft-capped scores and, on even layers, a window."""

    def __init__(self, config: Gemma2Config, layer: int):
        super().__init__()
        self.config = config
        self.layer = layer
        self.window = config.window(layer)
        self.scaling = config.query_pre_attn_scalar**-0.5  # not head_dim^-0.5 (27B: 144)
        H, KV, hd, d = config.num_heads, config.num_kv_heads, config.head_dim, config.d_model
        self.q_proj = nn.Linear(d, H * hd, bias=False)
        self.k_proj = nn.Linear(d, KV * hd, bias=False)
        self.v_proj = nn.Linear(d, KV * hd, bias=False)
        self.o_proj = nn.Linear(H * hd, d, bias=False)
        self.hook_attn_z = HookPoint()

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        cfg = self.config
        q = self.q_proj(x).view(B, T, cfg.num_heads, cfg.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, cfg.num_kv_heads, cfg.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, cfg.num_kv_heads, cfg.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        q_offset = 0
        if cache is not None:
            k, v = cache.update(self.layer, k, v)
            q_offset = k.shape[2] - T
        if cfg.attn_impl == "eager":
            z = eager_attention(q, k, v, mask, self.scaling, cfg.attn_logit_softcap)
        else:
            z = fast_attention(
                q, k, v, mask, self.scaling, cfg.attn_logit_softcap, self.window, q_offset
            )
        return self.o_proj(through(self.hook_attn_z, z))


class MLP(nn.Module):
    """Approximated GeGLU (paper §2): down(gelu_tanh(gate(x)) * up(x))."""

    def __init__(self, config: Gemma2Config):
        super().__init__()
        self.gate_proj = nn.Linear(config.d_model, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.d_model, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = F.gelu(self.gate_proj(x), approximate="tanh")
        u = self.up_proj(x)
        return self.down_proj(g * u if g.requires_grad else g.mul_(u))  # in place: one buffer less


class Block(nn.Module):
    """One decoder layer with sandwich norms: RMSNorm before AND after each sub-layer (§2)."""

    def __init__(self, config: Gemma2Config, layer: int):
        super().__init__()
        d, eps = config.d_model, config.rms_norm_eps
        self.self_attn = Attention(config, layer)
        self.mlp = MLP(config)
        self.input_layernorm = RMSNorm(d, eps)
        self.post_attention_layernorm = RMSNorm(d, eps)
        self.pre_feedforward_layernorm = RMSNorm(d, eps)
        self.post_feedforward_layernorm = RMSNorm(d, eps)
        self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, h, cos, sin, mask, cache=None):
        a = self.self_attn(self.input_layernorm(h), cos, sin, mask, cache)
        h = h + self.post_attention_layernorm(a)
        m = self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(h)))
        h = h + through(self.hook_mlp_out, m)
        return through(self.hook_resid_post, h)


class KVCache:
    """Keys and values of past tokens, per layer, for incremental decoding.

    Without autograd, each layer writes into a preallocated buffer (B, KV, capacity, hd)
    and reads a view of it, so a decode step copies only its own token's keys and values
    instead of the whole cache. Sliding-window (even) layers hold only the last
    `sliding_window` columns, since no later query can see further back: their buffer holds
    2 * window columns and the held ones are moved to the front when it fills (one copy per
    `window` tokens). Global layers hold everything, in a buffer of `capacity` columns
    (`generate` passes the prompt plus up to 512 new tokens) that doubles when a call needs
    more. A call's keys are the held columns followed by its own, exactly as concatenating
    them would give (in the promoted dtype, as concatenation would). With autograd enabled
    the cache concatenates instead, so that nothing autograd saved is written again.

    `valid` marks which columns so far are real tokens (False for left padding), `padded`
    whether any is not, and `lengths` counts real tokens per row, which is the next token's
    position.
    """

    def __init__(self, config: Gemma2Config, batch_size: int, device=None, capacity: int = 0):
        L = config.num_layers
        self.windows = [config.window(i) for i in range(L)]
        self.capacity = capacity
        self._k: list[torch.Tensor | None] = [None] * L
        self._v: list[torch.Tensor | None] = [None] * L
        self._span = [(0, 0)] * L  # the held columns of each layer's buffer: [lo, hi)
        self.valid = torch.zeros(batch_size, 0, dtype=torch.bool, device=device)
        self.padded = False
        self._masks: dict = {}
        self.lengths = torch.zeros(batch_size, dtype=torch.long, device=device)

    @property
    def seen(self) -> int:
        """Columns (tokens or padding) consumed so far."""
        return self.valid.shape[1]

    def decode_mask(self, window: int, dtype: torch.dtype) -> torch.Tensor:
        """The additive mask of one unpadded query once the window is full: (1, 1, window + 1),
        the oldest held key hidden (as `build_mask` gives it), built once per window and dtype."""
        key = (window, dtype)
        if key not in self._masks:
            self._masks[key] = build_mask(
                None, window, window, 1, window, dtype, self.lengths.device
            )
        return self._masks[key]

    @property
    def keys(self) -> tuple[torch.Tensor | None, ...]:
        """Each layer's held keys (B, KV, columns, hd), copied out of its buffer (read-only:
        the buffers are the cache's own and are written in place)."""
        return self._held(self._k)

    @property
    def values(self) -> tuple[torch.Tensor | None, ...]:
        """Each layer's held values, as `keys`."""
        return self._held(self._v)

    def _held(self, buffers) -> tuple[torch.Tensor | None, ...]:
        return tuple(
            None if b is None else b[:, :, lo:hi].clone()
            for b, (lo, hi) in zip(buffers, self._span)
        )

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Append this call's keys and values; return all of them the layer's queries may see."""
        w = self.windows[layer]
        lo, hi = self._span[layer]
        buf_k, buf_v = self._k[layer], self._v[layer]
        T = k.shape[2]
        if torch.is_grad_enabled():  # autograd may save what is read: new tensors, no writes
            if buf_k is not None:
                k = torch.cat([buf_k[:, :, lo:hi], k], dim=2)
                v = torch.cat([buf_v[:, :, lo:hi], v], dim=2)
            self._k[layer], self._v[layer] = k, v
            S = k.shape[2]
            self._span[layer] = (0 if w is None else max(0, S - w), S)
            return k, v
        dtype = k.dtype if buf_k is None else torch.promote_types(buf_k.dtype, k.dtype)
        dtype_v = v.dtype if buf_v is None else torch.promote_types(buf_v.dtype, v.dtype)
        # a buffer that is not ours to write: another dtype, autograd's (written by the branch
        # above), or made in inference mode and used outside it
        foreign = buf_k is not None and (
            buf_k.dtype != dtype
            or buf_v.dtype != dtype_v
            or buf_k.requires_grad
            or (buf_k.is_inference() and not torch.is_inference_mode_enabled())
        )
        if buf_k is None or hi + T > buf_k.shape[2] or foreign:  # move the held columns
            held = hi - lo
            if w is None:
                size = max(held + T, 2 * hi, self.capacity)
            else:  # room for `window` more columns, or for the whole generation if smaller
                size = max(held + T, min(2 * w, self.capacity) if self.capacity else 2 * w)
            if buf_k is None or foreign or size > buf_k.shape[2] or lo < held:
                new_k = k.new_empty(*k.shape[:2], size, k.shape[3], dtype=dtype)
                new_v = v.new_empty(*v.shape[:2], size, v.shape[3], dtype=dtype_v)
            else:
                new_k, new_v = buf_k, buf_v
            if held:
                new_k[:, :, :held] = buf_k[:, :, lo:hi]
                new_v[:, :, :held] = buf_v[:, :, lo:hi]
            buf_k, buf_v, lo, hi = new_k, new_v, 0, held
            self._k[layer], self._v[layer] = buf_k, buf_v
        buf_k[:, :, hi : hi + T] = k
        buf_v[:, :, hi : hi + T] = v
        hi += T
        out = buf_k[:, :, lo:hi], buf_v[:, :, lo:hi]
        self._span[layer] = (lo if w is None else max(lo, hi - w), hi)
        return out


def build_mask(
    valid: torch.Tensor | None,
    past: int,
    kept: int,
    T: int,
    window: int | None,
    dtype: torch.dtype,
    device=None,
) -> torch.Tensor:
    """Additive mask (B or 1, T, kept + T) for queries at columns past .. past + T - 1.

    Keys are the columns past - kept .. past + T - 1. Key j is visible from query i iff
    j <= i, j > i - window on sliding layers (paper §2; HF masking_utils), and j is a real token.
    """
    q = torch.arange(past, past + T, device=device)[:, None]
    j = torch.arange(past - kept, past + T, device=device)[None, :]
    allowed = j <= q
    if window is not None:
        allowed = allowed & (j > q - window)
    allowed = allowed[None]
    if valid is not None:
        allowed = allowed & valid[:, None, past - kept :]
    zero = torch.zeros((), dtype=dtype, device=device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)


class Gemma2Model(nn.Module):
    """Embedding, decoder layers and final norm: the hidden states before the unembedding."""

    def __init__(self, config: Gemma2Config):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model, config.pad_token_id)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.num_layers))
        self.norm = RMSNorm(config.d_model, config.rms_norm_eps)

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        hidden_states: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Final normed hidden states (B, T, d); see Gemma2ForCausalLM.forward for arguments.

        A `hidden_states` list receives HF's `output_hidden_states`: the scaled embedding,
        each block's output, except that the last entry is after the final norm.
        """
        cfg = self.config
        B, T = input_ids.shape
        h = self.embed_tokens(input_ids)
        # A tensor of the activation dtype, as HF and gemma_pytorch: bf16 sqrt(3584) = 59.75.
        h = h * torch.tensor(cfg.d_model**0.5, dtype=h.dtype, device=h.device)

        past = cache.seen if cache is not None else 0
        new_valid = None if attention_mask is None else attention_mask.to(torch.bool)
        padded = new_valid is not None and not bool(new_valid.all())
        if positions is None:
            positions = default_positions(new_valid if padded else None, cache, B, T, h.device)
        if cache is not None:
            if new_valid is None:
                new_valid = torch.ones(B, T, dtype=torch.bool, device=h.device)
            padded = padded or cache.padded
            valid = torch.cat([cache.valid, new_valid], dim=1) if padded else None
        else:
            valid = new_valid if padded else None  # no padding anywhere: one mask for all rows
        cos, sin = rotary_cos_sin(positions, cfg.head_dim, cfg.rope_theta, h.dtype)

        # One mask per layer kind (sliding / global), shared by the layers of that kind.
        masks = {}
        for w in {cfg.window(i) for i in range(cfg.num_layers)}:
            kept = past if w is None else min(past, w)  # columns the cache holds for it
            if valid is None and T == 1 and (w is None or kept < w):
                masks[w] = None  # one query that sees every key: a mask of zeros
            elif valid is None and T == 1 and cache is not None:  # the oldest key left the window
                masks[w] = cache.decode_mask(w, h.dtype)
            else:
                masks[w] = build_mask(valid, past, kept, T, w, h.dtype, h.device)

        if hidden_states is not None:
            hidden_states.append(h)
        for i, block in enumerate(self.layers):
            h = block(h, cos, sin, masks[cfg.window(i)], cache)
            if hidden_states is not None and i < len(self.layers) - 1:
                hidden_states.append(h)
        h = self.norm(h)
        if hidden_states is not None:
            hidden_states.append(h)

        if cache is not None:
            cache.valid = valid if valid is not None else torch.cat([cache.valid, new_valid], 1)
            cache.padded = padded
            cache.lengths = cache.lengths + (new_valid.sum(1) if padded else T)
        return h


def default_positions(valid, cache, B, T, device) -> torch.Tensor:
    """Each real token's index among its row's real tokens (HF: cumsum(mask) - 1)."""
    start = cache.lengths[:, None] if cache is not None else 0
    if valid is None:
        return start + torch.arange(T, device=device).expand(B, T)
    return start + (valid.long().cumsum(-1) - 1).clamp(min=0)


class Gemma2ForCausalLM(nn.Module):
    """Gemma 2 with its tied unembedding and final soft-cap 30 * tanh(logits / 30)."""

    def __init__(self, config: Gemma2Config):
        super().__init__()
        config.validate()
        self.config = config
        self.model = Gemma2Model(config)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """HF's initialisation: N(0, initializer_range) weights, zero pad row, zero norm offsets."""
        std = self.config.initializer_range
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=std)
            elif isinstance(module, RMSNorm):
                nn.init.zeros_(module.weight)
        with torch.no_grad():
            self.model.embed_tokens.weight[self.config.pad_token_id].zero_()

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        return_hidden_states: bool = False,
    ):
        """Logits (B, T, vocab_size) for token ids (B, T).

        `attention_mask` (B, T) marks real tokens with 1 and padding with 0 (left padding for
        batched prompts); positions then count real tokens only, unless `positions` (B, T) is
        given. With a `KVCache` the call continues where the cache left off.
        With `return_hidden_states`, returns `(logits, hidden_states)` as HF's
        `output_hidden_states`: num_layers + 1 tensors, the last one after the final norm.
        """
        hs: list[torch.Tensor] | None = [] if return_hidden_states else None
        h = self.model(input_ids, positions, attention_mask, cache, hs)
        logits = self.logits(h)
        return (logits, hs) if return_hidden_states else logits

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Unembed with the tied embedding matrix, then soft-cap (paper §2)."""
        return soft_cap(
            F.linear(h, self.model.embed_tokens.weight), self.config.final_logit_softcap
        )

    def set_sliding_window(self, window: int) -> None:
        """Use another sliding window on the even layers from now on (paper Table 10 evaluates
        a model trained with 4096 at 2048 and 1024). Global layers are unaffected. It changes
        `self.config` (so a later save_pretrained records the new window); a KVCache made
        before the change keeps the old window, so start generation with a new one."""
        if window < 1:
            raise AlignlabError(f"sliding_window must be >= 1, got {window}")
        self.config.sliding_window = window
        for i, block in enumerate(self.model.layers):
            block.self_attn.window = self.config.window(i)

    def new_cache(self, batch_size: int, capacity: int = 0) -> KVCache:
        """An empty KVCache; `capacity` (prompt + new tokens, if known) sizes its buffers."""
        device = self.model.embed_tokens.weight.device
        return KVCache(self.config, batch_size, device=device, capacity=capacity)

    # --- Gemma Scope sites -------------------------------------------------------------------

    def hook_point(self, site: str, layer: int) -> HookPoint:
        """The HookPoint of `site` ("attn_z", "mlp_out" or "resid_post") in block `layer`."""
        if site not in SITES:
            raise AlignlabError(f"unknown hook site {site!r}; valid sites: {', '.join(SITES)}")
        if not 0 <= layer < self.config.num_layers:
            raise AlignlabError(f"layer {layer} out of range [0, {self.config.num_layers})")
        block = self.model.layers[layer]
        return block.self_attn.hook_attn_z if site == "attn_z" else getattr(block, f"hook_{site}")

    @contextlib.contextmanager
    def capture(
        self, sites: Iterable[tuple[str, int]]
    ) -> Iterator[dict[tuple[str, int], torch.Tensor]]:
        """`with model.capture([("resid_post", 3)]) as acts: model(ids)`; then acts[("resid_post", 3)].

        Records the activation each forward pass leaves at each site (after any replacement
        registered earlier); a later forward pass overwrites the entry.
        """
        acts: dict[tuple[str, int], torch.Tensor] = {}

        def recorder(key):
            return lambda _module, _inputs, output: acts.__setitem__(key, output)

        handles = [self.hook_point(s, i).register_forward_hook(recorder((s, i))) for s, i in sites]
        try:
            yield acts
        finally:
            for handle in handles:
                handle.remove()

    @contextlib.contextmanager
    def replace(
        self, site: str, layer: int, fn: Callable[[torch.Tensor], torch.Tensor]
    ) -> Iterator[None]:
        """Within the block, the activation x at (site, layer) is replaced by fn(x)."""
        handle = self.hook_point(site, layer).register_forward_hook(lambda _m, _i, out: fn(out))
        try:
            yield
        finally:
            handle.remove()


def count_parameters(config: Gemma2Config) -> dict[str, int]:
    """Embedding and non-embedding parameter counts (paper Table 2), built on the meta device.

    With `vocab_size=PAPER_VOCAB_SIZE` (256128), the 2B/9B/27B presets give Table 2 exactly.
    """
    with torch.device("meta"):
        model = Gemma2ForCausalLM(config)
    total = sum(p.numel() for p in model.parameters())
    embedding = model.model.embed_tokens.weight.numel()
    return {"embedding": embedding, "non_embedding": total - embedding}
