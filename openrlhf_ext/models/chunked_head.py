"""The LM head, chunked: log-probs, entropy and top-K of softmax((h W^T + b) / T) without the logits.

A response of N tokens at a 152k vocabulary has N x 152k logits (1.2 GB in fp32 at N = 2,048); the
usual forward keeps them, a copy divided by the temperature, and their log-softmax, and its backward
a few more of that size. Here the last hidden states (N, H) go through the head weight (V, H) a row
chunk at a time, into one reused (C, V) float32 buffer, and only per-row results leave the loop:

    >>> import torch
    >>> hidden, weight = torch.randn(6, 8), torch.randn(50, 8)
    >>> labels = torch.randint(0, 50, (6,))
    >>> out = chunked_head(hidden, weight, None, labels, temperature=0.7, top_k=3)
    >>> out.log_probs.shape, out.entropy.shape, out.top_ids.shape, out.top_logprobs.shape
    (torch.Size([6]), torch.Size([6]), torch.Size([6, 3]), torch.Size([6, 3]))
    >>> z = torch.log_softmax(hidden @ weight.T / 0.7, -1)
    >>> torch.allclose(out.log_probs, z.gather(1, labels[:, None]).squeeze(1), atol=1e-5)
    True

The backward (a custom autograd Function, as fused linear-cross-entropy kernels do) recomputes each
chunk's logits from the saved hidden states and the weight, turns them into the gradient of the
logits in place, and accumulates the gradients of the hidden states, the weight and the bias: it
keeps no logits either. Gradients flow from the log-probs and from the entropy.

With z = logits / T, lse = logsumexp(z), log p = z - lse, H = -sum p log p:
    d log p_y / dz = onehot(y) - p
    d H / dz       = -p (log p + H)
Low-precision weights (bf16/fp16) are multiplied into float32 logits: on CUDA by a bf16 GEMM with
float32 output where torch has it, elsewhere through a float32 copy of the weight made once per pass.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

# Float32 bytes of one logits chunk. Rows per chunk = budget / (4 V): ~27 rows at V = 152k on CPU,
# enough for the GEMM to run well, small enough that the chunk is a few % of a long response's logits.
CPU_CHUNK_BYTES = 16 << 20
CUDA_CHUNK_BYTES = 512 << 20
# Shifted log-probs are clamped here before exp(): e^-87 is still a normal float32, so exp() never
# makes denormals (~50x slower on x86) and a masked -inf never makes 0 * -inf = NaN.
_MIN_SHIFTED_LOGIT = -87.0


@dataclass
class HeadOutput:
    """What `chunked_head` returns, one row per hidden state."""

    log_probs: torch.Tensor  # (N,) float32 log softmax(z)[label]
    entropy: torch.Tensor | None  # (N,) float32 entropy in nats of softmax(z); None unless asked
    top_ids: torch.Tensor | None  # (N, K) long, the K most probable tokens, most probable first
    top_logprobs: torch.Tensor | None  # (N, K) float32 their log-probs


def chunked_head(
    hidden: torch.Tensor,        # (N, H) last hidden states (after the final norm)
    weight: torch.Tensor,        # (V, H) the lm_head weight (the embedding when tied)
    bias: torch.Tensor | None,   # (V,) or None
    labels: torch.Tensor,        # (N,) long: the token whose log-prob is wanted at each row
    temperature: float = 1.0,
    with_entropy: bool = True,
    top_k: int = 0,
    chunk_size: int | None = None,
) -> HeadOutput:
    """Log-probs (and entropy, and top-K) under softmax((hidden @ weight.T + bias) / temperature).

    Differentiable in `hidden`, `weight` and `bias` (log-probs and entropy; top-K is not). Any
    dtype of hidden/weight (computed in float32 inside the chunk), CPU or CUDA.
    chunk_size: rows per chunk (default: a float32 chunk of CPU_CHUNK_BYTES / CUDA_CHUNK_BYTES).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"expected hidden (N, H) and weight (V, H), got {tuple(hidden.shape)} and {tuple(weight.shape)}")
    if top_k < 0 or top_k > weight.shape[0]:
        raise ValueError(f"top_k must be in [0, vocab={weight.shape[0]}], got {top_k}")
    if chunk_size is None:
        budget = CUDA_CHUNK_BYTES if hidden.is_cuda else CPU_CHUNK_BYTES
        chunk_size = max(1, budget // (4 * weight.shape[0]))
    tensors = [t for t in (hidden, weight, bias) if t is not None]
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        log_probs, entropy, top_ids, top_lp = _ChunkedHead.apply(
            hidden, weight, bias, labels, 1.0 / temperature, with_entropy, top_k, chunk_size)
    else:
        with torch.no_grad():
            log_probs, entropy, _, top_ids, top_lp = _forward(hidden, weight, bias, labels, 1.0 / temperature,
                                                              with_entropy, top_k, chunk_size)
    return HeadOutput(log_probs, entropy if with_entropy else None,
                      top_ids if top_k else None, top_lp if top_k else None)


class _Matmul:
    """The head's GEMMs on one chunk, in float32, for any weight dtype (prepared once per pass).

    z = (h W^T + b) / T is computed as (h / T) W^T + b / T when the GEMM runs in float32 (the
    temperature costs a (C, H) multiply, not a (C, V) pass); the scaled chunk is also what the
    weight's gradient needs, dz/dW = h / T.
    """

    def __init__(self, hidden, weight, bias, inv_t: float, chunk_size: int):
        self.inv_t = inv_t
        self.weight = weight
        # bf16/fp16 on CUDA: tensor-core GEMM with float32 output, no float32 copy of the weight.
        self.mixed = weight.dtype != torch.float32 and weight.is_cuda and _mixed_mm_works(weight.device, weight.dtype)
        self.w32 = weight if self.mixed or weight.dtype == torch.float32 else weight.float()  # (V, H)
        self.b32 = None if bias is None else bias.float() * inv_t  # (V,) b / T
        self.h_buf = None if self.mixed else torch.empty(chunk_size, hidden.shape[1], dtype=torch.float32,
                                                          device=hidden.device)  # (C, H) h / T

    def hidden_chunk(self, h: torch.Tensor) -> torch.Tensor:
        """The chunk's hidden states as the GEMM takes them: (c, H), h / T in float32 or raw (mixed)."""
        if self.mixed:
            return h
        hc = self.h_buf[: h.shape[0]]
        hc.copy_(h)
        if self.inv_t != 1.0:
            hc.mul_(self.inv_t)
        return hc

    def logits(self, hc: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """z = logits / T of the chunk into `out` (c, V) float32."""
        if self.mixed:
            torch.mm(hc, self.weight.T, torch.float32, out=out)
            if self.inv_t != 1.0:
                out.mul_(self.inv_t)
        else:
            torch.mm(hc, self.w32.T, out=out)
        if self.b32 is not None:
            out.add_(self.b32)
        return out

    def backward_chunk(self, g: torch.Tensor, hc: torch.Tensor, grad_w32: torch.Tensor | None) -> torch.Tensor:
        """From g = dL/dz (c, V): returns dL/dh (c, H) float32 and adds dL/dW into grad_w32 (V, H)."""
        if self.mixed:
            g = g.to(self.weight.dtype)  # a (c, V) half copy: the GEMMs run on tensor cores
            if grad_w32 is not None:
                grad_w32.add_(torch.mm(g.T, hc, torch.float32), alpha=self.inv_t)
            return torch.mm(g, self.weight, torch.float32).mul_(self.inv_t)
        if grad_w32 is not None:
            grad_w32.addmm_(g.T, hc)  # hc is already h / T
        return torch.mm(g, self.w32).mul_(self.inv_t)


_MIXED_MM: dict = {}


def _mixed_mm_works(device, dtype) -> bool:
    """Whether torch.mm(half, half, torch.float32) runs and is right on this device (torch >= 2.8, CUDA)."""
    key = (str(device), dtype)
    if key not in _MIXED_MM:
        try:
            a = torch.randn(8, 16, device=device).to(dtype)
            b = torch.randn(16, 24, device=device).to(dtype)
            out = torch.empty(8, 24, device=device)
            torch.mm(a, b, torch.float32, out=out)
            _MIXED_MM[key] = torch.allclose(out, a.float() @ b.float(), atol=1e-3)
        except (RuntimeError, TypeError):
            _MIXED_MM[key] = False
    return _MIXED_MM[key]


def _forward(hidden, weight, bias, labels, inv_t, with_entropy, top_k, chunk_size):
    """The chunk loop. Returns (log_probs (N,), entropy (N,), lse (N,), top_ids (N, K), top_lp (N, K))."""
    n, vocab, dev = hidden.shape[0], weight.shape[0], hidden.device
    chunk_size = max(1, min(chunk_size, n))
    mm = _Matmul(hidden, weight, bias, inv_t, chunk_size)
    z_buf = torch.empty(chunk_size, vocab, dtype=torch.float32, device=dev)  # (C, V) z, then z - max
    p_buf = torch.empty_like(z_buf)  # (C, V) e^(z - max), then times (z - max)
    picked = torch.empty(n, dtype=torch.float32, device=dev)  # (N,) z[label]
    row_max = torch.empty(n, 1, dtype=torch.float32, device=dev)  # (N, 1)
    sum_exp = torch.empty(n, dtype=torch.float32, device=dev)  # (N,) sum e^(z - max), in [1, V]
    sum_ez = torch.zeros(n, dtype=torch.float32, device=dev)  # (N,) sum e^(z - max) (z - max)
    top_ids = torch.empty(n, top_k, dtype=torch.long, device=dev)  # (N, K)
    top_z = torch.empty(n, top_k, dtype=torch.float32, device=dev)  # (N, K) their z
    labels = labels.reshape(-1, 1)  # (N, 1)
    # Only the passes over the (C, V) chunk run in the loop, writing into per-row buffers; the per-row
    # arithmetic runs once after it (as token_entropy does: small ops per chunk cost on a busy CPU).
    for s in range(0, n, chunk_size):
        e = min(s + chunk_size, n)
        z, p, m = z_buf[: e - s], p_buf[: e - s], row_max[s:e]
        mm.logits(mm.hidden_chunk(hidden[s:e]), z)
        torch.gather(z, 1, labels[s:e], out=picked[s:e, None])
        if top_k:
            torch.topk(z, top_k, dim=1, out=(top_z[s:e], top_ids[s:e]))
        torch.amax(z, dim=1, keepdim=True, out=m)
        z.sub_(m).clamp_(min=_MIN_SHIFTED_LOGIT)
        torch.exp(z, out=p)
        torch.sum(p, dim=1, out=sum_exp[s:e])
        if with_entropy:
            torch.sum(p.mul_(z), dim=1, out=sum_ez[s:e])
    row_max = row_max.squeeze(1)
    log_sum = sum_exp.log()
    lse = row_max + log_sum  # (N,) logsumexp(z)
    entropy = log_sum - sum_ez / sum_exp if with_entropy else None  # H = lse - E_p[z], shifted by max
    if with_entropy:
        # H >= 0, and what the clamp above adds is at most V * 1.4e-36: below that the row is one-hot.
        entropy.masked_fill_(entropy < vocab * 1.5e-36, 0.0)
        entropy.masked_fill_(~torch.isfinite(row_max), float("nan"))  # NaN/inf logits: no distribution
    return picked - lse, entropy, lse, top_ids, top_z - lse[:, None]


class _ChunkedHead(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, inv_t, with_entropy, top_k, chunk_size):
        log_probs, entropy, lse, top_ids, top_lp = _forward(hidden, weight, bias, labels, inv_t, with_entropy,
                                                            top_k, chunk_size)
        ctx.save_for_backward(hidden, weight, bias, labels, lse, entropy if with_entropy else None)
        ctx.inv_t, ctx.chunk_size = inv_t, chunk_size
        ctx.mark_non_differentiable(top_ids, top_lp)
        ctx.set_materialize_grads(False)  # an unused output's gradient arrives as None: skip its work
        if entropy is None:
            entropy = torch.zeros_like(log_probs)  # autograd outputs must be tensors; the caller drops it
        return log_probs, entropy, top_ids, top_lp

    @staticmethod
    def backward(ctx, g_lp, g_ent, _g_ids, _g_top):
        hidden, weight, bias, labels, lse, entropy = ctx.saved_tensors
        if entropy is None:
            g_ent = None
        n, vocab, dev = hidden.shape[0], weight.shape[0], hidden.device
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.zeros_like(hidden) if need_h else None  # (N, H)
        grad_w32 = torch.zeros(weight.shape, dtype=torch.float32, device=dev) if need_w else None  # (V, H)
        grad_b = torch.zeros(vocab, dtype=torch.float32, device=dev) if need_b else None  # (V,)
        if n == 0 or (g_lp is None and g_ent is None):
            return grad_h, _cast(grad_w32, weight), _cast(grad_b, bias), None, None, None, None, None
        chunk_size = max(1, min(ctx.chunk_size, n))
        mm = _Matmul(hidden, weight, bias, ctx.inv_t, chunk_size)
        g_buf = torch.empty(chunk_size, vocab, dtype=torch.float32, device=dev)  # (C, V) z, then dL/dz
        p_buf = torch.empty_like(g_buf)  # (C, V) p
        g_lp = torch.zeros(n, dtype=torch.float32, device=dev) if g_lp is None else g_lp.float()  # (N,)
        # dL/dz = g_lp (onehot - p) - g_ent p (log p + H) = p (a + b log p) + g_lp onehot, per row
        # a = -(g_lp + g_ent H), b = -g_ent: one pass makes a + b log p, one more multiplies by p.
        if g_ent is not None:
            b = -g_ent.float()  # (N,)
            a = (b * entropy).sub_(g_lp)  # (N,)
        labels = labels.reshape(-1, 1)
        for s in range(0, n, chunk_size):
            e = min(s + chunk_size, n)
            g, p = g_buf[: e - s], p_buf[: e - s]
            hc = mm.hidden_chunk(hidden[s:e])
            mm.logits(hc, g)
            g.sub_(lse[s:e, None]).clamp_(min=_MIN_SHIFTED_LOGIT)  # log p
            torch.exp(g, out=p)
            if g_ent is not None:
                torch.addcmul(a[s:e, None], g, b[s:e, None], out=g).mul_(p)
            else:
                torch.mul(p, g_lp[s:e, None].neg(), out=g)
            g.scatter_add_(1, labels[s:e], g_lp[s:e, None])
            if grad_b is not None:
                grad_b.add_(g.sum(0), alpha=ctx.inv_t)
            gh = mm.backward_chunk(g, hc, grad_w32)
            if grad_h is not None:
                grad_h[s:e] = gh
        return grad_h, _cast(grad_w32, weight), _cast(grad_b, bias), None, None, None, None, None


def _cast(grad32, like):
    """A float32 gradient accumulator in its parameter's dtype (no copy when it is float32)."""
    return None if grad32 is None else grad32.to(like.dtype)
