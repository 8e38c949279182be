"""On-disk formats for JumpReLU SAEs: the Gemma Scope release `params.npz` and SAELens folders.

**Gemma Scope release format** (Lieberum et al. 2024, arXiv 2408.05147; Hub repositories
`google/gemma-scope-{2b,9b}-pt-{res,mlp,att}` etc., one file per SAE at
`layer_{L}/width_{W}/average_l0_{N}/params.npz`): an uncompressed NumPy `.npz` archive with
exactly five float32 arrays

    W_enc [d_in, d_sae]   W_dec [d_sae, d_in]   b_enc [d_sae]   b_dec [d_in]   threshold [d_sae]

for the SAE  f(x) = 1[W_encᵀx + b_enc > θ] · (W_encᵀx + b_enc),  x̂ = W_decᵀ f + b_dec  on
**raw** activations. Training normalises inputs by a scalar C (E‖x/C‖² = 1) and uses a
pre-encoder bias (the encoder sees x/C − b_dec); App. A folds both away before release:

    b_enc′ = C·b_enc − C·W_encᵀ b_dec,   b_dec′ = C·b_dec,   θ′ = C·θ,   W_enc, W_dec unchanged.

`save_npz` therefore always writes `sae.release_params()` (the folded form), whatever form the
SAE is in; `load_npz` gives an SAE in released form (input_scale 1, no pre-encoder bias).
The STE bandwidth ε is not part of the format (it only matters for further training).

**SAELens format** (sae-lens 6.x, checked against 6.54.12; `SAE.save_model` / `SAE.load_from_disk`
/ `sae_lens_disk_loader`): a folder with two files,

- `sae_weights.safetensors`: tensors `W_enc [d_in, d_sae]`, `W_dec [d_sae, d_in]`,
  `b_enc [d_sae]`, `b_dec [d_in]`, `threshold [d_sae]` (the dtype named in cfg.json);
- `cfg.json`: `{"d_in", "d_sae", "dtype", "device", "apply_b_dec_to_input",
  "normalize_activations", "reshape_activations", "metadata": {"sae_lens_version", …,
  "model_name", "hook_name", …}, "architecture": "jumprelu"}`.

SAELens' `JumpReLUSAE.encode` computes `relu(z) · 1[z > θ]` with z = (x − b_dec·[apply_b_dec_to_input])
W_enc + b_enc, and `decode` computes `f W_dec + b_dec`; for θ ≥ 0 this is the Gemma Scope
JumpReLU. A config without a `sae_lens_version` ≥ 6 (top level or in `metadata`) is read by
SAELens through its pre-6.0 converter, which would drop our metadata and default the
architecture to "standard", so `save_saelens` records the format version it implements.

`load_saelens` also reads folders written by SAELens itself: `apply_b_dec_to_input` true is
folded exactly as in App. A (with C = 1: b_enc′ = b_enc − W_encᵀ b_dec); the old
`log_threshold` key is exponentiated as SAELens does; `normalize_activations` must be "none"
(or the legacy null/false), or "expected_average_only_in" with the trainer's
`activation_scaler.json` next to it, whose scaling factor s is then folded in as SAELens'
`fold_activation_norm_scaling_factor` does (W_enc·s, W_dec/s, b_dec/s). Other runtime
normalisations (layer_norm, constant_norm_rescale, covariance_whitening) and other
architectures are refused.

Both writers are atomic: nothing half-written is ever left at the destination.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alignlab.core.errors import AlignlabError
from alignlab.core.io import atomic_folder, atomic_write_bytes

from .sae import PARAM_NAMES, JumpReLUSAE, check_release_shapes

__all__ = [
    "SAELENS_CFG_FILENAME",
    "SAELENS_FORMAT_VERSION",
    "SAELENS_WEIGHTS_FILENAME",
    "hub_path",
    "load_npz",
    "load_saelens",
    "saelens_config",
    "save_npz",
    "save_saelens",
]

SAELENS_WEIGHTS_FILENAME = "sae_weights.safetensors"
SAELENS_CFG_FILENAME = "cfg.json"
SAELENS_SCALER_FILENAME = "activation_scaler.json"  # written next to trainer checkpoints
SAELENS_FORMAT_VERSION = "6.54.12"  # the sae-lens version whose format this module writes
_SAELENS_LEGACY_SCALE_KEYS = ("scaling_factor", "finetuning_scaling_factor")

_WIDTH_NAMES = {
    4096: "4k",
    16384: "16k",
    32768: "32k",
    65536: "65k",
    131072: "131k",
    262144: "262k",
    524288: "524k",
    1048576: "1m",
}


def hub_path(layer: int, d_sae: int, average_l0: int) -> str:
    """The Gemma Scope Hub path of one SAE: `layer_{L}/width_{W}/average_l0_{N}/params.npz`
    (widths named 16k, 65k, 131k, 1m, …, as in the release)."""
    width = _WIDTH_NAMES.get(int(d_sae), str(int(d_sae)))
    return f"layer_{int(layer)}/width_{width}/average_l0_{int(average_l0)}/params.npz"


# ---------------------------------------------------------------------------------------
# shared checks


def _check_values(params: Mapping[str, torch.Tensor], where: str) -> None:
    bad = [k for k in PARAM_NAMES if not bool(torch.isfinite(params[k]).all())]
    if bad:
        raise AlignlabError(f"{where}: non-finite values (NaN or inf) in {', '.join(bad)}")
    n_neg = int((params["threshold"] < 0).sum())
    if n_neg:
        raise AlignlabError(
            f"{where}: {n_neg} negative thresholds; a JumpReLU SAE needs θ ≥ 0 (θ > 0 in "
            "Gemma Scope), and below zero SAELens' relu(z)·1[z > θ] and z·1[z > θ] differ"
        )


def _release_tensors(sae: JumpReLUSAE, where: str) -> dict[str, torch.Tensor]:
    """The folded (App. A) float32 tensors, contiguous and on the CPU, checked."""
    if not isinstance(sae, JumpReLUSAE):
        raise AlignlabError(f"{where}: expected a JumpReLUSAE, got {type(sae).__name__}")
    params = {
        k: v.detach().to("cpu", torch.float32).contiguous() for k, v in sae.release_params().items()
    }
    check_release_shapes({k: tuple(v.shape) for k, v in params.items()}, where)
    _check_values(params, where)
    return params


def _build(params: Mapping[str, torch.Tensor], bandwidth: float) -> JumpReLUSAE:
    return JumpReLUSAE.from_release_params(params, bandwidth=bandwidth)


# ---------------------------------------------------------------------------------------
# Gemma Scope params.npz


def save_npz(sae: JumpReLUSAE, path: str | os.PathLike) -> Path:
    """Write `sae` in the Gemma Scope release format (`params.npz`; module docstring).

    The folded form (App. A) is saved, so the file takes raw activations whatever
    `sae.input_scale` and `sae.apply_b_dec_to_input` are. The write is atomic
    (`alignlab.core.io.atomic_write_bytes`: temporary file in the same folder, fsync, rename); on any failure nothing is left at `path` and an
    existing file there is untouched. Returns the path written."""
    path = Path(path)
    params = _release_tensors(sae, f"cannot save {path}")
    buf = io.BytesIO()
    np.savez(buf, **{k: params[k].numpy() for k in PARAM_NAMES})
    atomic_write_bytes(path, buf.getvalue())
    return path


def load_npz(path: str | os.PathLike, *, bandwidth: float = 1e-3) -> JumpReLUSAE:
    """Read a Gemma Scope `params.npz` (e.g. `layer_12/width_16k/average_l0_82/params.npz`)
    into a JumpReLUSAE in released form (raw activations, input_scale 1, no pre-encoder bias).

    The archive must hold exactly W_enc, W_dec, b_enc, b_dec and threshold with consistent
    shapes (any float dtype; converted to float32); anything else raises one AlignlabError
    naming the missing or unexpected keys or the bad shapes. Pickled objects are refused
    (`allow_pickle=False`). `bandwidth` (ε, not stored in the file) is only used if the SAE is
    trained further."""
    path = Path(path)
    where = f"{path} is not a Gemma Scope params.npz"
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise AlignlabError(f"{where}: it holds a single array, not an .npz archive")
        with data:
            arrays = {k: data[k] for k in data.files}
    except AlignlabError:
        raise
    except FileNotFoundError as e:
        raise AlignlabError(f"no such file: {path}") from e
    except (OSError, ValueError, EOFError) as e:  # bad zip, truncated or pickled members
        raise AlignlabError(f"{where}: {type(e).__name__}: {e}") from e
    check_release_shapes({k: tuple(v.shape) for k, v in arrays.items()}, where)
    not_float = [f"{k} ({a.dtype})" for k, a in arrays.items() if a.dtype.kind != "f"]
    if not_float:
        raise AlignlabError(f"{where}: non-float arrays: {', '.join(not_float)}")
    params = {
        k: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for k, a in arrays.items()
    }
    _check_values(params, where)
    return _build(params, bandwidth)


# ---------------------------------------------------------------------------------------
# SAELens folders


def _reshape_for(hook_name: str) -> str:
    # SAELens' convention (handle_pre_6_0_config, Gemma Scope attention SAEs): SAEs on
    # TransformerLens `attn.hook_z` take [..., n_heads, d_head] and flatten it themselves.
    return "hook_z" if hook_name.endswith("hook_z") else "none"


def saelens_config(
    sae: JumpReLUSAE,
    *,
    hook_name: str,
    model_name: str = "alignlab-gemma2",
    extra_metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The `cfg.json` that `save_saelens` writes for `sae` (its folded form)."""
    if not isinstance(hook_name, str) or not hook_name:
        raise AlignlabError(f"hook_name must be a non-empty string, got {hook_name!r}")
    metadata: dict[str, Any] = {
        # ≥ 6.0 so SAELens reads this as a v6 config (handle_config_defaulting); the
        # training version is null: SAELens did not train this SAE.
        "sae_lens_version": SAELENS_FORMAT_VERSION,
        "sae_lens_training_version": None,
        "model_name": model_name,
        "hook_name": hook_name,
        "hook_head_index": None,
    }
    if extra_metadata:
        metadata.update(dict(extra_metadata))
    metadata["alignlab"] = {
        "writer": "alignlab.gemmascope.formats.save_saelens",
        "form": "Gemma Scope release (App. A fold: raw activations, no pre-encoder bias)",
        "bandwidth": float(sae.bandwidth * sae.input_scale),  # ε in raw units, as folded()
    }
    return {
        "d_in": int(sae.d_in),
        "d_sae": int(sae.d_sae),
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": False,
        "normalize_activations": "none",
        "reshape_activations": _reshape_for(hook_name),
        "metadata": metadata,
        "architecture": "jumprelu",
    }


