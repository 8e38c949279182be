"""Gemma Scope `params.npz` and SAELens folder formats (alignlab.gemmascope.formats).

No SAELens needed: the SAELens-side checks are in test_saelens_anchor.py."""

from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from alignlab.core.errors import AlignlabError
from alignlab.gemmascope.formats import hub_path, load_npz, load_saelens, save_npz, save_saelens
from alignlab.gemmascope.sae import PARAM_NAMES, JumpReLUSAE

HOOK = "blocks.3.hook_resid_post"


def random_sae(
    d_in=12, d_sae=40, *, seed=0, apply_b_dec_to_input=False, input_scale=1.0
) -> JumpReLUSAE:
    """Random parameters (not the init), thresholds positive."""
    g = torch.Generator().manual_seed(seed)
    sae = JumpReLUSAE(
        d_in,
        d_sae,
        apply_b_dec_to_input=apply_b_dec_to_input,
        input_scale=input_scale,
        generator=g,
    )
    with torch.no_grad():
        sae.W_enc.normal_(generator=g).mul_(d_in**-0.5)
        sae.W_dec.normal_(generator=g).mul_(d_sae**-0.5)
        sae.b_enc.normal_(generator=g).mul_(0.1)
        sae.b_dec.normal_(generator=g).mul_(0.3)
        sae.threshold.uniform_(0.05, 0.5, generator=g)
    return sae


def inputs(d_in=12, n=256, seed=1, scale=1.0) -> torch.Tensor:
    return torch.randn(n, d_in, generator=torch.Generator().manual_seed(seed)) * scale


def params_of(sae: JumpReLUSAE) -> dict[str, torch.Tensor]:
    return {k: getattr(sae, k).detach().clone() for k in PARAM_NAMES}


def assert_same_params(a: JumpReLUSAE, b: JumpReLUSAE) -> None:
    for k in PARAM_NAMES:
        assert torch.equal(getattr(a, k), getattr(b, k)), k


def write_npz(path, arrays) -> None:
    np.savez(path, **arrays)


def listing(folder) -> list[str]:
    return sorted(os.listdir(folder))


# ---------------------------------------------------------------------------------------
# params.npz


def test_hub_path_layout():
    assert hub_path(12, 16384, 82) == "layer_12/width_16k/average_l0_82/params.npz"
    assert hub_path(5, 1048576, 41) == "layer_5/width_1m/average_l0_41/params.npz"
    assert hub_path(0, 1000, 7) == "layer_0/width_1000/average_l0_7/params.npz"


def test_npz_round_trip_exact(tmp_path):
    sae = random_sae()
    path = tmp_path / "layer_3" / "width_40" / "average_l0_5" / "params.npz"
    save_npz(sae, path)
    with np.load(path, allow_pickle=False) as data:
        assert sorted(data.files) == sorted(PARAM_NAMES)
        for k in PARAM_NAMES:
            assert data[k].dtype == np.float32
            assert np.array_equal(data[k], getattr(sae, k).detach().numpy()), k
    back = load_npz(path)
    assert_same_params(back, sae)
    assert back.input_scale == 1.0 and back.apply_b_dec_to_input is False
    x = inputs()
    with torch.no_grad():
        assert torch.equal(back.encode(x), sae.encode(x))
        assert torch.equal(back(x), sae(x))
    assert listing(path.parent) == ["params.npz"]  # no temporary files left


