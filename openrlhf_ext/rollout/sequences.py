"""From token ids to the padded tensors every later stage reads.

    >>> batch = pack_sequences([[5, 6], [7]], [[8, 2], [9, 9, 2]], pad_id=0, eos_id=2)
    >>> batch["sequences"].tolist()
    [[5, 6, 8, 2, 0], [0, 7, 9, 9, 2]]

Layout (OpenRLHF's): each row is its prompt LEFT-padded to the batch's longest prompt, then its
response RIGHT-padded to the longest response; the response slots are the last A columns. A
response is cut after its first end-of-sequence token (kept: the policy chose to stop there).
"""
from __future__ import annotations

import torch


def trim_response(response_ids: list[int], eos_id: int | None) -> list[int]:
    """Keep the response up to and including its first EOS."""
    if eos_id is not None and eos_id in response_ids:
        return response_ids[: response_ids.index(eos_id) + 1]
    return list(response_ids)


def pack_sequences(
    prompt_ids: list[list[int]], response_ids: list[list[int]], pad_id: int, eos_id: int | None
) -> dict[str, torch.Tensor]:
    responses = [trim_response(r, eos_id) for r in response_ids]
    P = max(len(p) for p in prompt_ids)
    A = max(1, max(len(r) for r in responses))
    B = len(prompt_ids)
    sequences = torch.full((B, P + A), pad_id, dtype=torch.long)  # (B, S)
    attention_mask = torch.zeros((B, P + A), dtype=torch.long)  # (B, S) 1 on real tokens
    action_mask = torch.zeros((B, A), dtype=torch.bool)  # (B, A) True on response tokens
    truncated = torch.zeros(B, dtype=torch.bool)  # (B,) hit the length limit without EOS
    for i, (p, r) in enumerate(zip(prompt_ids, responses)):
        sequences[i, P - len(p) : P] = torch.tensor(p, dtype=torch.long)
        attention_mask[i, P - len(p) : P] = 1
        if r:
            sequences[i, P : P + len(r)] = torch.tensor(r, dtype=torch.long)
            attention_mask[i, P : P + len(r)] = 1
            action_mask[i, : len(r)] = True
        truncated[i] = not (eos_id is not None and r and r[-1] == eos_id)
    return {"sequences": sequences, "attention_mask": attention_mask, "action_mask": action_mask,
            "truncated": truncated}
