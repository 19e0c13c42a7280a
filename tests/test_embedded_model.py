"""The embedded default model: loads with the plain transformers Auto classes, tokenizes the task
losslessly, and starts RL half-trained (solves a fair share of the built-in prompts, not all)."""
import json
import os

import pytest
import torch

from openrlhf_ext.datasets.prompts import builtin_prompts
from openrlhf_ext.models import embedded
from openrlhf_ext.models.embedded import MODEL_FILES, build_embedded_model, embedded_model_path, greedy_accuracy


@pytest.fixture(scope="module")
def path():
    return embedded_model_path()


@pytest.fixture(scope="module")
def tok(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="module")
def model(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path).eval()


def test_shipped_folder_is_complete_and_small(path):
    assert path == embedded.ASSET_DIR  # shipped in the package, not rebuilt
    sizes = {f: os.path.getsize(os.path.join(path, f)) for f in MODEL_FILES}
    assert sum(sizes.values()) < 4 * 2**20, sizes  # "a few MB at most"


def test_tokenizer_round_trips_the_task_text(tok):
    from transformers import PreTrainedTokenizerFast

    assert isinstance(tok, PreTrainedTokenizerFast)
    texts = [p["prompt"] + p["label"] for p in builtin_prompts(200, seed=5)] + ["  spaces\tand\nnewlines  ", "x = (3*4)/2"]
    for text in texts:
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert ids == tok.encode(text, add_special_tokens=False)  # vLLM and the trainer see the same ids
    # one token per character: digits are never merged, so "12" is "1","2" everywhere
    assert tok.convert_ids_to_tokens(tok.encode("12+7=")) == ["1", "2", "+", "7", "="]
    assert tok.decode(tok.encode("19") + [tok.eos_token_id], skip_special_tokens=True) == "19"


def test_tokenizer_config_is_portable(path, tok):
    # the class named in the file is one that transformers 4 and 5 (and so vLLM) both resolve,
    # and a Llama config does not make AutoTokenizer swap our pre-tokenizer for another one
    with open(os.path.join(path, "tokenizer_config.json")) as f:
        assert json.load(f)["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert tok.apply_chat_template([{"role": "user", "content": "3+4="}], tokenize=False, add_generation_prompt=True) == "3+4="


def test_model_config_and_generation_config(path, model):
    assert model.config.model_type == "llama"
    assert not model.config.tie_word_embeddings  # a weight sync never meets the tied lm_head trap
    with open(os.path.join(path, "generation_config.json")) as f:
        gen = json.load(f)
    assert (gen["eos_token_id"], gen["pad_token_id"]) == (2, 0)


def test_warm_up_solves_a_fair_share_but_not_all(model, tok):
    # prompts the trainer will see (builtin set, default seed), greedy as a rollout's best case
    acc = greedy_accuracy(model, tok, builtin_prompts(300, seed=42))
    assert 0.15 <= acc <= 0.75, acc


def test_sampled_responses_end_with_eos(model, tok):
    # the warm-up taught "<answer></s>": sampled responses stop well before a 16-token budget
    enc = tok([p["prompt"] for p in builtin_prompts(32, seed=1)], return_tensors="pt", padding=True)
    torch.manual_seed(0)
    out = model.generate(**enc, do_sample=True, temperature=1.0, max_new_tokens=16, pad_token_id=0, eos_token_id=2)
    responses = out[:, enc["input_ids"].shape[1]:]
    ended = (responses == tok.eos_token_id).any(dim=1).float().mean().item()
    assert ended >= 0.9, ended


def test_build_writes_a_loadable_folder(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "m"
    info = build_embedded_model(str(out), seed=3, max_steps=3, progress=False)
    assert info["steps"] == 3 and info["seed"] == 3
    assert sorted(os.listdir(out)) == sorted(list(MODEL_FILES) + ["warmup.json"])
    AutoModelForCausalLM.from_pretrained(str(out))
    assert AutoTokenizer.from_pretrained(str(out)).decode([21, 22]) == "12"
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tiny-arith-")]  # no temp dir left


def test_missing_model_is_built_on_first_use(tmp_path, monkeypatch):
    # a package folder without the shipped copy: embedded_model_path builds it in place
    target = tmp_path / "pkg" / "assets" / "tiny-arith"
    monkeypatch.setattr(embedded, "ASSET_DIR", str(target))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    real = embedded.build_embedded_model
    monkeypatch.setattr(embedded, "build_embedded_model", lambda out: real(out, max_steps=2, progress=False))
    assert embedded_model_path() == str(target)
    assert all((target / f).is_file() for f in MODEL_FILES)