def test_npz_saves_the_folded_release_form(tmp_path):
    """A training-form SAE (C ≠ 1, pre-encoder bias) is written folded (App. A)."""
    sae = random_sae(apply_b_dec_to_input=True, input_scale=3.7)
    save_npz(sae, tmp_path / "params.npz")
    back = load_npz(tmp_path / "params.npz")
    release = sae.release_params()
    for k in PARAM_NAMES:
        assert torch.equal(getattr(back, k), release[k]), k
    x = inputs(scale=3.7)
    with torch.no_grad():
        f_ref, f = sae.encode(x), back.encode(x)
        assert torch.equal(f_ref != 0, f != 0)
        torch.testing.assert_close(f, f_ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(back(x), sae(x), rtol=1e-5, atol=1e-5)


def test_npz_load_accepts_float64(tmp_path):
    sae = random_sae()
    arrays = {k: v.double().numpy() for k, v in params_of(sae).items()}
    write_npz(tmp_path / "params.npz", arrays)
    assert_same_params(load_npz(tmp_path / "params.npz"), sae)


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda a: a.pop("threshold"), ["missing", "threshold"]),
        (
            lambda a: a.update(log_threshold=np.zeros(40, np.float32)),
            ["unexpected", "log_threshold"],
        ),
        (lambda a: a.update(b_dec=np.zeros(13, np.float32)), ["b_dec", "(13,)", "(12,)"]),
        (
            lambda a: a.update(W_dec=np.zeros((12, 40), np.float32)),
            ["W_dec", "(12, 40)", "(40, 12)"],
        ),
        (lambda a: a.update(W_enc=np.zeros(12, np.float32)), ["W_enc", "2-D"]),
        (lambda a: a.update(b_enc=np.zeros(40, np.int32)), ["non-float", "b_enc"]),
        (lambda a: a["threshold"].__setitem__(3, np.nan), ["non-finite", "threshold"]),
        (lambda a: a["threshold"].__setitem__(3, -0.1), ["negative thresholds"]),
    ],
)
def test_npz_load_rejects_bad_files_clearly(tmp_path, change, words):
    arrays = {k: v.numpy().copy() for k, v in params_of(random_sae()).items()}
    change(arrays)
    path = tmp_path / "params.npz"
    write_npz(path, arrays)
    with pytest.raises(AlignlabError) as e:
        load_npz(path)
    msg = str(e.value)
    assert str(path) in msg
    for w in words:
        assert w in msg, (w, msg)


def test_npz_missing_and_extra_named_together(tmp_path):
    arrays = {k: v.numpy() for k, v in params_of(random_sae()).items()}
    del arrays["b_enc"], arrays["W_dec"]
    arrays["scaling_factor"] = np.ones(1, np.float32)
    write_npz(tmp_path / "p.npz", arrays)
    with pytest.raises(AlignlabError, match=r"missing keys \['W_dec', 'b_enc'\].*'scaling_factor'"):
        load_npz(tmp_path / "p.npz")


def test_npz_load_refuses_pickles_and_garbage(tmp_path):
    arrays = {k: v.numpy() for k, v in params_of(random_sae()).items()}
    arrays["threshold"] = np.array([object()] * 40, dtype=object)
    np.savez(tmp_path / "pickled.npz", **arrays)
    with pytest.raises(AlignlabError, match="pickled.npz"):
        load_npz(tmp_path / "pickled.npz")
    (tmp_path / "garbage.npz").write_bytes(b"not a zip file")
    with pytest.raises(AlignlabError, match="garbage.npz"):
        load_npz(tmp_path / "garbage.npz")
    np.save(tmp_path / "single.npy", np.zeros(3, np.float32))
    with pytest.raises(AlignlabError, match="single array"):
        load_npz(tmp_path / "single.npy")
    with pytest.raises(AlignlabError, match="no such file"):
        load_npz(tmp_path / "absent.npz")