def save_saelens(
    sae: JumpReLUSAE,
    folder: str | os.PathLike,
    *,
    hook_name: str,
    model_name: str = "alignlab-gemma2",
    extra_metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write `sae` as a SAELens JumpReLU SAE folder (`cfg.json` + `sae_weights.safetensors`;
    module docstring) that `sae_lens.SAE.load_from_disk(folder)` loads with the same
    encode/decode.

    The folded form (Gemma Scope App. A) is written, so the config says
    `apply_b_dec_to_input: false, normalize_activations: "none"`, as SAELens' own loader for
    the Gemma Scope releases does. `hook_name` is the TransformerLens hook the SAE reads
    (e.g. `blocks.12.hook_resid_post`, `blocks.12.hook_mlp_out`, `blocks.12.attn.hook_z`; for
    hook_z, `reshape_activations` is "hook_z", SAELens' convention for attention SAEs).
    `extra_metadata` is merged into `cfg.json["metadata"]` (SAELens keeps unknown keys).

    The folder is built as a temporary sibling and renamed into place
    (`alignlab.core.io.atomic_folder`). An existing folder is replaced only if it holds nothing
    but the two SAELens files (so nothing else is ever deleted); otherwise AlignlabError.
    Returns the folder."""
    from safetensors.torch import save as safetensors_save

    folder = Path(folder)
    where = f"cannot save {folder}"
    params = _release_tensors(sae, where)
    cfg = saelens_config(
        sae, hook_name=hook_name, model_name=model_name, extra_metadata=extra_metadata
    )
    try:
        cfg_bytes = (json.dumps(cfg, indent=2, allow_nan=False) + "\n").encode("utf-8")
    except (TypeError, ValueError) as e:
        raise AlignlabError(f"{where}: extra_metadata is not plain JSON: {e}") from e
    ours = {SAELENS_CFG_FILENAME, SAELENS_WEIGHTS_FILENAME}
    if folder.exists():
        if not folder.is_dir():
            raise AlignlabError(f"{where}: it exists and is not a folder")
        others = sorted(p.name for p in folder.iterdir() if p.name not in ours)
        if others:
            raise AlignlabError(
                f"{where}: the folder exists and holds other files ({', '.join(others[:5])}"
                f"{', …' if len(others) > 5 else ''}); refusing to replace it"
            )
    weights = safetensors_save({k: params[k] for k in PARAM_NAMES})
    with atomic_folder(folder) as tmp:
        (tmp / SAELENS_WEIGHTS_FILENAME).write_bytes(weights)
        (tmp / SAELENS_CFG_FILENAME).write_bytes(cfg_bytes)
    return folder


def _scale_from_scaler(folder: Path, where: str) -> float:
    path = folder / SAELENS_SCALER_FILENAME
    if not path.is_file():
        raise AlignlabError(
            f"{where}: normalize_activations is 'expected_average_only_in' (not folded into "
            f"the weights) and there is no {SAELENS_SCALER_FILENAME} with the scaling factor; "
            "fold it with SAELens' fold_activation_norm_scaling_factor(s) before saving"
        )
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if data.get("has_whitening"):
            raise AlignlabError(f"{where}: {path.name} has a whitening transform; not supported")
        s = data["scaling_factor"]
    except (OSError, ValueError, KeyError, AttributeError) as e:
        raise AlignlabError(f"{where}: unreadable {path.name}: {e}") from e
    if s is None:
        return 1.0
    if not isinstance(s, int | float) or not (math.isfinite(s) and s > 0):
        raise AlignlabError(f"{where}: bad scaling_factor {s!r} in {path.name}")
    return float(s)


def load_saelens(folder: str | os.PathLike, *, bandwidth: float | None = None) -> JumpReLUSAE:
    """Read a SAELens JumpReLU SAE folder (ours or SAELens-written; module docstring) into a
    JumpReLUSAE in the Gemma Scope released form (raw activations, input_scale 1, no
    pre-encoder bias) with the same encode/decode as SAELens' `JumpReLUSAE`.

    `apply_b_dec_to_input: true` is folded into b_enc (b_enc′ = b_enc − W_encᵀ b_dec, in
    float64); a legacy `log_threshold` becomes exp(log_threshold); weights in any float dtype
    become float32. `bandwidth` (ε) defaults to the one `save_saelens` recorded, else 1e-3.
    Architectures other than "jumprelu", runtime input normalisations, missing/extra tensors
    and bad shapes raise AlignlabError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    where = f"{folder} is not a SAELens JumpReLU SAE folder"
    cfg_path = folder / SAELENS_CFG_FILENAME
    weights_path = folder / SAELENS_WEIGHTS_FILENAME
    missing = [p.name for p in (cfg_path, weights_path) if not p.is_file()]
    if missing:
        raise AlignlabError(f"{where}: missing {', '.join(missing)}")
    try:
        with open(cfg_path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        raise AlignlabError(f"{where}: unreadable {cfg_path.name}: {e}") from e
    if not isinstance(cfg, dict):
        raise AlignlabError(f"{where}: {cfg_path.name} is not a JSON object")

    arch = cfg.get("architecture")
    if arch != "jumprelu":
        shown = repr(arch) if arch is not None else "none given (SAELens reads that as 'standard')"
        raise AlignlabError(f"{where}: architecture is {shown}; only 'jumprelu' SAEs can be loaded")

    norm = cfg.get("normalize_activations", "none")
    scale = 1.0
    if norm in (None, False, "none"):
        pass
    elif norm in (True, "expected_average_only_in"):
        scale = _scale_from_scaler(folder, where)
    else:
        raise AlignlabError(
            f"{where}: normalize_activations {norm!r} is a runtime transform of the input that "
            "this SAE cannot represent; only 'none' (or a folded 'expected_average_only_in') "
            "is supported"
        )

    try:
        state = load_file(weights_path)
    except (OSError, SafetensorError) as e:
        raise AlignlabError(f"{where}: unreadable {weights_path.name}: {e}") from e
    state = dict(state)
    for k in _SAELENS_LEGACY_SCALE_KEYS:
        if k in state:
            v = state.pop(k)
            if not torch.equal(v.float(), torch.ones_like(v, dtype=torch.float32)):
                raise AlignlabError(
                    f"{where}: a {k} other than all ones (a fine-tuning scale on the latents) "
                    "is not supported"
                )
    if "log_threshold" in state and "threshold" not in state:
        state["threshold"] = torch.exp(state.pop("log_threshold"))
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    d_in, d_sae = check_release_shapes(shapes, where)
    for key, got in (("d_in", d_in), ("d_sae", d_sae)):
        if key in cfg and cfg[key] != got:
            raise AlignlabError(f"{where}: cfg.json says {key}={cfg[key]}, the weights {got}")
    not_float = [f"{k} ({v.dtype})" for k, v in state.items() if not v.is_floating_point()]
    if not_float:
        raise AlignlabError(f"{where}: non-float tensors: {', '.join(not_float)}")
    params = {k: state[k].to(torch.float32).contiguous() for k in PARAM_NAMES}
    _check_values(params, where)

    if bandwidth is None:
        meta = cfg.get("metadata")
        ours = meta.get("alignlab") if isinstance(meta, dict) else None
        recorded = ours.get("bandwidth") if isinstance(ours, dict) else None
        ok = isinstance(recorded, int | float) and math.isfinite(recorded) and recorded > 0
        bandwidth = float(recorded) if ok else 1e-3

    if scale != 1.0:
        # SAELens' fold_activation_norm_scaling_factor(s): the SAE then takes raw inputs.
        params["W_enc"] = params["W_enc"] * scale
        params["W_dec"] = params["W_dec"] / scale
        params["b_dec"] = params["b_dec"] / scale
    sae = _build(params, bandwidth)
    apply_b_dec = cfg.get("apply_b_dec_to_input", True)  # SAELens' default when absent
    if not isinstance(apply_b_dec, bool):
        raise AlignlabError(
            f"{where}: apply_b_dec_to_input must be true or false, got {apply_b_dec!r}"
        )
    if apply_b_dec:
        sae.apply_b_dec_to_input = True
        sae = sae.folded()  # App. A with C = 1: b_enc′ = b_enc − W_encᵀ b_dec
    return sae
