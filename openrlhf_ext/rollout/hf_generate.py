"""Rollouts with Hugging Face `generate`, run inside the actor workers on their own weights
(`--rollout_backend hf`): no second copy of the model and no weight sync.

    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
    ...                                      num_attention_heads=1, num_key_value_heads=1))   # random weights
    >>> _ = torch.manual_seed(0)
    >>> responses = hf_generate(model, [[3, 4, 5], [6]], pad_id=0, eos_id=1, max_new_tokens=4, temperature=1.0)
    >>> len(responses), all(len(ids) <= 4 and len(lps) == len(ids) for ids, lps in responses)
    (2, True)

Each response comes with the log-probs that generate itself sampled its tokens from (the rollout
log-probs, FORMAT.md's `rollout_logprob`): the scores after every logits processor, temperature and
top-p included, i.e. what `generate(output_scores=True)` returns, read one step at a time by
`SampledLogProbs` instead of keeping a (steps, batch, vocabulary) tensor of scores.
"""
from __future__ import annotations

import torch
from transformers import LogitsProcessor, LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper


class SampledLogProbs(LogitsProcessor):
    """The log-prob of each sampled token under the distribution generate sampled it from.

    It must be the last logits processor, so the scores it sees are the ones generate samples
    from: `hf_generate` therefore passes temperature and top-p as processors of its own, placed
    before it (generate adds its built-in warpers after every processor passed in). A call sees
    the token sampled at the previous step (the last column of `input_ids`), so one step's
    log-softmax (batch, vocabulary) is kept until then; `finish` takes the last token's.
    """

    def __init__(self):
        self.previous: torch.Tensor | None = None  # (b, V) log-probs of the last step's distribution
        self.picked: list[torch.Tensor] = []  # per generated token: (b,) its log-prob

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.previous is not None:
            self.picked.append(self.previous.gather(1, input_ids[:, -1:]).squeeze(1))
        self.previous = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, last_tokens: torch.Tensor) -> torch.Tensor:
        """(b, T) float32: the log-prob of each of the T generated tokens; `last_tokens` (b,) the last."""
        if self.previous is not None:
            self.picked.append(self.previous.gather(1, last_tokens[:, None]).squeeze(1))
            self.previous = None
        return torch.stack(self.picked, 1) if self.picked else torch.zeros(last_tokens.shape[0], 0)


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
) -> list[tuple[list[int], list[float]]]:
    """Sample one response per prompt; returns (new token ids, their rollout log-probs) of each,
    without padding."""
    was_training = model.training
    model.eval()
    responses: list[tuple[list[int], list[float]]] = []
    for start in range(0, len(prompt_ids), batch_size):
        chunk = prompt_ids[start : start + batch_size]
        P = max(len(p) for p in chunk)
        input_ids = torch.full((len(chunk), P), pad_id, dtype=torch.long)  # (b, P) left-padded
        attention_mask = torch.zeros((len(chunk), P), dtype=torch.long)
        for i, p in enumerate(chunk):
            input_ids[i, P - len(p):] = torch.tensor(p)
            attention_mask[i, P - len(p):] = 1
        recorder = SampledLogProbs()
        # The warpers generate would add for temperature / top_p, as ours, in the same order, so
        # that the recorder comes after them; generate's own are off (1.0, top_k 0).
        warpers = [TemperatureLogitsWarper(temperature)] if temperature != 1.0 else []
        warpers += [TopPLogitsWarper(top_p)] if top_p < 1.0 else []
        out = model.generate(
            input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
            do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
            logits_processor=LogitsProcessorList([*warpers, recorder]),
            max_new_tokens=max_new_tokens, pad_token_id=pad_id, eos_token_id=eos_id,
            use_cache=True,
        )
        logprobs = recorder.finish(out[:, -1]).cpu()  # (b, T)
        for row, lps in zip(out[:, P:].tolist(), logprobs.tolist()):
            # generate pads finished rows with pad_id after EOS; trim_response cuts there later.
            if eos_id is not None and eos_id in row:
                row = row[: row.index(eos_id) + 1]
            elif pad_id != eos_id:
                while row and row[-1] == pad_id:
                    row.pop()
            responses.append((row, lps[: len(row)]))
    model.train(was_training)
    return responses
