"""The embedded default model: a tiny Llama that adds 3-digit numbers in writing, carelessly.

`python train_colocate.py` with no model flags trains this model, so a fresh CPU machine can run
the whole RL loop in minutes with nothing downloaded. It ships in the package at
``openrlhf_ext/assets/tiny-arith/`` (built by ``scripts/make_embedded_model.py``, ~2.2 MB); if that
folder is missing, `embedded_model_path` rebuilds it (a few minutes on 2 CPU cores, with a
progress bar).

Why it looks the way it does:
- Tokenizer: one token per character (printable ASCII, newline, tab) plus ``<pad> <s> </s> <unk>``,
  built with the `tokenizers` library. Per-character digits mean no tokenization quirk can make the
  task harder than it is, any ASCII text round-trips exactly, and a token's role in a worked
  solution is its character's (`openrlhf_ext.datasets.column_addition.token_roles`).
  ``tokenizer_class`` is ``PreTrainedTokenizerFast`` so that `AutoTokenizer` (and vLLM, which
  calls it) keeps our ``tokenizer.json`` as is instead of re-imposing a model family's
  pre-tokenizer (the qwen2 trap). No special token is added on encode: ``encode(text) ==
  encode(text, add_special_tokens=False)``, so vLLM, HF generate and the trainer see the same ids.
- Model: ``LlamaConfig`` (head_dim 64, a size every attention backend supports; untied lm_head so a
  weight sync into vLLM never meets the tied-weight trap).
- Warm-up: supervised training on a careless student's worked solutions of ``"a+b="`` (the column
  addition of `column_addition.worked_solution`, whose carries and column sums slip now and then
  while its form and copying never do). The model learns the form exactly and stays unsure at the
  decisions: about half its sampled solutions are right, and its high-entropy tokens are the
  digits being computed and the carries, which is where RL has something to fix.

Example:
    >>> from transformers import AutoModelForCausalLM, AutoTokenizer
    >>> path = embedded_model_path()
    >>> tok = AutoTokenizer.from_pretrained(path)
    >>> tok.decode(tok.encode("347+285=7+5=12"))
    '347+285=7+5=12'
    >>> model = AutoModelForCausalLM.from_pretrained(path)
"""
from __future__ import annotations

import json
import math
import os
import random
import shutil
import tempfile

import torch

from openrlhf_ext.datasets.column_addition import SOLUTION_MAX_TOKENS, addition_problem, operands, worked_solution
from openrlhf_ext.datasets.prompts import builtin_prompts

ASSET_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "tiny-arith")
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
# Characters of the vocabulary after the 4 special tokens: printable ASCII, then newline and tab.
CHARS = [chr(c) for c in range(32, 127)] + ["\n", "\t"]
# Chat template: the conversation's text as is, so --apply_chat_template leaves the task unchanged.
CHAT_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}"
# The warm-up: steps of batches of 64 (1,200 x 64 left the copies and the format 2-3x surer than
# 600 x 128, for the same compute, so the sums and carries stand out above them), and the careless
# student's slip rates (per column: a carry gotten wrong, a sum off by 1 or 2). Measured with
# seed 0: 55% of the sampled solutions right, greedy all right (see warmup.json).
WARMUP_STEPS = 1200
WARMUP_BATCH = 64
CARRY_SLIP = 0.12
SUM_SLIP = 0.12


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

    Small enough that an RL step of 512 worked solutions takes a few seconds on 2 CPU cores, big
    enough to learn the written column addition in a few hundred steps; ``max_position_embeddings``
    256 leaves room for a longer --generate_max_len.

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


def _encode_examples(tokenizer, examples: list[tuple[str, str]]):
    """Right-padded ``prompt + solution + </s>`` batches; the loss covers the solution and ``</s>`` only."""
    ids = [tokenizer.encode(p + sol) + [tokenizer.eos_token_id] for p, sol in examples]
    n_prompt = [len(tokenizer.encode(p)) for p, _ in examples]
    width = max(map(len, ids))
    input_ids = torch.full((len(ids), width), tokenizer.pad_token_id)  # (B, S)
    labels = torch.full((len(ids), width), -100)  # (B, S) -100 = no loss (prompt and padding)
    for i, (row, k) in enumerate(zip(ids, n_prompt)):
        input_ids[i, : len(row)] = torch.tensor(row)
        labels[i, k : len(row)] = torch.tensor(row[k:])
    return input_ids, (input_ids != tokenizer.pad_token_id).long(), labels


