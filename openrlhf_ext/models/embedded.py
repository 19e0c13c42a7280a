"""The embedded default model: a tiny Llama that has half-learned the sums of numbers up to 19.

`python train_colocate.py` with no model flags trains this model, so a fresh CPU machine can run
the whole RL loop in minutes with nothing downloaded. It ships in the package at
``openrlhf_ext/assets/tiny-arith/`` (built by ``scripts/make_embedded_model.py``, ~2.2 MB); if that
folder is missing, `embedded_model_path` rebuilds it (a minute on 2 CPU cores, with a progress bar).

Why it looks the way it does:
- Tokenizer: one token per character (printable ASCII, newline, tab) plus ``<pad> <s> </s> <unk>``,
  built with the `tokenizers` library. Per-character digits mean no tokenization quirk can make the
  task harder than it is, and any ASCII text round-trips exactly. ``tokenizer_class`` is
  ``PreTrainedTokenizerFast`` so that `AutoTokenizer` (and vLLM, which calls it) keeps our
  ``tokenizer.json`` as is instead of re-imposing a model family's pre-tokenizer (the qwen2 trap).
  No special token is added on encode: ``encode(text) == encode(text, add_special_tokens=False)``,
  so vLLM, HF generate and the trainer all see the same ids.
- Model: ``LlamaConfig`` (head_dim 64, a size every attention backend supports; untied lm_head so a
  weight sync into vLLM never meets the tied-weight trap).
- Warm-up: supervised training on ``"a+b="`` -> ``"<sum></s>"`` until greedy accuracy on a held-out
  set first reaches ``target_accuracy`` (0.35 by default): rewards start above zero, and RL has
  room to raise them. Sampling at temperature 1 scores lower than greedy, so the early RL gain is
  mostly the policy sharpening onto answers it already ranks first.

Example:
    >>> from transformers import AutoModelForCausalLM, AutoTokenizer
    >>> path = embedded_model_path()
    >>> tok = AutoTokenizer.from_pretrained(path)
    >>> tok.decode(tok.encode("12+7=19"))
    '12+7=19'
    >>> model = AutoModelForCausalLM.from_pretrained(path)
"""
from __future__ import annotations

import json
import os
import random
import shutil
import tempfile

import torch

from openrlhf_ext.datasets.prompts import arithmetic_problem

ASSET_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "tiny-arith")
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
# Characters of the vocabulary after the 4 special tokens: printable ASCII, then newline and tab.
CHARS = [chr(c) for c in range(32, 127)] + ["\n", "\t"]
# Chat template: the conversation's text as is, so --apply_chat_template leaves the task unchanged.
CHAT_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}"