def test_npz_failed_save_leaves_nothing(tmp_path, monkeypatch):
    path = tmp_path / "params.npz"
    bad = random_sae()
    with torch.no_grad():
        bad.b_dec[0] = float("nan")
    with pytest.raises(AlignlabError, match="non-finite"):
        save_npz(bad, path)
    assert listing(tmp_path) == []

    # a failure in the middle of the write (after the temporary file exists)
    import alignlab.core.io as core_io

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(core_io.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        save_npz(random_sae(), path)
    assert listing(tmp_path) == []

    # an existing file is left untouched by a failed save
    monkeypatch.undo()
    save_npz(random_sae(seed=5), path)
    before = path.read_bytes()
    monkeypatch.setattr(core_io.os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        save_npz(random_sae(seed=6), path)
    assert path.read_bytes() == before
    assert listing(tmp_path) == ["params.npz"]


def test_npz_file_is_a_plain_uncompressed_npz(tmp_path):
    save_npz(random_sae(), tmp_path / "params.npz")
    with zipfile.ZipFile(tmp_path / "params.npz") as z:
        names = sorted(z.namelist())
        assert names == sorted(f"{k}.npy" for k in PARAM_NAMES)
        assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())


# ---------------------------------------------------------------------------------------
# SAELens folders


def test_saelens_round_trip_exact(tmp_path):
    sae = random_sae(seed=3)
    folder = save_saelens(sae, tmp_path / "sae", hook_name=HOOK, extra_metadata={"note": "x"})
    assert listing(folder) == ["cfg.json", "sae_weights.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["sae"]  # no temporary siblings
    cfg = json.loads((folder / "cfg.json").read_text())
    assert cfg["architecture"] == "jumprelu"
    assert (cfg["d_in"], cfg["d_sae"], cfg["dtype"]) == (12, 40, "float32")
    assert cfg["apply_b_dec_to_input"] is False
    assert cfg["normalize_activations"] == "none"
    assert cfg["reshape_activations"] == "none"
    meta = cfg["metadata"]
    assert meta["hook_name"] == HOOK and meta["model_name"] == "alignlab-gemma2"
    assert meta["note"] == "x"
    assert int(meta["sae_lens_version"].split(".")[0]) >= 6
    back = load_saelens(folder)
    assert_same_params(back, sae)
    assert back.bandwidth == sae.bandwidth
    x = inputs()
    with torch.no_grad():
        assert torch.equal(back.encode(x), sae.encode(x))
        assert torch.equal(back(x), sae(x))


def test_saelens_export_is_folded_and_hook_z_reshapes(tmp_path):
    sae = random_sae(apply_b_dec_to_input=True, input_scale=2.5)
    folder = save_saelens(sae, tmp_path / "att", hook_name="blocks.1.attn.hook_z")
    cfg = json.loads((folder / "cfg.json").read_text())
    assert cfg["reshape_activations"] == "hook_z"
    back = load_saelens(folder)
    release = sae.release_params()
    for k in PARAM_NAMES:
        assert torch.equal(getattr(back, k), release[k]), k
    assert back.bandwidth == pytest.approx(sae.bandwidth * 2.5)


def test_saelens_overwrite_rules(tmp_path):
    folder = tmp_path / "sae"
    save_saelens(random_sae(seed=1), folder, hook_name=HOOK)
    save_saelens(random_sae(seed=2), folder, hook_name=HOOK)  # replaces our own files
    assert_same_params(load_saelens(folder), random_sae(seed=2))
    assert listing(tmp_path) == ["sae"]
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(AlignlabError, match="notes.txt"):
        save_saelens(random_sae(seed=3), folder, hook_name=HOOK)
    assert (folder / "notes.txt").read_text() == "mine"
    assert_same_params(load_saelens(folder), random_sae(seed=2))
    (tmp_path / "file").write_text("")
    with pytest.raises(AlignlabError, match="not a folder"):
        save_saelens(random_sae(), tmp_path / "file", hook_name=HOOK)
    with pytest.raises(AlignlabError, match="hook_name"):
        save_saelens(random_sae(), tmp_path / "x", hook_name="")
    with pytest.raises(AlignlabError, match="JSON"):
        save_saelens(random_sae(), tmp_path / "x", hook_name=HOOK, extra_metadata={"a": object()})
    assert sorted(listing(tmp_path)) == ["file", "sae"]


def test_saelens_failed_save_leaves_nothing(tmp_path, monkeypatch):
    # a failure in the middle of the write (after the files exist in the temporary folder)
    import alignlab.core.io as core_io

    synced = []

    def broken_fsync(fd):
        synced.append(fd)
        raise OSError("disk full")

    monkeypatch.setattr(core_io.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        save_saelens(random_sae(), tmp_path / "sae", hook_name=HOOK)
    assert synced and listing(tmp_path) == []

    # an existing folder is left untouched by a failed save
    monkeypatch.undo()
    save_saelens(random_sae(seed=8), tmp_path / "sae", hook_name=HOOK)
    before = {p: (tmp_path / "sae" / p).read_bytes() for p in listing(tmp_path / "sae")}
    monkeypatch.setattr(core_io.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        save_saelens(random_sae(seed=9), tmp_path / "sae", hook_name=HOOK)
    assert listing(tmp_path) == ["sae"]
    assert {p: (tmp_path / "sae" / p).read_bytes() for p in listing(tmp_path / "sae")} == before


def write_saelens_folder(folder, tensors, cfg, scaler=None) -> None:
    """A SAELens-style folder written by hand (the layout SAE.save_model produces)."""
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, folder / "sae_weights.safetensors")
    (folder / "cfg.json").write_text(json.dumps(cfg))
    if scaler is not None:
        (folder / "activation_scaler.json").write_text(json.dumps(scaler))


def saelens_cfg(d_in, d_sae, **kw):
    cfg = {
        "d_in": d_in,
        "d_sae": d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {
            "sae_lens_version": "6.54.12",
            "sae_lens_training_version": "6.54.12",
            "hook_name": HOOK,
        },
        "architecture": "jumprelu",
    }
    cfg.update(kw)
    return cfg


def hand_sae(x: torch.Tensor, p: dict[str, torch.Tensor], apply_b_dec: bool, scale: float = 1.0):
    """SAELens' JumpReLUSAE by hand in float64: z = (x·s − b_dec·[apply]) W_enc + b_enc,
    f = relu(z)·1[z > θ], x̂ = (f W_dec + b_dec) / s."""
    q = {k: v.double() for k, v in p.items()}
    xs = x.double() * scale
    z = (xs - q["b_dec"] * apply_b_dec) @ q["W_enc"] + q["b_enc"]
    f = torch.relu(z) * (z > q["threshold"])
    return f, (f @ q["W_dec"] + q["b_dec"]) / scale, z


def check_against_hand(sae: JumpReLUSAE, p, apply_b_dec, scale=1.0):
    x = inputs(d_in=p["W_enc"].shape[0], n=512, seed=7, scale=1 / scale)
    f_ref, x_hat_ref, z = hand_sae(x, p, apply_b_dec, scale)
    # no pre-activation within float32 rounding of its threshold, so the masks must agree
    assert float((z - p["threshold"].double()).abs().min()) > 1e-5
    with torch.no_grad():
        f = sae.encode(x)
        assert torch.equal(f != 0, f_ref != 0)
        # the reference latents are in the SAE's training units; ours take raw inputs, and
        # SAELens' fold keeps the latents in those same units
        torch.testing.assert_close(f.double(), f_ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(sae.decode(f).double(), x_hat_ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(sae(x).double(), x_hat_ref, rtol=1e-5, atol=1e-5)


def test_hand_written_saelens_folder_with_pre_encoder_bias(tmp_path):
    sae = random_sae(d_in=10, d_sae=30, seed=11)
    p = params_of(sae)
    write_saelens_folder(tmp_path / "sl", p, saelens_cfg(10, 30))
    loaded = load_saelens(tmp_path / "sl")
    assert loaded.apply_b_dec_to_input is False and loaded.input_scale == 1.0
    assert (loaded.d_in, loaded.d_sae) == (10, 30)
    assert loaded.bandwidth == 1e-3  # SAELens does not store ε for inference SAEs
    # the fold: b_enc' = b_enc − W_encᵀ b_dec, everything else unchanged
    for k in ("W_enc", "W_dec", "b_dec", "threshold"):
        assert torch.equal(getattr(loaded, k), p[k]), k
    b_enc_ref = p["b_enc"].double() - p["b_dec"].double() @ p["W_enc"].double()
    torch.testing.assert_close(loaded.b_enc.double(), b_enc_ref, rtol=0, atol=1e-6)
    check_against_hand(loaded, p, apply_b_dec=True)


def test_hand_written_saelens_folder_variants(tmp_path):
    sae = random_sae(d_in=10, d_sae=30, seed=12)
    p = params_of(sae)
    # apply_b_dec_to_input false, legacy null normalisation, bfloat16 weights
    p16 = {k: v.to(torch.bfloat16) for k, v in p.items()}
    cfg = saelens_cfg(
        10, 30, apply_b_dec_to_input=False, normalize_activations=None, dtype="bfloat16"
    )
    write_saelens_folder(tmp_path / "a", p16, cfg)
    a = load_saelens(tmp_path / "a")
    for k in PARAM_NAMES:
        assert torch.equal(getattr(a, k), p16[k].float()), k
    # apply_b_dec_to_input absent (SAELens' default: true), log_threshold, unit scaling_factor
    cfg = saelens_cfg(10, 30)
    del cfg["apply_b_dec_to_input"]
    q = dict(p, log_threshold=torch.log(p["threshold"]), scaling_factor=torch.ones(30))
    del q["threshold"]
    write_saelens_folder(tmp_path / "b", q, cfg)
    b = load_saelens(tmp_path / "b", bandwidth=0.01)
    assert b.bandwidth == 0.01
    assert torch.equal(b.threshold, torch.exp(q["log_threshold"]))
    check_against_hand(b, dict(p, threshold=torch.exp(q["log_threshold"])), apply_b_dec=True)


def test_saelens_checkpoint_with_unfolded_norm_scaling(tmp_path):
    """A trainer checkpoint: normalize_activations 'expected_average_only_in' plus the
    activation_scaler.json SAELens writes next to it; the scale s is folded in."""
    sae = random_sae(d_in=10, d_sae=30, seed=13)
    p = params_of(sae)
    s = 0.37
    cfg = saelens_cfg(10, 30, normalize_activations="expected_average_only_in")
    write_saelens_folder(
        tmp_path / "ckpt", p, cfg, scaler={"scaling_factor": s, "has_whitening": False}
    )
    loaded = load_saelens(tmp_path / "ckpt")
    check_against_hand(loaded, p, apply_b_dec=True, scale=s)
    write_saelens_folder(tmp_path / "no_scaler", p, cfg)
    with pytest.raises(AlignlabError, match="activation_scaler.json"):
        load_saelens(tmp_path / "no_scaler")


@pytest.mark.parametrize(
    "cfg_change, tensor_change, words",
    [
        ({"architecture": "standard"}, None, ["'standard'", "only 'jumprelu'"]),
        ({"architecture": "topk"}, None, ["'topk'"]),
        ({"architecture": None}, None, ["none given"]),
        ({"normalize_activations": "layer_norm"}, None, ["'layer_norm'", "runtime"]),
        ({"d_sae": 31}, None, ["d_sae=31", "30"]),
        ({"apply_b_dec_to_input": "yes"}, None, ["apply_b_dec_to_input"]),
        ({}, lambda t: t.pop("b_enc"), ["missing keys ['b_enc']"]),
        ({}, lambda t: t.update(extra=torch.zeros(3)), ["unexpected keys ['extra']"]),
        ({}, lambda t: t.update(W_enc=torch.zeros(10, 31)), ["inconsistent shapes"]),
        ({}, lambda t: t.update(scaling_factor=torch.full((30,), 2.0)), ["scaling_factor"]),
        ({}, lambda t: t["threshold"].__setitem__(0, -1.0), ["negative thresholds"]),
    ],
)
def test_load_saelens_refuses_clearly(tmp_path, cfg_change, tensor_change, words):
    tensors = params_of(random_sae(d_in=10, d_sae=30))
    if tensor_change is not None:
        tensor_change(tensors)
    cfg = saelens_cfg(10, 30)
    cfg.update(cfg_change)
    if cfg.get("architecture") is None:
        cfg.pop("architecture")
    write_saelens_folder(tmp_path / "sl", tensors, cfg)
    with pytest.raises(AlignlabError) as e:
        load_saelens(tmp_path / "sl")
    msg = str(e.value)
    assert "sl" in msg
    for w in words:
        assert w in msg, (w, msg)


def test_load_saelens_missing_or_broken_files(tmp_path):
    with pytest.raises(AlignlabError, match="missing cfg.json, sae_weights.safetensors"):
        load_saelens(tmp_path)
    write_saelens_folder(tmp_path / "sl", params_of(random_sae()), saelens_cfg(12, 40))
    (tmp_path / "sl" / "cfg.json").write_text("{not json")
    with pytest.raises(AlignlabError, match="unreadable cfg.json"):
        load_saelens(tmp_path / "sl")
    (tmp_path / "sl" / "cfg.json").write_text(json.dumps(saelens_cfg(12, 40)))
    (tmp_path / "sl" / "sae_weights.safetensors").write_bytes(b"\x00" * 7)
    with pytest.raises(AlignlabError, match="unreadable sae_weights.safetensors"):
        load_saelens(tmp_path / "sl")


def test_npz_and_saelens_agree(tmp_path):
    sae = random_sae(apply_b_dec_to_input=True, input_scale=1.9, seed=21)
    save_npz(sae, tmp_path / "params.npz")
    save_saelens(sae, tmp_path / "sl", hook_name=HOOK)
    assert_same_params(load_npz(tmp_path / "params.npz"), load_saelens(tmp_path / "sl"))
    buf = io.BytesIO((tmp_path / "params.npz").read_bytes())
    with np.load(buf, allow_pickle=False) as data:
        assert sorted(data.files) == sorted(PARAM_NAMES)
