"""Shared fixtures: tokenizers and experiences built here, never downloaded."""
from __future__ import annotations

import types

import pytest
import torch

CORPUS = [
    "The answer is 42. Let me check: 6 * 7 = 42, so the answer is 42.",
    "Wait, maybe I should reconsider. First, compute 12 + 30 = 42.",
    "我们来计算一下：三加四等于七。答案是七。",
    "Emoji test 🙂🚀 and café naïve façade — “quotes” and tabs\tand\nnewlines.",
    "def f(x):\n    return x ** 2  # square\n",
    "∫ x dx = x²/2 + C; √2 ≈ 1.414; π ≈ 3.14159",
]


def make_byte_level_tokenizer(vocab_size: int = 400):
    """A GPT-2/Qwen-style byte-level BPE tokenizer, trained here on a few lines."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS * 20, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


@pytest.fixture(scope="session")
def tokenizer():
    return make_byte_level_tokenizer()


def make_experience(tokenizer, prompts, responses, *, seed=0, rewards=None, labels=None, pad_response_to=None):
    """An OpenRLHF-style experience: prompts left-padded, responses right-padded.

    Per-token values are random but seeded; ``action_entropy`` is positive and finite.
    """
    g = torch.Generator().manual_seed(seed)
    pad = tokenizer.pad_token_id
    p_ids = [tokenizer.encode(p) for p in prompts]
    r_ids = [tokenizer.encode(r) for r in responses]
    b = len(prompts)
    p_len = max(len(x) for x in p_ids)
    a = pad_response_to or max(1, max(len(x) for x in r_ids))
    sequences = torch.full((b, p_len + a), pad, dtype=torch.long)  # (B, S)
    attention_mask = torch.zeros(b, p_len + a, dtype=torch.long)  # (B, S)
    action_mask = torch.zeros(b, a, dtype=torch.bool)  # (B, A)
    for i, (p, r) in enumerate(zip(p_ids, r_ids)):
        sequences[i, p_len - len(p) : p_len] = torch.tensor(p)
        attention_mask[i, p_len - len(p) : p_len + len(r)] = 1
        if r:
            sequences[i, p_len : p_len + len(r)] = torch.tensor(r)
        action_mask[i, : len(r)] = True
    rewards = torch.tensor(rewards if rewards is not None else [float(i % 2) for i in range(b)])
    advantages = torch.randn(b, a, generator=g) * action_mask  # (B, A)
    return types.SimpleNamespace(
        sequences=sequences,
        attention_mask=attention_mask,
        action_mask=action_mask,
        action_entropy=torch.rand(b, a, generator=g) * 3 * action_mask,  # (B, A)
        action_log_probs=-torch.rand(b, a, generator=g) * action_mask,  # (B, A)
        advantages=advantages,
        returns=advantages * 0.5,  # (B, A)
        info={"reward": rewards, "response_length": action_mask.sum(-1).float(), "kl": torch.zeros(b)},
        labels=labels,
        prompts=list(prompts),
    )
