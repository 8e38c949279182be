"""The model's blocks: sizes, deterministic initialisation, the word-level tokenizer, errors."""

import pytest
import torch

from alignlab.core.config import ConfigError
from alignlab.core.resources import torch_threads
from alignlab.t2i.model import (
    PRESETS,
    ModelConfig,
    build_text_encoder,
    build_tokenizer,
    build_unet,
    build_vae,
    count_unk,
    n_params,
    tokenize,
)

VOCAB = ["a", "red", "blue", "circle", "square", "on", "white", "background", "left", "of"]


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):
        yield


def test_quick_sizes_and_latent_shape():
    cfg = ModelConfig()
    unet, vae = build_unet(cfg), build_vae(cfg)
    assert 0.95e6 < n_params(unet) < 1.05e6  # ~1.0M, as planned (measured 1,001,828)
    assert cfg.vae_factor == 4 and cfg.latent_res == 8
    with torch.no_grad():
        z = vae.encode(torch.zeros(2, 3, 32, 32)).latent_dist.mode()
        assert z.shape == (2, 4, 8, 8)
        assert vae.decode(z).sample.shape == (2, 3, 32, 32)
        text = build_text_encoder(cfg, 20)(torch.zeros(2, cfg.max_len, dtype=torch.long))[0]
        assert text.shape == (2, 48, 64)
        eps = build_unet(cfg)(z, torch.tensor([10, 900]), encoder_hidden_states=text).sample
    assert eps.shape == z.shape


def test_paper_preset_is_about_40m():
    cfg = PRESETS["paper"]
    assert cfg.latent_res == 16
    assert 38e6 < n_params(build_unet(cfg)) < 42e6  # measured 40,177,668


def test_initialisation_is_deterministic_and_leaves_global_rng_alone():
    cfg = PRESETS["smoke"]
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, b, c = build_unet(cfg, seed=1), build_unet(cfg, seed=1), build_unet(cfg, seed=2)
    assert torch.equal(torch.get_rng_state(), before)
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), k
    assert any(not torch.equal(x, z) for x, z in zip(a.parameters(), c.parameters()))


def test_tokenizer_round_trip_padding_and_unk(tmp_path):
    tok = build_tokenizer(VOCAB, max_len=12)
    assert tok.convert_ids_to_tokens([0, 1, 2, 3]) == ["<pad>", "<unk>", "<bos>", "<eos>"]
    assert len(tok) == 4 + len(VOCAB)
    ids = tokenize(tok, ["A Red circle, on WHITE background.", ""])
    assert ids.shape == (2, 12)
    words = tok.convert_ids_to_tokens(ids[0].tolist())
    assert words[:8] == ["<bos>", "a", "red", "circle", "on", "white", "background", "<eos>"]
    assert set(words[8:]) == {"<pad>"}
    assert ids[1, :2].tolist() == [2, 3] and set(ids[1, 2:].tolist()) == {0}
    assert tok.decode(ids[0], skip_special_tokens=True) == "a red circle on white background"
    # out-of-vocabulary words are <unk>, and counted
    assert count_unk(tok, ["a purple circle", "two green squares"]) == 4
    assert count_unk(tok, "a red circle") == 0
    # long captions are truncated to max_len, keeping <eos>
    long = tokenize(tok, [" ".join(["red"] * 30)])[0].tolist()
    assert len(long) == 12 and long[0] == 2 and long[-1] == 3
    # it saves and loads as a plain PreTrainedTokenizerFast
    from transformers import PreTrainedTokenizerFast

    tok.save_pretrained(tmp_path)
    again = PreTrainedTokenizerFast.from_pretrained(tmp_path)
    assert again.model_max_length == 12
    assert torch.equal(tokenize(again, ["a blue square left of a red circle"]),
                       tokenize(tok, ["a blue square left of a red circle"]))  # fmt: skip


def test_bad_configs_fail_with_clear_errors():
    with pytest.raises(
        ConfigError, match=r"res.*divisible by the VAE factor 4.*nearest valid: \[28, 32\]"
    ):
        build_vae(ModelConfig(res=30))
    with pytest.raises(ConfigError, match="text_hidden.*cross_attention_dim"):
        build_text_encoder(ModelConfig(text_hidden=32), 20)
    with pytest.raises(ConfigError, match="norm_groups"):
        build_unet(ModelConfig(unet_channels=(24, 64)))
    with pytest.raises(ValueError, match="vocab is empty"):
        build_tokenizer([])
    with pytest.raises(ValueError, match="single words"):
        build_tokenizer(["left of"])
