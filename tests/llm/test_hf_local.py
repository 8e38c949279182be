"""alignlab.llm.hf_local: our tiny Gemma 2 saved as a Hugging Face folder and read back through
transformers gives the replies and logprobs `LocalChatModel` gives for the same model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alignlab.core.errors import AlignlabError
from alignlab.gemma2.config import Gemma2Config
from alignlab.gemma2.hf import save_pretrained
from alignlab.gemma2.model import Gemma2ForCausalLM
from alignlab.llm import ChatModel, HFLocal, LocalChatModel, OpenAICompatible, serve
from alignlab.llm.hf_local import PASS_THROUGH_TEMPLATE, save_chat_tokenizer
from alignlab.model_combos.chains import VOCAB, build_tokenizer

pytest.importorskip("transformers")  # the [hf] extra, installed by `make test`

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPTS = [
    "X 1 2 3 4 O rev inc rot plant_2 A",
    "X 7 O neg A",
    "R X 5 5 0 9 1 O rot rot A",
    "X 3 1 4 1 5 9 2 6 O cum srt dbl swp inc plant_0 A",
]
CONVS = [[{"role": "user", "content": p}] for p in PROMPTS]


class LastUserFormat:
    """The `ChatFormat` of `PASS_THROUGH_TEMPLATE`: <bos>, then the last message's words."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def encode(self, messages, add_generation_prompt=True):
        return [self.tokenizer.bos_id] + self.tokenizer.encode(messages[-1]["content"])

    def encode_reply(self, reply):
        return self.tokenizer.encode(reply) + [self.tokenizer.eos_id]

    def stop_ids(self):
        return [self.tokenizer.eos_id]


def tiny_gemma2(seed: int = 0) -> Gemma2ForCausalLM:
    torch.manual_seed(seed)
    cfg = Gemma2Config(
        vocab_size=len(VOCAB),
        d_model=32,
        intermediate_size=64,
        num_layers=2,
        num_heads=2,
        num_kv_heads=2,
        head_dim=16,
        query_pre_attn_scalar=16,
        sliding_window=64,
        max_position_embeddings=64,
        attn_impl="eager",
    )
    return Gemma2ForCausalLM(cfg).eval()


def save_tiny_hf_folder(folder: Path, seed: int = 0) -> tuple[Gemma2ForCausalLM, object]:
    """Our tiny Gemma 2 and the chain tokenizer, saved as a Hugging Face model folder."""
    model, tokenizer = tiny_gemma2(seed), build_tokenizer()
    save_pretrained(model, folder)
    save_chat_tokenizer(tokenizer, folder)
    return model, tokenizer


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-hf")
    model, tokenizer = save_tiny_hf_folder(folder)
    return folder, model, tokenizer


@pytest.fixture(scope="module")
def hf(saved):
    return HFLocal(saved[0], name="tiny-hf", batch_size=3)


@pytest.fixture(scope="module")
def local(saved):
    _, model, tokenizer = saved
    return LocalChatModel(model, tokenizer, format=LastUserFormat(tokenizer), name="tiny")


