"""Token entropy: the entropy of the distribution each response token was sampled from.

H = -sum_v p_v log p_v with p = softmax(logits / temperature), in nats.

The logits of a rollout batch are the largest tensor of an RL step ((tokens, vocab) with vocab up to
~152k), so the no-grad path never materialises a second tensor of that size: it walks small row
chunks through two reused float32 buffers. Chunks sized to stay in the CPU cache also make the
several elementwise passes nearly free, which is why this beats a single bare `logsumexp` pass.
"""
from __future__ import annotations

import torch

# Bytes of float32 scratch per chunk (per intra-op thread on CPU). On CPU a thread's share should
# stay in its cache so the passes over a chunk hit it; on CUDA the passes are memory-bound anyway, so a larger chunk just amortises launches.
_CPU_CHUNK_BYTES = 2 << 20
_CUDA_CHUNK_BYTES = 256 << 20
_MIN_SHIFTED_LOGIT = -87.0
# What the clamp at _MIN_SHIFTED_LOGIT adds to an entropy, per vocabulary entry, at most (an entry at
# -87 contributes -e^-87 * -87 = 1.4e-36): an entropy below vocab * this is a one-hot row's, exactly 0.
_ONE_HOT_ENTROPY_PER_TOKEN = 1.5e-36


def token_entropy(logits: torch.Tensor, temperature: float = 1.0, chunk_size: int | None = None) -> torch.Tensor:
    """Entropy in nats of softmax(logits / temperature) over the last dimension.

    Works for any leading shape and any floating dtype (bf16/fp16 logits are upcast chunk by chunk),
    on CPU and CUDA, and always returns float32 of shape ``logits.shape[:-1]``.

    - ``-inf`` logits (masked vocabulary entries) contribute nothing, as they should.
    - A row whose logits are all ``-inf`` or contain NaN/``+inf`` has no defined distribution: NaN.
    - When ``logits.requires_grad`` and grad mode is on, a differentiable formula is used instead
      (its memory is that of a log-softmax, which a loss that uses entropy needs anyway).

    Args:
        logits: (..., V) unnormalised scores.
        temperature: the sampling temperature; entropy is that of the distribution sampled from.
        chunk_size: rows per chunk for the no-grad path (default: sized from the vocabulary).

    Example:
        >>> import torch
        >>> from openrlhf_ext.trajectory import token_entropy
        >>> logits = torch.zeros(2, 3, 4)            # uniform over 4 tokens
        >>> token_entropy(logits)[0, 0].item()        # log(4)
        1.3862943649291992
        >>> token_entropy(torch.tensor([[0.0, float("-inf")]])).tolist()
        [0.0]
    """
    if logits.dim() == 0:
        raise ValueError("token_entropy expects logits with a vocabulary dimension, got a scalar")
    if not logits.is_floating_point():
        raise TypeError(f"token_entropy expects floating-point logits, got {logits.dtype}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if logits.requires_grad and torch.is_grad_enabled():
        return _entropy_differentiable(logits, temperature)
    with torch.no_grad():
        return _entropy_chunked(logits, temperature, chunk_size)


def _entropy_differentiable(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    z = logits.float() / temperature  # (..., V)
    log_norm = torch.logsumexp(z, dim=-1, keepdim=True)  # (..., 1)
    p = torch.exp(z - log_norm)  # (..., V) softmax; exactly 0 where z is -inf
    # H = log Z - sum p z. Where z = -inf, p = 0: replace z by 0 so 0 * -inf does not become NaN
    # (and its gradient stays finite).
    z_finite = torch.where(torch.isneginf(z), torch.zeros_like(z), z)
    return (log_norm.squeeze(-1) - (p * z_finite).sum(-1)).float()


def _entropy_chunked(logits: torch.Tensor, temperature: float, chunk_size: int | None) -> torch.Tensor:
    vocab = logits.shape[-1]
    lead_shape = logits.shape[:-1]
    rows = logits.reshape(-1, vocab)  # (N, V) a view when logits are contiguous
    n_rows = rows.shape[0]
    out = torch.empty(n_rows, dtype=torch.float32, device=logits.device)  # (N,)
    if n_rows == 0 or vocab == 0:
        return out.fill_(float("nan")).reshape(lead_shape)
    if chunk_size is None:
        # On CPU each intra-op thread takes a share of the chunk: keep ~2 MB per thread.
        budget = _CUDA_CHUNK_BYTES if logits.is_cuda else _CPU_CHUNK_BYTES * max(1, torch.get_num_threads())
        chunk_size = max(1, budget // (4 * vocab))
    chunk_size = min(chunk_size, n_rows)
    z_buf = torch.empty(chunk_size, vocab, dtype=torch.float32, device=logits.device)  # (C, V) shifted logits
    p_buf = torch.empty_like(z_buf)  # (C, V) exp(z), then exp(z) * z
    row_max = torch.empty(n_rows, 1, dtype=torch.float32, device=logits.device)  # (N, 1) max logit
    sum_exp = torch.empty(n_rows, dtype=torch.float32, device=logits.device)  # (N,) sum e^z, in [1, V]
    inv_t = 1.0 / temperature
    # Only the passes over the (C, V) chunk run in the loop, writing into per-row buffers; the
    # per-row arithmetic runs once after it (small ops per chunk are what cost on a busy CPU).
    for start in range(0, n_rows, chunk_size):
        stop = min(start + chunk_size, n_rows)
        c = stop - start
        z, p = z_buf[:c], p_buf[:c]
        z.copy_(rows[start:stop])  # upcast into the reused buffer
        if temperature != 1.0:
            z.mul_(inv_t)
        m = row_max[start:stop]
        torch.amax(z, dim=-1, keepdim=True, out=m)
        z.sub_(m)  # now max is 0: exp cannot overflow
        # Entries more than 87 nats below the max (masked -inf ones included) are clamped to -87:
        # exp(-87) ~ 1.6e-38 is still a normal float, so exp() never produces denormals (which are
        # ~50x slower on x86) and 0 * -inf never produces NaN. Their share of H is below 1e-35.
        z.clamp_(min=_MIN_SHIFTED_LOGIT)
        torch.exp(z, out=p)
        torch.sum(p, dim=-1, out=sum_exp[start:stop])
        p.mul_(z)
        torch.sum(p, dim=-1, out=out[start:stop])  # sum e^z * z
    # H = log(sum e^z) - sum(e^z * z) / sum(e^z), with z the max-shifted logits.
    out.div_(sum_exp).neg_().add_(sum_exp.log_())
    # A row with NaN, +inf, or only -inf logits has no distribution.
    out.masked_fill_(~torch.isfinite(row_max.squeeze(-1)), float("nan"))
    # H >= 0; what the clamp above adds is at most V * 1.4e-36 (an entry at -87 contributes
    # -e^-87 * -87): below that the distribution is one-hot, so report exactly 0, not 1e-31.
    out.masked_fill_(out < vocab * _ONE_HOT_ENTROPY_PER_TOKEN, 0.0)
    return out.reshape(lead_shape)
