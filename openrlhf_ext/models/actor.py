"""The policy: a causal LM whose one forward gives the response tokens' log-probs AND entropies.

    actor = Actor.from_pretrained(path)
    log_probs, entropy = actor(sequences, attention_mask, num_actions, temperature=1.0)  # (B, A) each
    out = actor.score(sequences, attention_mask, num_actions, temperature=1.0, top_k=5)  # + alternatives

Both come from the logits divided by the sampling temperature, at the positions that produced the
response tokens: the distribution each token was drawn from. So the entropy the saver writes costs
no extra forward pass, and is the entropy of the sampling distribution (FORMAT.md).

The logits are never materialised: the decoder gives the last hidden states, and only the response
tokens' ones go through the `lm_head` weight, a chunk of rows at a time (models/chunked_head.py), for
the forward and for the backward. At a 152k vocabulary that is the difference between a few % and
several times the (tokens, vocab) logits in peak memory. `Actor(model, chunked=False)` keeps the
plain full-logits forward as the reference (tests, benchmarks).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn as nn
from transformers import AutoModelForCausalLM

from openrlhf_ext.models.chunked_head import chunked_head
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


@dataclass
class Alternatives:
    """The K most probable tokens of the sampling distribution softmax(logits / T) at each response slot."""

    ids: torch.Tensor  # (B, A, K) long token ids, most probable first
    logprobs: torch.Tensor  # (B, A, K) float32 their log-probs (<= 0, non-increasing along K)


@dataclass
class ActorOutput:
    """What `Actor.score` returns. Padding slots (attention_mask 0) hold 0 in every field."""

    log_probs: torch.Tensor  # (B, A) float32 log-prob of each response token
    entropy: torch.Tensor | None  # (B, A) float32 entropy in nats of the distribution it was drawn from
    alternatives: Alternatives | None  # top-K of that distribution, when score(top_k=K > 0)


class Actor(nn.Module):
    """Wraps a Hugging Face causal LM; `generate` and `save_pretrained` pass through to it.

    chunked=True (default): log-probs, entropy and alternatives from the last hidden states through
    the head weight a chunk at a time, never holding the (tokens, vocab) logits, in the forward or
    the backward. chunked=False: the model's full logits (the reference). A model whose logits are
    not a linear function of the last hidden state (Gemma 2's soft-capping), or whose head weight is
    sharded by ZeRO-3, takes the full-logits path either way.
    """

    def __init__(self, model: nn.Module, chunked: bool = True):
        super().__init__()
        self.model = model
        self.chunked = chunked

    @classmethod
    def from_pretrained(cls, path: str, bf16: bool = False, gradient_checkpointing: bool = False,
                        chunked: bool = True) -> "Actor":
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16 if bf16 else torch.float32)
        if gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False  # training forwards never reuse a KV cache
        return cls(model, chunked=chunked)

    def forward(
        self,
        sequences: torch.Tensor,       # (B, S) long: left-padded prompt, then right-padded response
        attention_mask: torch.Tensor,  # (B, S) 0/1
        num_actions: int,              # A: the response slots are the last A positions of `sequences`
        temperature: float = 1.0,
        with_entropy: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns (action_log_probs (B, A) float32, action_entropy (B, A) float32 or None)."""
        out = self.score(sequences, attention_mask, num_actions, temperature=temperature, with_entropy=with_entropy)
        return out.log_probs, out.entropy

    def score(
        self,
        sequences: torch.Tensor,       # (B, S) long
        attention_mask: torch.Tensor,  # (B, S) 0/1
        num_actions: int,
        temperature: float = 1.0,
        with_entropy: bool = True,
        top_k: int = 0,
    ) -> ActorOutput:
        """`forward`'s log-probs and entropy, plus the top-K alternatives when top_k > 0, from one pass.

        The alternatives are the K most probable tokens of softmax(logits / temperature) at every
        response slot, most probable first; they carry no gradient (log-probs and entropy do).

        Example (a random 1-layer Llama; 2 responses of 4 tokens, the second one 3 tokens long):
            >>> from transformers import LlamaConfig, LlamaForCausalLM
            >>> _ = torch.manual_seed(0)
            >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=16, intermediate_size=32,
            ...                                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2))
            >>> actor = Actor(model)
            >>> sequences = torch.randint(1, 100, (2, 10))
            >>> attention_mask = torch.ones_like(sequences)
            >>> attention_mask[1, -1] = 0
            >>> out = actor.score(sequences, attention_mask, num_actions=4, temperature=0.7, top_k=5)
            >>> out.log_probs.shape, out.entropy.shape  # (B, A) float32
            (torch.Size([2, 4]), torch.Size([2, 4]))
            >>> out.alternatives.ids.shape, out.alternatives.logprobs.shape  # (B, A, K) long, float32
            (torch.Size([2, 4, 5]), torch.Size([2, 4, 5]))
            >>> bool((out.alternatives.logprobs[0].diff(dim=-1) <= 0).all())  # most probable first
            True
            >>> out.log_probs[1, -1].item(), out.alternatives.ids[1, -1].tolist()  # padding slot: zeros
            (0.0, [0, 0, 0, 0, 0])
        """
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        kwargs = dict(input_ids=sequences, attention_mask=attention_mask,
                      position_ids=position_ids_from_mask(attention_mask), use_cache=False)
        labels = sequences[:, -num_actions:]  # (B, A)
        real = attention_mask[:, -num_actions:].bool()  # (B, A) response tokens, not padding
        head_scale = self._head_scale() if self.chunked else None
        if head_scale is None:
            return self._score_full(kwargs, labels, real, num_actions, temperature, with_entropy, top_k)
        return self._score_chunked(kwargs, labels, real, num_actions, temperature / head_scale, with_entropy, top_k)

    def _score_chunked(self, kwargs, labels, real, num_actions, temperature, with_entropy, top_k) -> ActorOutput:
        hidden = self.model.get_decoder()(**kwargs).last_hidden_state  # (B, S, H), after the final norm
        # The hidden state at position t predicts token t+1: the response's A tokens come from the A
        # positions just before them. Only real response tokens go through the head.
        hidden = hidden[:, -num_actions - 1 : -1, :][real]  # (N, H), N = real response tokens
        head = self.model.get_output_embeddings()
        res = chunked_head(hidden, head.weight, head.bias, labels[real], temperature=temperature,
                           with_entropy=with_entropy, top_k=top_k)
        log_probs = _scatter_rows(res.log_probs, real)  # (B, A)
        entropy = _scatter_rows(res.entropy, real) if with_entropy else None  # (B, A)
        alternatives = None
        if top_k:
            alternatives = Alternatives(_scatter_rows(res.top_ids, real), _scatter_rows(res.top_logprobs, real))
        return ActorOutput(log_probs, entropy, alternatives)

    def _score_full(self, kwargs, labels, real, num_actions, temperature, with_entropy, top_k) -> ActorOutput:
        logits = self.model(**kwargs).logits[:, -num_actions - 1 : -1, :]  # (B, A, V)
        z = logits.float() / temperature  # (B, A, V)
        log_probs = gather_log_probs(z, labels)  # (B, A)
        entropy = token_entropy(logits, temperature=temperature) if with_entropy else None  # (B, A)
        alternatives = None
        if top_k:
            with torch.no_grad():
                top = z.topk(top_k, dim=-1)
                alternatives = Alternatives(_zero_padding(top.indices, real),
                                            _zero_padding(top.values - torch.logsumexp(z, -1, keepdim=True), real))
        return ActorOutput(_zero_padding(log_probs, real), _zero_padding(entropy, real), alternatives)

    def _head_scale(self) -> float | None:
        """The constant c of logits = c * lm_head(last hidden state), or None when the chunked head
        cannot stand for the model's own head (non-linear logits, no linear head, ZeRO-3 shards)."""
        cfg, head = self.model.config, self.model.get_output_embeddings()
        why = None
        if not isinstance(head, nn.Linear):
            why = f"its output embedding is a {type(head).__name__}, not a Linear"
        elif getattr(cfg, "final_logit_softcapping", None) is not None:
            why = "it soft-caps its logits"
        elif hasattr(head.weight, "ds_id"):
            why = "ZeRO-3 shards the lm_head weight"
        if why:
            if not getattr(self, "_warned", False):
                warnings.warn(f"Actor: full-logits forward for {type(self.model).__name__}: {why}", stacklevel=3)
                self._warned = True
            return None
        # Granite divides its logits by config.logits_scaling; Cohere multiplies them by logit_scale.
        return float(getattr(self.model, "logit_scale", 1.0)) / float(getattr(cfg, "logits_scaling", 1.0) or 1.0)

    def generate(self, *args, **kwargs):
        return self.model.generate(*args, **kwargs)


def _scatter_rows(rows: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Per-token rows (N, ...) back into the (B, A, ...) grid, zeros at padding; differentiable."""
    out = rows.new_zeros(real.shape + rows.shape[1:])
    out[real] = rows
    return out


def _zero_padding(x: torch.Tensor | None, real: torch.Tensor) -> torch.Tensor | None:
    """x (B, A, ...) with 0 at padding slots, as the chunked path leaves them."""
    return None if x is None else x.masked_fill(~real.view(real.shape + (1,) * (x.dim() - 2)), 0)
