"""A toy tokenizer and toy experiences, built in memory for docstring examples and tests: nothing
is downloaded and nothing beyond the core's own dependencies (torch, ``tokenizers``) is needed.

The tokenizer is byte-level with no merges, so a token id is a byte value ("1+1=" is
[49, 43, 49, 61]) and a four-byte emoji is four tokens, the last of which carries it (FORMAT.md,
"Token texts"). Real runs use the model's tokenizer; everything here works with either.

Example:
    >>> tok = toy_tokenizer()
    >>> tok.encode("1+1=").ids, tok.decode([50])
    ([49, 43, 49, 61], '2')
"""
from __future__ import annotations

import types

import torch

from .texts_table import bytes_to_unicode


def toy_tokenizer():
    """A ``tokenizers.Tokenizer``: GPT-2's byte-level pre-tokenizer and decoder, 256 ids, no merges."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {char: byte for byte, char in bytes_to_unicode().items()}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def _encode(tokenizer, text: str) -> list[int]:
    encoded = tokenizer.encode(text)
    return list(getattr(encoded, "ids", encoded))  # tokenizers' Encoding, or transformers' list


def toy_experience(tokenizer, prompts, responses, *, seed=0, rewards=None, labels=None, pad_response_to=None,
                   rollout_log_probs=False, top_k=0):
    """An OpenRLHF-style experience of ``prompts`` and their ``responses`` (texts): prompts
    left-padded, responses right-padded, the fields ``TrajectorySaver.save_step`` reads.

    Per-token values are random but seeded; ``action_entropy`` is positive and finite. Rewards
    default to 0, 1, 0, 1, ... ``rollout_log_probs``: also the rollout engine's log-probs (the
    trainer's, off by up to 0.01); ``top_k``: also K alternatives per token (random ids, sorted
    log-probs).

    Example:
        >>> exp = toy_experience(toy_tokenizer(), ["1+1=", "2+2="], ["2", "10"], rewards=[1.0, 0.0])
        >>> exp.sequences.tolist(), exp.action_mask.tolist()
        ([[49, 43, 49, 61, 50, 0], [50, 43, 50, 61, 49, 48]], [[True, False], [True, True]])
    """
    g = torch.Generator().manual_seed(seed)
    pad = getattr(tokenizer, "pad_token_id", None) or 0
    p_ids = [_encode(tokenizer, p) for p in prompts]
    r_ids = [_encode(tokenizer, r) for r in responses]
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
    exp = types.SimpleNamespace(
        sequences=sequences,  # (B, S) prompt (left-padded) then response (right-padded)
        attention_mask=attention_mask,  # (B, S)
        action_mask=action_mask,  # (B, A) true on response tokens
        action_entropy=torch.rand(b, a, generator=g) * 3 * action_mask,  # (B, A) entropy of the sampling distribution
        action_log_probs=-torch.rand(b, a, generator=g) * action_mask,  # (B, A)
        advantages=advantages,  # (B, A)
        returns=advantages * 0.5,  # (B, A)
        info={"reward": rewards, "response_length": action_mask.sum(-1).float(), "kl": torch.zeros(b)},
        labels=labels,
        prompts=list(prompts),
    )
    if rollout_log_probs:  # (B, A) the rollout engine's log-probs: the trainer's, a little off
        exp.rollout_log_probs = (exp.action_log_probs - torch.rand(b, a, generator=g) * 0.01) * action_mask
    if top_k:
        logits = torch.randn(b, a, 256, generator=g)  # (B, A, V) a random distribution per slot
        top = torch.log_softmax(logits, -1).topk(top_k, dim=-1)
        exp.alternative_ids = top.indices  # (B, A, K) most probable first
        exp.alternative_log_probs = top.values  # (B, A, K)
    return exp
