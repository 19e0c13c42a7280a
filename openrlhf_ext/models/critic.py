"""The critic of PPO (`--advantage_estimator gae`): a causal LM's trunk with a scalar value head.

    >>> critic = Critic.from_pretrained(path)
    >>> values = critic(sequences, attention_mask, num_actions)  # (B, A)
"""
from __future__ import annotations

import torch
import torch.nn as nn
from transformers import AutoModel

from openrlhf_ext.models.actor import position_ids_from_mask


class Critic(nn.Module):
    def __init__(self, trunk: nn.Module, hidden_size: int):
        super().__init__()
        self.trunk = trunk
        self.value_head = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.value_head.weight)  # start at V = 0: the first advantages are the returns
        nn.init.zeros_(self.value_head.bias)

    @classmethod
    def from_pretrained(cls, path: str, bf16: bool = False, gradient_checkpointing: bool = False) -> "Critic":
        trunk = AutoModel.from_pretrained(path, dtype=torch.bfloat16 if bf16 else torch.float32)
        if gradient_checkpointing:
            trunk.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        critic = cls(trunk, trunk.config.hidden_size)
        return critic.to(torch.bfloat16) if bf16 else critic

    def forward(self, sequences: torch.Tensor, attention_mask: torch.Tensor, num_actions: int) -> torch.Tensor:
        """Values of the states before each response token: (B, A) float32."""
        hidden = self.trunk(
            input_ids=sequences, attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask), use_cache=False,
        ).last_hidden_state  # (B, S, H)
        values = self.value_head(hidden).squeeze(-1).float()  # (B, S)
        return values[:, -num_actions - 1 : -1]
