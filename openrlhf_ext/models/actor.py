"""The policy: a causal LM whose one forward gives the response tokens' log-probs AND entropies.

    >>> actor = Actor.from_pretrained(path)
    >>> log_probs, entropy = actor(sequences, attention_mask, action_mask.shape[1], temperature=1.0)

Both come from the same logits, divided by the sampling temperature, at the positions that produced
the response tokens: the distribution each token was drawn from. So the entropy the saver writes
costs no extra forward pass, and is the entropy of the sampling distribution (FORMAT.md).
"""
from __future__ import annotations

import torch
import torch.nn as nn
from transformers import AutoModelForCausalLM

from openrlhf_ext.trajectory import token_entropy


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, as Hugging Face generate computes them: (B, S) long."""
    position_ids = attention_mask.long().cumsum(-1) - 1
    return position_ids.clamp_(min=0)


def gather_log_probs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[label] without keeping the (B, A, V) log-softmax around: (B, A) float32."""
    logits = logits.float()
    picked = torch.gather(logits, -1, labels.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


class Actor(nn.Module):
    """Wraps a Hugging Face causal LM; `generate` and `save_pretrained` pass through to it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    @classmethod
    def from_pretrained(cls, path: str, bf16: bool = False, gradient_checkpointing: bool = False) -> "Actor":
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16 if bf16 else torch.float32)
        if gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False  # training forwards never reuse a KV cache
        return cls(model)

    def forward(
        self,
        sequences: torch.Tensor,       # (B, S) long: left-padded prompt, then right-padded response
        attention_mask: torch.Tensor,  # (B, S) 0/1
        num_actions: int,              # A: the response slots are the last A positions of `sequences`
        temperature: float = 1.0,
        with_entropy: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns (action_log_probs (B, A) float32, action_entropy (B, A) float32 or None)."""
        out = self.model(
            input_ids=sequences,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
            use_cache=False,
        )
        # The logits at position t predict token t+1: the response's A tokens come from the A
        # positions just before them.
        logits = out.logits[:, -num_actions - 1 : -1, :]  # (B, A, V)
        log_probs = gather_log_probs(logits / temperature, sequences[:, -num_actions:])  # (B, A)
        entropy = token_entropy(logits, temperature=temperature) if with_entropy else None  # (B, A)
        return log_probs, entropy

    def generate(self, *args, **kwargs):
        return self.model.generate(*args, **kwargs)
