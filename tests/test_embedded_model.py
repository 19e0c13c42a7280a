"""The embedded default model: loads with the plain transformers Auto classes, tokenizes the task
losslessly, and starts RL half-trained: it writes worked solutions, about half of them right, and
is unsure exactly at their decisions."""
import hashlib
import json
import os

import pytest
import torch

from openrlhf_ext.datasets.column_addition import id_roles, operands, worked_solution
from openrlhf_ext.datasets.prompts import builtin_prompts
from openrlhf_ext.models import embedded
from openrlhf_ext.models.embedded import MODEL_FILES, build_embedded_model, embedded_model_path, solve_rate
from openrlhf_ext.trajectory import high_entropy_mask, token_entropy


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
    texts = [p["prompt"] + worked_solution(*operands(p["prompt"])) for p in builtin_prompts(200, seed=5)]
    texts += ["  spaces\tand\nnewlines  ", "x = (3*4)/2"]
    for text in texts:
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert ids == tok.encode(text, add_special_tokens=False)  # vLLM and the trainer see the same ids
    # one token per character: digits are never merged, so "12" is "1","2" everywhere
    assert tok.convert_ids_to_tokens(tok.encode("12+7=")) == ["1", "2", "+", "7", "="]
    assert tok.decode(tok.encode("\\boxed{19}") + [tok.eos_token_id], skip_special_tokens=True) == "\\boxed{19}"


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


def test_warm_up_solves_about_half_when_sampled(model, tok):
    # the trainer's prompts (builtin set, default seed), sampled at temperature 1 as in a rollout:
    # RL starts about half right; greedy decoding, the policy's best guess, is right far more often
    prompts = builtin_prompts(256, seed=42)
    sampled = solve_rate(model, tok, prompts, temperature=1.0, seed=0)
    assert 0.35 <= sampled <= 0.65, sampled
    assert solve_rate(model, tok, prompts[:64], temperature=0.0) >= 0.8


@pytest.fixture(scope="module")
def rollout(model, tok):
    """256 sampled solutions (32 prompts x 8, temperature 1) with each token's entropy, computed as
    the trainer does: one forward over prompt + response, `token_entropy` at the sampling temperature."""
    prompts = [p["prompt"] for p in builtin_prompts(32, seed=1) for _ in range(8)]
    enc = tok(prompts, return_tensors="pt", padding=True, padding_side="left")
    torch.manual_seed(0)
    with torch.no_grad():
        seqs = model.generate(**enc, do_sample=True, temperature=1.0, top_k=0, max_new_tokens=48,
                              pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        P = enc["input_ids"].shape[1]
        logits = model(seqs, attention_mask=(seqs != tok.pad_token_id).long()).logits[:, P - 1 : -1]
    responses = seqs[:, P:]  # (B, A)
    ended = (responses == tok.eos_token_id).cumsum(-1)
    mask = (ended == 0) | ((ended == 1) & (responses == tok.eos_token_id))  # (B, A) up to and with </s>
    return responses, mask, token_entropy(logits, temperature=1.0)  # (B, A) float32


def test_sampled_responses_are_worked_solutions(tok, rollout):
    responses, mask, _ = rollout
    lengths = mask.sum(-1).float()
    assert lengths.mean() >= 24, lengths.mean()  # intermediate steps before the answer
    assert (responses == tok.eos_token_id).any(-1).float().mean() >= 0.95  # they end, well inside 48 tokens
    roles = [id_roles(r[m].tolist(), tok) for r, m in zip(responses, mask)]
    on_grammar = sum("other" not in rs for rs in roles) / len(roles)
    assert on_grammar >= 0.9, on_grammar  # written in the solution's form, right or wrong


def test_high_entropy_tokens_sit_on_decisions(tok, rollout):
    # the saver's rule: the step's top 20% of response tokens by entropy
    responses, mask, entropy = rollout
    marks, _ = high_entropy_mask(entropy, mask, 0.2, scope="step")
    roles = [r for resp, m, hot in zip(responses, mask, marks)
             for r, h in zip(id_roles(resp[m].tolist(), tok), hot[m].tolist()) if h]
    share = {k: roles.count(k) / len(roles) for k in ("decision", "copy", "format", "end")}
    assert share["decision"] >= 0.8, share  # sum digits and carries
    assert share["format"] + share["end"] <= 0.05, share  # not fixed characters or the end token


def test_build_writes_a_loadable_folder(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "m"
    info = build_embedded_model(str(out), seed=3, steps=3, eval_size=4, progress=False)
    assert info["steps"] == 3 and info["seed"] == 3 and 0 <= info["sampled_solve_rate"] <= 1
    assert sorted(os.listdir(out)) == sorted(list(MODEL_FILES) + ["warmup.json"])
    AutoModelForCausalLM.from_pretrained(str(out))
    assert AutoTokenizer.from_pretrained(str(out)).decode([21, 22]) == "12"
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tiny-arith-")]  # no temp dir left
    # building again replaces the folder as a whole
    build_embedded_model(str(out), seed=4, steps=1, eval_size=4, progress=False)
    assert json.loads((out / "warmup.json").read_text())["seed"] == 4
    assert os.listdir(tmp_path) == ["m"]


def test_build_is_deterministic(tmp_path):
    # the same seed gives the same weights, bit for bit (one thread, seeded data and init)
    digests = []
    for name in ("a", "b"):
        build_embedded_model(str(tmp_path / name), seed=5, steps=4, eval_size=2, progress=False)
        digests.append(hashlib.sha256((tmp_path / name / "model.safetensors").read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_missing_model_is_built_on_first_use(tmp_path, monkeypatch):
    # a package folder without the shipped copy: embedded_model_path builds it in place
    target = tmp_path / "pkg" / "assets" / "tiny-arith"
    monkeypatch.setattr(embedded, "ASSET_DIR", str(target))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    real = embedded.build_embedded_model
    monkeypatch.setattr(embedded, "build_embedded_model",
                        lambda out: real(out, steps=2, eval_size=2, progress=False))
    assert embedded_model_path() == str(target)
    assert all((target / f).is_file() for f in MODEL_FILES)
