"""The Experience: one micro-batch of a step's rollouts with everything the update and the saver read.

    >>> rollouts = {"sequences": torch.tensor([[5, 8, 2], [5, 9, 0], [6, 7, 2]]),
    ...             "attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1]]),
    ...             "action_mask": torch.tensor([[True, True], [True, False], [True, True]]),
    ...             "group_index": torch.tensor([0, 0, 1]), "prompts": ["1+1=", "1+1=", "2+2="],
    ...             "labels": ["2", "2", "4"], "info": {"response_length": torch.tensor([2, 1, 2])}}
    >>> exps = make_experiences(rollouts, 2, advantages=torch.ones(3, 2), info={"reward": torch.tensor([1.0, 0.0, 1.0])})
    >>> [len(e) for e in exps], exps[1].advantages.shape, list(exps[1].info)
    ([2, 1], torch.Size([1, 2]), ['response_length', 'reward'])

Field names follow OpenRLHF's `Experience`, because the trajectory saver (and upstream OpenRLHF's
code) reads them by attribute. All experiences of a step share one padded width (S, A): the step's
tensors are made whole by the stages and cut into experiences once, by `make_experiences`.
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
    # (B, A) log-prob of each response token as the rollout engine reported it when it sampled it
    # (vLLM's sample log-probs, HF generate's scores), at the sampling temperature; NaN on padding
    rollout_log_probs: torch.Tensor | None = None
    alternative_ids: torch.Tensor | None = None  # (B, A, K) int32 the K most probable tokens of the sampling distribution
    alternative_log_probs: torch.Tensor | None = None  # (B, A, K) float32 their log-probs, most probable first
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
               "rollout_log_probs", "alternative_ids", "alternative_log_probs",
               "base_action_log_probs", "values", "kl", "advantages", "returns", "loss_mask", "group_index")

    def to_payload(self, keys=None) -> dict:
        """The tensors a worker needs, as a plain dict (cheap to ship through Ray's object store)."""
        keys = keys or self.TENSORS
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}

    def __len__(self) -> int:
        return self.sequences.shape[0]


def make_experiences(rollouts: dict, micro_rollout_batch_size: int, info: dict | None = None,
                     **fields: torch.Tensor | None) -> list[Experience]:
    """Cut a step's tensors into experiences of ``micro_rollout_batch_size`` responses each.

    Args:
        rollouts: the packed step (`openrlhf_ext.trainer.stages.generate`): ``sequences``,
            ``attention_mask``, ``action_mask``, ``group_index`` tensors of B rows, ``prompts`` and
            ``labels`` lists of B, ``info`` per-sample (B,) values, and ``rollout_log_probs`` (B, A)
            when the rollout engine gave them (absent or None: left out).
        info: more per-sample (B,) values (reward, kl, ...), after the rollouts' own.
        fields: more step-wide (B, ...) tensors by `Experience` field name; None values are left out.
    """
    B = rollouts["sequences"].shape[0]
    info = {**rollouts["info"], **{k: v for k, v in (info or {}).items() if v is not None}}
    fields = {"rollout_log_probs": rollouts.get("rollout_log_probs"), **fields}
    fields = {k: v for k, v in fields.items() if v is not None}
    out = []
    for s in range(0, B, micro_rollout_batch_size):
        sl = slice(s, s + micro_rollout_batch_size)
        out.append(Experience(
            sequences=rollouts["sequences"][sl], attention_mask=rollouts["attention_mask"][sl],
            action_mask=rollouts["action_mask"][sl], group_index=rollouts["group_index"][sl],
            prompts=rollouts["prompts"][sl], labels=rollouts["labels"][sl],
            info={k: v[sl] for k, v in info.items()},
            **{k: v[sl] for k, v in fields.items()},
        ))
    return out