def test_the_saved_tokenizer_loads_in_transformers(saved):
    import transformers

    folder, _, tokenizer = saved
    auto = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    assert (auto.pad_token_id, auto.eos_token_id, auto.bos_token_id) == (0, 1, 2)
    assert auto.unk_token_id == 3 and auto.padding_side == "left"
    text = auto.apply_chat_template(CONVS[0], add_generation_prompt=True, tokenize=False)
    assert text == "<bos>" + PROMPTS[0]
    ids = auto(text, add_special_tokens=False)["input_ids"]
    assert ids == [tokenizer.bos_id] + tokenizer.encode(PROMPTS[0])  # one bos, not two
    assert auto.decode(ids, skip_special_tokens=True) == PROMPTS[0]  # single spaces
    assert auto.decode(tokenizer.encode("3 4 ! 5 2")) == "3 4 ! 5 2"  # no space clean-up
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config["chat_template"] == PASS_THROUGH_TEMPLATE
    assert not list(folder.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_greedy_replies_equal_local_chat_model(hf, local):
    assert isinstance(hf, ChatModel)
    expected = local.chat(CONVS, max_tokens=12, temperature=0)
    assert hf.chat(CONVS, max_tokens=12, temperature=0) == expected  # batches of 3 and 1
    assert [hf.chat([c], max_tokens=12, temperature=0)[0] for c in CONVS] == expected
    assert all(r.split() and set(r.split()) <= set(VOCAB) for r in expected)
    assert hf.chat([], max_tokens=3) == []


def test_replies_end_before_the_first_stop_token(hf, monkeypatch):
    monkeypatch.setattr(hf, "stop_ids", list(range(len(VOCAB))))  # every token ends a reply
    assert hf.chat(CONVS, max_tokens=4, temperature=0) == [""] * len(CONVS)


def test_top_logprobs_equal_local_chat_model(hf, local):
    full = len(VOCAB)
    for a, b in zip(hf.top_logprobs(CONVS, top=full), local.top_logprobs(CONVS, top=full)):
        assert set(a) == set(b) and len(a) == full
        for token in a:
            assert a[token] == pytest.approx(b[token], abs=1e-4)
    top5 = hf.top_logprobs(CONVS, top=5)
    assert all(len(t) == 5 and list(t.values()) == sorted(t.values(), reverse=True) for t in top5)


def test_sampling_is_deterministic_for_a_seed_and_keeps_global_rng(hf):
    before = torch.random.get_rng_state()
    a = hf.chat(CONVS, max_tokens=10, temperature=1.0, seed=7)
    assert torch.equal(torch.random.get_rng_state(), before)  # fork_rng: caller's state kept
    assert a == hf.chat(CONVS, max_tokens=10, temperature=1.0, seed=7)
    assert a != hf.chat(CONVS, max_tokens=10, temperature=1.0, seed=8)


def test_sampling_ignores_the_folders_sampling_defaults(saved, tmp_path):
    folder = tmp_path / "greedy-defaults"
    save_tiny_hf_folder(folder)
    # a generation_config.json asking for top-k 1 would make every sample the greedy reply
    (folder / "generation_config.json").write_text(
        json.dumps({"do_sample": True, "top_k": 1, "eos_token_id": 1, "pad_token_id": 0})
    )
    model = HFLocal(folder)
    greedy = model.chat(CONVS, max_tokens=8, temperature=0)
    sampled = [model.chat(CONVS, max_tokens=8, temperature=1.0, seed=s) for s in range(2)]
    assert all(s != greedy for s in sampled)


def test_a_template_refusing_system_messages_gets_them_folded(tmp_path):
    folder = tmp_path / "no-system"
    model, tokenizer = tiny_gemma2(), build_tokenizer()
    save_pretrained(model, folder)
    refuse = (
        "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
        "{{ m['content'] }} {% endfor %}"
    )  # as Gemma's template does
    save_chat_tokenizer(tokenizer, folder, chat_template=refuse)
    hf = HFLocal(folder)
    system = {"role": "system", "content": "R"}
    user = {"role": "user", "content": "X 1 2 O rev A"}
    assert hf.encode([system, user]) == hf.encode(
        [{"role": "user", "content": "R\n\nX 1 2 O rev A"}]
    )
    assert hf.encode([user]) == [tokenizer.bos_id] + tokenizer.encode(user["content"])


def test_replies_through_the_server_equal_direct_replies(hf):
    with serve({"tiny-hf": hf}) as server:
        remote = OpenAICompatible("tiny-hf", base_url=server.url, role="weak", max_retries=0)
        direct = [hf.chat([c], max_tokens=6, temperature=0)[0] for c in CONVS]
        assert remote.chat(CONVS, max_tokens=6, temperature=0) == direct
    prompt, completion = hf.usage(CONVS[0], ["1 2 3"])
    assert (prompt, completion) == (len(PROMPTS[0].split()) + 1, 4)


def test_bad_folders_are_one_clear_error(tmp_path, saved):
    missing = tmp_path / "nowhere"
    with pytest.raises(AlignlabError, match="no model folder at .*nowhere"):
        HFLocal(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AlignlabError, match=r"empty is not a Hugging Face model folder"):
        HFLocal(empty)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "gemma2"}')
    with pytest.raises(AlignlabError, match=r"cannot load the Hugging Face model folder .*broken"):
        HFLocal(broken)
    with pytest.raises(AlignlabError, match="batch_size must be an integer >= 1"):
        HFLocal(saved[0], batch_size=0)
    with pytest.raises(AlignlabError, match="dtype must be a torch dtype"):
        HFLocal(saved[0], dtype="float33")


def test_bad_inputs_are_one_clear_error(hf):
    with pytest.raises(AlignlabError, match=r"wrap it in a list"):
        hf.chat(CONVS[0], max_tokens=2)
    with pytest.raises(AlignlabError, match="max_tokens must be an integer >= 1"):
        hf.chat(CONVS, max_tokens=0)
    with pytest.raises(AlignlabError, match="top must be an integer >= 1"):
        hf.top_logprobs(CONVS, top=0)


def test_missing_transformers_says_how_to_install(saved, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # what `import` sees when absent
    with pytest.raises(AlignlabError, match=r"pip install 'alignlab\[hf\]'"):
        HFLocal(saved[0])


def test_importing_alignlab_llm_does_not_import_transformers():
    code = "import sys, alignlab.llm; print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
