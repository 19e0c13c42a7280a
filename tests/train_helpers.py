"""Shared pieces of the trainer tests: a tiny random causal LM with a character tokenizer, built in a
temp folder (no download), a reward file, and the flags of a short CPU run."""
from __future__ import annotations

import os

import torch

CHARS = [chr(c) for c in range(32, 127)]


def build_char_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<pad>", "<s>", "</s>", "<unk>"] + CHARS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


def build_tiny_model(path: str, seed: int = 0, tied: bool = False) -> str:
    """A 2-layer Llama (random weights) + its tokenizer, saved as a Hugging Face folder."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tok = build_char_tokenizer()
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, head_dim=32, max_position_embeddings=128,
                      tie_word_embeddings=tied, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(cfg)
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


REWARD_PY = '''
def reward_func(queries, prompts, labels):
    # Deterministic from the text, so a test can recompute it from a saved record: the share of
    # digits in the response.
    out = []
    for q, p in zip(queries, prompts):
        r = q[len(p):]
        out.append(sum(c.isdigit() for c in r) / max(len(r), 1))
    return out
'''


def reward_share_of_digits(response: str) -> float:
    return sum(c.isdigit() for c in response) / max(len(response), 1)


def write_reward_file(folder: str) -> str:
    path = os.path.join(folder, "reward.py")
    with open(path, "w", encoding="utf-8") as f:
        f.write(REWARD_PY)
    return path


def short_run_flags(model: str, save_path: str, reward_py: str, max_steps: int, **extra) -> list[str]:
    flags = {
        "pretrain": model, "remote_rm_url": reward_py, "save_path": save_path, "max_steps": max_steps,
        "rollout_batch_size": 4, "n_samples_per_prompt": 4, "micro_rollout_batch_size": 8,
        "train_batch_size": 16, "micro_train_batch_size": 8, "generate_max_len": 6, "prompt_max_len": 32,
        "temperature": 0.7, "actor_learning_rate": 1e-3, "advantage_estimator": "group_norm",
        "init_kl_coef": 0.01, "num_trajectories_to_save": 16, "rollout_backend": "hf", "seed": 7,
    }
    flags.update(extra)
    argv = []
    for k, v in flags.items():
        if v is True:
            argv.append(f"--{k}")
        elif v is not False and v is not None:
            argv += [f"--{k}", str(v)]
    return argv + ["--use_kl_loss", "--save_trajectories", "--mark_high_entropy_tokens"]
