"""Rollouts with Hugging Face `generate`, run inside the actor workers on their own weights
(`--rollout_backend hf`): no second copy of the model and no weight sync.

    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
    ...                                      num_attention_heads=1, num_key_value_heads=1))   # random weights
    >>> _ = torch.manual_seed(0)
    >>> responses = hf_generate(model, [[3, 4, 5], [6]], pad_id=0, eos_id=1, max_new_tokens=4, temperature=1.0)
    >>> len(responses), all(len(r) <= 4 for r in responses)   # one response per prompt: its new ids, unpadded
    (2, True)
"""
from __future__ import annotations

import torch


@torch.no_grad()
def hf_generate(
    model,
    prompt_ids: list[list[int]],
    pad_id: int,
    eos_id: int | None,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> list[list[int]]:
    """Sample one response per prompt; returns the new token ids of each (without padding)."""
    was_training = model.training
    model.eval()
    responses: list[list[int]] = []
    for start in range(0, len(prompt_ids), batch_size):
        chunk = prompt_ids[start : start + batch_size]
        P = max(len(p) for p in chunk)
        input_ids = torch.full((len(chunk), P), pad_id, dtype=torch.long)  # (b, P) left-padded
        attention_mask = torch.zeros((len(chunk), P), dtype=torch.long)
        for i, p in enumerate(chunk):
            input_ids[i, P - len(p):] = torch.tensor(p)
            attention_mask[i, P - len(p):] = 1
        out = model.generate(
            input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
            do_sample=True, temperature=temperature, top_p=top_p, top_k=0,
            max_new_tokens=max_new_tokens, pad_token_id=pad_id, eos_token_id=eos_id,
            use_cache=True,
        )
        for row in out[:, P:].tolist():
            # generate pads finished rows with pad_id after EOS; trim_response cuts there later.
            if eos_id is not None and eos_id in row:
                row = row[: row.index(eos_id) + 1]
            elif pad_id != eos_id:
                while row and row[-1] == pad_id:
                    row.pop()
            responses.append(row)
    model.train(was_training)
    return responses