def build_tokenizer():
    """A character-level `PreTrainedTokenizerFast`: ids 0-3 are ``<pad> <s> </s> <unk>``.

    Example:
        >>> tok = build_tokenizer()
        >>> tok.encode("12+7=")
        [21, 22, 15, 27, 33]
        >>> tok.decode([21, 22, 15, 27, 33, tok.eos_token_id], skip_special_tokens=True)
        '12+7='
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate([PAD, BOS, EOS, UNK] + CHARS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    # Every single character is its own piece ([\s\S] also matches newlines, "." would not).
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()  # concatenate pieces: no spaces inserted between characters
    core.add_special_tokens([PAD, BOS, EOS, UNK])
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,
        model_max_length=256,
        padding_side="left",  # generation pads prompts on the left
        chat_template=CHAT_TEMPLATE,
    )


def build_config(vocab_size: int):
    """The tiny Llama: 2 layers, hidden 128, 2 heads of 64, MLP 512 (~0.55 M parameters).

    Small enough that 20 RL steps (8 prompts x 4 samples, 16 new tokens) take a couple of minutes
    on 2 CPU cores; ``max_position_embeddings`` 256 leaves room for a longer --generate_max_len.

    Example:
        >>> build_config(101).num_hidden_layers
        2
    """
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        architectures=["LlamaForCausalLM"],
        dtype="float32",
    )


def _encode_examples(tokenizer, problems: list[dict]):
    """Right-padded ``prompt + label + </s>`` batches; the loss covers the answer and ``</s>`` only."""
    ids = [tokenizer.encode(p["prompt"] + p["label"]) + [tokenizer.eos_token_id] for p in problems]
    n_prompt = [len(tokenizer.encode(p["prompt"])) for p in problems]
    width = max(map(len, ids))
    input_ids = torch.full((len(ids), width), tokenizer.pad_token_id)  # (B, S)
    labels = torch.full((len(ids), width), -100)  # (B, S) -100 = no loss (prompt and padding)
    for i, (row, k) in enumerate(zip(ids, n_prompt)):
        input_ids[i, : len(row)] = torch.tensor(row)
        labels[i, k : len(row)] = torch.tensor(row[k:])
    return input_ids, (input_ids != tokenizer.pad_token_id).long(), labels


@torch.no_grad()
def greedy_answers(model, tokenizer, prompts: list[str], max_new_tokens: int = 8, batch_size: int = 256) -> list[str]:
    """Greedy completions (special tokens dropped) of ``prompts``, left-padded as in a rollout.

    Example:
        >>> greedy_answers(model, tok, ["12+7="])  # doctest: +SKIP
        ['19']
    """
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(prompts), batch_size):
        enc = tokenizer(prompts[i : i + batch_size], return_tensors="pt", padding=True, padding_side="left")
        gen = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        out += tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    model.train(was_training)
    return out


def greedy_accuracy(model, tokenizer, problems: list[dict]) -> float:
    """Share of ``problems`` whose greedy completion equals the label exactly.

    Example:
        >>> greedy_accuracy(model, tok, builtin_prompts(200, seed=1))  # doctest: +SKIP
        0.36
    """
    answers = greedy_answers(model, tokenizer, [p["prompt"] for p in problems])
    return sum(a.strip() == p["label"] for a, p in zip(answers, problems)) / max(len(problems), 1)


def warm_up(model, tokenizer, seed: int, target_accuracy: float, max_steps: int, batch_size: int = 128,
            lr: float = 1e-3, eval_every: int = 10, eval_size: int = 200, progress: bool = True) -> dict:
    """Supervised steps until held-out greedy accuracy first reaches ``target_accuracy``.

    Returns ``{"steps", "greedy_accuracy", "loss"}``. The held-out problems come from their own
    RNG (seed + 1), so the stopping point depends on the seed only.
    """
    from tqdm.auto import tqdm

    rng = random.Random(seed)
    held_rng = random.Random(seed + 1)
    held_out = [arithmetic_problem(held_rng) for _ in range(eval_size)]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    acc, loss = 0.0, float("nan")
    bar = tqdm(range(1, max_steps + 1), desc="warm-up (supervised, arithmetic)", disable=not progress)
    for step in bar:
        input_ids, attention_mask, labels = _encode_examples(tokenizer, [arithmetic_problem(rng) for _ in range(batch_size)])
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        # clipping: without it the loss of this tiny model jumped back up after ~300 steps
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss = loss.item()
        if step % eval_every == 0:
            acc = greedy_accuracy(model, tokenizer, held_out)
            bar.set_postfix(loss=f"{loss:.3f}", greedy_acc=f"{acc:.2f}")
            if acc >= target_accuracy:
                break
    bar.close()
    model.eval()
    return {"steps": step, "greedy_accuracy": acc, "loss": loss}


def build_embedded_model(out_dir: str, seed: int = 0, target_accuracy: float = 0.35, max_steps: int = 3000,
                         progress: bool = True) -> dict:
    """Build tokenizer + tiny Llama, warm it up, and write the model folder ``out_dir`` atomically.

    The folder is assembled in a temporary sibling and renamed into place, so a reader never sees a
    half-written model; if ``out_dir`` already exists it is replaced. Returns the warm-up summary.

    Example:
        >>> build_embedded_model("/tmp/tiny-arith", seed=0)  # doctest: +SKIP
        {'steps': 100, 'greedy_accuracy': 0.36, 'loss': 0.76, 'seed': 0, 'target_accuracy': 0.35, 'parameters': 550784}
    """
    from transformers import GenerationConfig, LlamaForCausalLM

    # One thread: the result then depends on the seed only, and a tiny model gains nothing from
    # more (on a busy 2-core machine two threads were 3x slower than one).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        tokenizer = build_tokenizer()
        model = LlamaForCausalLM(build_config(len(tokenizer)))
        info = warm_up(model, tokenizer, seed=seed, target_accuracy=target_accuracy, max_steps=max_steps, progress=progress)
    finally:
        torch.set_num_threads(threads)
    info.update(seed=seed, target_accuracy=target_accuracy, parameters=sum(p.numel() for p in model.parameters()))
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=0)

    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tiny-arith-", dir=parent)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _portable_tokenizer_config(tmp)
        # mkdtemp made the folder 0700 and safetensors writes 0600: a shipped model is world-readable
        os.chmod(tmp, 0o755)
        for name in os.listdir(tmp):
            os.chmod(os.path.join(tmp, name), 0o644)
        with open(os.path.join(tmp, "warmup.json"), "w", encoding="utf-8") as f:
            json.dump(info, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        if os.path.isdir(out_dir):
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info


def _portable_tokenizer_config(folder: str) -> None:
    """Make the tokenizer files load the same in transformers 4 and 5 and in vLLM.

    transformers 5 writes ``tokenizer_class: TokenizersBackend`` (unknown to transformers 4) and
    the chat template to a separate ``chat_template.jinja``; ``PreTrainedTokenizerFast`` is the
    class both versions know, and it keeps our tokenizer.json exactly as built (no model family's
    pre-tokenizer is imposed over it).
    """
    from tokenizers import Tokenizer

    # the warm-up's batched evaluation switched padding on inside the tokenizer: store it off
    core_path = os.path.join(folder, "tokenizer.json")
    core = Tokenizer.from_file(core_path)
    core.no_padding()
    core.no_truncation()
    core.save(core_path)

    path = os.path.join(folder, "tokenizer_config.json")
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg.pop("backend", None)
    cfg["chat_template"] = CHAT_TEMPLATE
    with open(path, "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
    jinja = os.path.join(folder, "chat_template.jinja")
    if os.path.exists(jinja):
        os.remove(jinja)


def _can_create(path: str) -> bool:
    """Whether ``path`` could be created: its nearest existing ancestor is writable."""
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    return os.access(parent, os.W_OK)


def _complete(path: str) -> bool:
    return all(os.path.isfile(os.path.join(path, f)) for f in MODEL_FILES)


def embedded_model_path() -> str:
    """Folder of the embedded model, building it first (with a progress bar) if it is missing.

    The shipped copy lives in the package; if that is absent and the package folder is read-only,
    the model is built under ``$XDG_CACHE_HOME/openrlhf_ext/tiny-arith`` (``~/.cache`` by default).

    Example:
        >>> import os
        >>> os.path.isfile(os.path.join(embedded_model_path(), "config.json"))
        True
    """
    if _complete(ASSET_DIR):
        return ASSET_DIR
    cache = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "openrlhf_ext", "tiny-arith")
    if _complete(cache):
        return cache
    target = ASSET_DIR if _can_create(ASSET_DIR) else cache
    print(f"[openrlhf_ext] embedded model not found; building it in {target} (about a minute on CPU)")
    build_embedded_model(target)
    return target
