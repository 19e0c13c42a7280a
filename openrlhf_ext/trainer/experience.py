"""The Experience: one micro-batch of a step's rollouts with everything the update and the saver read.

    >>> exps = make_experiences(step_batch, micro_rollout_batch_size=8)
    >>> exps[0].action_entropy.shape == exps[0].action_mask.shape
    True

Field names follow OpenRLHF's `Experience` (and docs/core_api: the saver reads them by attribute).
All experiences of a step share one padded width (S, A), so the step's tensors can be re-joined
with `torch.cat` for the advantage estimators, which look at all responses of a prompt together.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Experience:
    sequences: torch.Tensor  # (B, S) long: left-padded prompt then right-padded response
    attention_mask: torch.Tensor  # (B, S) long: 1 on real tokens
    action_mask: torch.Tensor  # (B, A) bool: response tokens (the last A columns of sequences)
    action_log_probs: torch.Tensor | None = None  # (B, A) log-prob of each response token, old policy
    action_entropy: torch.Tensor | None = None  # (B, A) entropy of the sampling distribution (nats)
    base_action_log_probs: torch.Tensor | None = None  # (B, A) reference policy log-probs (KL)
    values: torch.Tensor | None = None  # (B, A) critic values (gae)
    kl: torch.Tensor | None = None  # (B, A) per-token KL estimate, policy vs reference
    advantages: torch.Tensor | None = None  # (B, A)
    returns: torch.Tensor | None = None  # (B, A)
    loss_mask: torch.Tensor | None = None  # (B, A) float weights of --policy_loss_entropy_top_ratio
    info: dict = field(default_factory=dict)  # per-sample (B,) tensors: reward, response_length, ...
    prompts: list[str] | None = None  # (B,) prompt texts
    labels: list[str] | None = None  # (B,) reference answers
    group_index: torch.Tensor | None = None  # (B,) long: which prompt of the step a response answers

    TENSORS = ("sequences", "attention_mask", "action_mask", "action_log_probs", "action_entropy",
               "base_action_log_probs", "values", "kl", "advantages", "returns", "loss_mask", "group_index")

    def to_payload(self, keys=None) -> dict:
        """The tensors a worker needs, as a plain dict (cheap to ship through Ray's object store)."""
        keys = keys or self.TENSORS
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}

    def __len__(self) -> int:
        return self.sequences.shape[0]


def make_experiences(batch: dict, micro_rollout_batch_size: int) -> list[Experience]:
    """Split a step's packed batch (tensors of B rows + per-sample lists/info) into experiences."""
    B = batch["sequences"].shape[0]
    out = []
    for s in range(0, B, micro_rollout_batch_size):
        sl = slice(s, s + micro_rollout_batch_size)
        out.append(Experience(
            sequences=batch["sequences"][sl], attention_mask=batch["attention_mask"][sl],
            action_mask=batch["action_mask"][sl], group_index=batch["group_index"][sl],
            prompts=batch["prompts"][sl], labels=batch["labels"][sl],
            info={k: v[sl] for k, v in batch["info"].items()},
        ))
    return out


def cat_field(experiences: list[Experience], name: str) -> torch.Tensor:
    """One field over the whole step: (B_step, ...)."""
    return torch.cat([getattr(e, name) for e in experiences], dim=0)


def split_field(experiences: list[Experience], name: str, value: torch.Tensor) -> None:
    """Write a step-wide (B_step, ...) tensor back into the experiences, slice by slice."""
    s = 0
    for e in experiences:
        setattr(e, name, value[s : s + len(e)])
        s += len(e)


def split_info(experiences: list[Experience], key: str, value: torch.Tensor) -> None:
    """Write a step-wide per-sample (B_step,) value into each experience's `info[key]`."""
    s = 0
    for e in experiences:
        e.info[key] = value[s : s + len(e)]
        s += len(e)