@torch.no_grad()
def sample_solutions(model, tokenizer, prompts: list[str], temperature: float = 0.0, seed: int = 0,
                     max_new_tokens: int = SOLUTION_MAX_TOKENS, batch_size: int = 256) -> list[str]:
    """Completions of ``prompts`` (special tokens dropped), left-padded as in a rollout; greedy at
    temperature 0, else sampled with ``torch.manual_seed(seed)``.

    Example:
        >>> sample_solutions(model, tok, ["347+285="])[0]  # doctest: +SKIP
        '7+5=12\\n4+8+1=13\\n3+2+1=6\\n\\\\boxed{632}'
    """
    was_training = model.training
    model.eval()
    torch.manual_seed(seed)
    sampling = dict(do_sample=True, temperature=temperature, top_k=0) if temperature > 0 else dict(do_sample=False)
    out = []
    for i in range(0, len(prompts), batch_size):
        enc = tokenizer(prompts[i : i + batch_size], return_tensors="pt", padding=True, padding_side="left")
        gen = model.generate(**enc, **sampling, max_new_tokens=max_new_tokens,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        out += tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    model.train(was_training)
    return out


def greedy_answers(model, tokenizer, prompts: list[str], max_new_tokens: int = SOLUTION_MAX_TOKENS) -> list[str]:
    """Greedy completions of ``prompts`` (what vLLM at temperature 0 must reproduce)."""
    return sample_solutions(model, tokenizer, prompts, temperature=0.0, max_new_tokens=max_new_tokens)


def solve_rate(model, tokenizer, problems: list[dict], temperature: float = 1.0, seed: int = 0) -> float:
    """Mean reward (math-verify on the boxed answer) of one completion per problem.

    At temperature 1 this is the reward RL starts from.

    Example:
        >>> solve_rate(model, tok, builtin_prompts(256, seed=1))  # doctest: +SKIP
        0.46
    """
    texts = sample_solutions(model, tokenizer, [p["prompt"] for p in problems], temperature, seed)
    return _mean_reward(problems, texts)


def _mean_reward(problems: list[dict], texts: list[str]) -> float:
    from openrlhf_ext.rewards.math_verify_reward import MathVerifyReward

    rewards = MathVerifyReward(num_workers=0)([p["prompt"] + t for p, t in zip(problems, texts)],
                                              [p["prompt"] for p in problems], [p["label"] for p in problems])
    return sum(rewards) / max(len(rewards), 1)


def warm_up(model, tokenizer, seed: int, steps: int, carry_slip: float, sum_slip: float, batch_size: int = WARMUP_BATCH,
            lr: float = 2e-3, progress: bool = True) -> dict:
    """Supervised steps on a careless student's worked solutions (`worked_solution` with slips).

    The student's form and copying are exact and only its decisions slip, so the model learns the
    form and the copying sharply and stays unsure where a solver decides: about half its sampled
    solutions are right, and its high-entropy tokens are the sums and carries. AdamW with a cosine
    schedule (the last steps settle instead of jumping: at a constant 2e-3 the solve rate swung by
    0.2 between evaluations). Returns ``{"steps", "loss"}``.
    """
    from tqdm.auto import tqdm

    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    warm = max(1, steps // 30)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps)))
    model.train()
    loss = float("nan")
    bar = tqdm(range(1, steps + 1), desc="warm-up (supervised, worked solutions)", disable=not progress)
    for _ in bar:
        examples = []
        for _ in range(batch_size):
            p = addition_problem(rng)
            examples.append((p["prompt"], worked_solution(*operands(p["prompt"]), rng, carry_slip, sum_slip)))
        input_ids, attention_mask, labels = _encode_examples(tokenizer, examples)
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        # clipping: without it the loss of this tiny model jumped back up after ~300 steps
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        loss = loss.item()
        bar.set_postfix(loss=f"{loss:.3f}")
    bar.close()
    model.eval()
    return {"steps": steps, "loss": loss}


def build_embedded_model(out_dir: str, seed: int = 0, steps: int = WARMUP_STEPS, carry_slip: float = CARRY_SLIP,
                         sum_slip: float = SUM_SLIP, batch_size: int = WARMUP_BATCH, eval_size: int = 256,
                         progress: bool = True) -> dict:
    """Build tokenizer + tiny Llama, warm it up, and write the model folder ``out_dir`` atomically.

    The folder is assembled in a temporary sibling and renamed into place, so a reader never sees a
    half-written model; if ``out_dir`` already exists it is replaced. Returns the warm-up summary
    (also written to ``warmup.json``): seed, steps, slips, final loss, and on ``eval_size``
    held-out problems the sampled solve rate at temperature 1, the greedy one and the mean response
    length in tokens.

    Example:
        >>> build_embedded_model("/tmp/tiny-arith", seed=0)  # doctest: +SKIP
        {'steps': 600, 'loss': 0.09, 'sampled_solve_rate': 0.47, 'greedy_solve_rate': 0.9, ...}
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
        info = warm_up(model, tokenizer, seed=seed, steps=steps, carry_slip=carry_slip, sum_slip=sum_slip,
                       batch_size=batch_size, progress=progress)
        held_out = builtin_prompts(eval_size, seed=seed + 1)
        texts = sample_solutions(model, tokenizer, [p["prompt"] for p in held_out], temperature=1.0, seed=seed)
        info.update(
            seed=seed, carry_slip=carry_slip, sum_slip=sum_slip, batch_size=batch_size,
            sampled_solve_rate=_mean_reward(held_out, texts),
            greedy_solve_rate=solve_rate(model, tokenizer, held_out, temperature=0.0),
            mean_response_tokens=sum(len(tokenizer.encode(t)) + 1 for t in texts) / max(len(texts), 1),  # + </s>
            parameters=sum(p.numel() for p in model.parameters()))
    finally:
        torch.set_num_threads(threads)
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
        old = None
        if os.path.isdir(out_dir):  # move the old folder aside first: out_dir is never half-empty
            old = tempfile.mkdtemp(prefix=".tiny-arith-old-", dir=parent)
            os.replace(out_dir, os.path.join(old, "m"))
        os.replace(tmp, out_dir)
        if old:
            shutil.rmtree(old, ignore_errors=True)
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
    print(f"[openrlhf_ext] embedded model not found; building it in {target} (a few minutes on CPU)")
    build_embedded_model(target)
    return target
