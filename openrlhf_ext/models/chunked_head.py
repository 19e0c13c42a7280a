"""The LM head, tiled: log-probs, entropy and top-K of softmax((h W^T + b) / T) without the logits.

A response of N tokens at a 152k vocabulary has N x 152k logits (1.2 GB in fp32 at N = 2,048); the
usual forward keeps them, a copy divided by the temperature, and their log-softmax, and its backward
a few more of that size. Here the last hidden states (N, H) meet the head weight (V, H) one
(rows x vocabulary) tile at a time, in one reused float32 buffer; a running max, sum of exponentials
and sum of p*z per row (the online softmax of flash attention) carry the result across a row's tiles,
so only per-row numbers leave the loop:

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
tile's logits from the saved hidden states and the weight, turns them into the gradient of the
logits in place, and accumulates the gradients of the hidden states, the weight and the bias: it
keeps no logits either. Gradients flow from the log-probs and from the entropy.

With z = logits / T, lse = logsumexp(z), log p = z - lse, H = -sum p log p:
    d log p_y / dz = onehot(y) - p
    d H / dz       = -p (log p + H)
The label's logit z_y is one dot product per row, taken apart from the tiles (and so is its onehot
term in the backward). Low-precision weights (bf16/fp16) are multiplied into float32 logits: on
CUDA by a half GEMM with float32 output where torch has it, elsewhere through a float32 copy of the
weight made once per pass.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

# Shifted logits are clamped here (-87, as token_entropy does) before exp(): e^-87 is still a
# normal float32, so exp() never makes denormals (~50x slower on x86) and a masked -inf never makes
# 0 * -inf = NaN.
from openrlhf_ext.trajectory.entropy import _MIN_SHIFTED_LOGIT, _ONE_HOT_ENTROPY_PER_TOKEN

# Float32 bytes of one logits tile (per intra-op thread on CPU), and the narrowest vocabulary slice
# a tile takes (so that the GEMM stays efficient and the per-tile small ops few). On CPU a thread's
# share of a tile fits its L2 cache, so the passes over it after the GEMM cost little (as in
# token_entropy): 2x faster than (110, V) row chunks here. On CUDA a large tile amortises launches.
CPU_TILE_BYTES = 2 << 20
CUDA_TILE_BYTES = 512 << 20
CPU_MIN_VOCAB_TILE = 1024
CUDA_MIN_VOCAB_TILE = 16384
_LOWEST = torch.finfo(torch.float32).min


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
    tile: tuple[int, int] | None = None,
) -> HeadOutput:
    """Log-probs (and entropy, and top-K) under softmax((hidden @ weight.T + bias) / temperature).

    Differentiable in `hidden`, `weight` and `bias` (log-probs and entropy; top-K is not). Any
    dtype of hidden/weight (computed in float32 inside the tile), CPU or CUDA.
    tile: (rows, vocabulary columns) of one logits tile (default: `tile_shape`).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"expected hidden (N, H) and weight (V, H), got {tuple(hidden.shape)} and {tuple(weight.shape)}")
    if top_k < 0 or top_k > weight.shape[0]:
        raise ValueError(f"top_k must be in [0, vocab={weight.shape[0]}], got {top_k}")
    n, vocab = hidden.shape[0], weight.shape[0]
    rows, cols = tile or tile_shape(n, vocab, hidden.is_cuda)
    tile = (max(1, min(rows, n)), max(1, min(cols, vocab)))
    tensors = [t for t in (hidden, weight, bias) if t is not None]
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        log_probs, entropy, top_ids, top_lp = _ChunkedHead.apply(
            hidden, weight, bias, labels, 1.0 / temperature, with_entropy, top_k, tile)
    else:
        with torch.no_grad():
            log_probs, entropy, _, top_ids, top_lp = _forward(hidden, weight, bias, labels, 1.0 / temperature,
                                                              with_entropy, top_k, tile)
    return HeadOutput(log_probs, entropy if with_entropy else None,
                      top_ids if top_k else None, top_lp if top_k else None)


def tile_shape(n: int, vocab: int, cuda: bool) -> tuple[int, int]:
    """(rows, columns) of a logits tile: as many rows as the budget allows at the narrowest
    vocabulary slice (each row block reads the whole weight once), then as wide as it allows."""
    budget = (CUDA_TILE_BYTES if cuda else CPU_TILE_BYTES * max(1, torch.get_num_threads())) // 4
    rows = max(1, min(n, budget // (CUDA_MIN_VOCAB_TILE if cuda else CPU_MIN_VOCAB_TILE)))
    return rows, max(1, min(vocab, budget // rows))


class _Head:
    """The head's products on one row block, in float32, for any weight dtype (prepared once per pass).

    z = (h W^T + b) / T is computed as (h / T) W^T + b / T when the GEMM runs in float32 (the
    temperature costs an (R, H) multiply, not an (R, V) pass); the scaled block is also what the
    weight's gradient needs, dz/dW = h / T. The hidden-side gradient is accumulated unscaled and
    multiplied by 1 / T once per block.
    """

    def __init__(self, hidden, weight, bias, inv_t: float, rows: int):
        self.inv_t = inv_t
        # bf16/fp16 on CUDA: tensor-core GEMMs with float32 output, no float32 copy of the weight.
        self.mixed = weight.dtype != torch.float32 and weight.is_cuda and _mixed_mm_works(weight.device, weight.dtype)
        self.w = weight if self.mixed or weight.dtype == torch.float32 else weight.float()  # (V, H) as the GEMMs read it
        self.b = None if bias is None else bias.float() * inv_t  # (V,) b / T
        self.h_buf = None if self.mixed else torch.empty(rows, hidden.shape[1], dtype=torch.float32,
                                                          device=hidden.device)  # (R, H) h / T

    def rows(self, h: torch.Tensor) -> torch.Tensor:
        """A row block of hidden states as the GEMMs take it: (r, H) h / T in float32, or raw (mixed)."""
        if self.mixed:
            return h
        hc = self.h_buf[: h.shape[0]]
        hc.copy_(h)
        return hc.mul_(self.inv_t) if self.inv_t != 1.0 else hc

    def _scaled(self, hc: torch.Tensor) -> torch.Tensor:
        return hc.float().mul_(self.inv_t) if self.mixed else hc  # (r, H) h / T in float32

    def label_logits(self, hc: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """z at each row's label: (r,) float32, one dot product per row."""
        z = (self._scaled(hc) * self.w[labels].float()).sum(-1)
        return z if self.b is None else z.add_(self.b[labels])

    def logits(self, hc: torch.Tensor, v0: int, v1: int, out: torch.Tensor) -> torch.Tensor:
        """z of the block at vocabulary slice [v0, v1) into `out` (r, v1 - v0) float32."""
        if self.mixed:
            torch.mm(hc, self.w[v0:v1].T, torch.float32, out=out)
            if self.inv_t != 1.0:
                out.mul_(self.inv_t)
        else:
            torch.mm(hc, self.w[v0:v1].T, out=out)
        return out if self.b is None else out.add_(self.b[v0:v1])

    def backward_tile(self, g, hc, v0: int, v1: int, gh, grad_w) -> None:
        """From g = dL/dz of a tile (r, c): gh (r, H) += g W_t (unscaled), grad_w[v0:v1] += g^T h / T."""
        if self.mixed:
            g = g.to(self.w.dtype)  # a half copy of the tile: the GEMMs run on tensor cores
            if gh is not None:
                gh.add_(torch.mm(g, self.w[v0:v1], torch.float32))
            if grad_w is not None:
                grad_w[v0:v1].add_(torch.mm(g.T, hc, torch.float32), alpha=self.inv_t)
            return
        if gh is not None:
            gh.addmm_(g, self.w[v0:v1])
        if grad_w is not None:
            grad_w[v0:v1].addmm_(g.T, hc)

    def backward_labels(self, g_lp, hc, labels, gh, grad_w, grad_b) -> None:
        """The onehot term of d log p_y / dz: g_lp at each row's label."""
        if gh is not None:
            gh.addcmul_(g_lp[:, None], self.w[labels].float())
        if grad_w is not None:
            grad_w.index_add_(0, labels, self._scaled(hc) * g_lp[:, None])
        if grad_b is not None:
            grad_b.index_add_(0, labels, g_lp * self.inv_t)


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


def _tiles(n: int, vocab: int, tile: tuple[int, int]):
    """(row start, row stop, [(col start, col stop), ...]) of every row block."""
    rows, cols = tile
    col_ranges = [(v, min(v + cols, vocab)) for v in range(0, vocab, cols)]
    return [(s, min(s + rows, n), col_ranges) for s in range(0, n, rows)]


def _fold_tile(z, p, m, s, a, first: bool, with_entropy: bool) -> None:
    """Fold one tile z (r, c) into its rows' running max m, s = sum e^(z-m) and a = sum e^(z-m)(z-m).

    With d = m_old - m_new <= 0: s' = e^d s, a' = e^d (a + d s) (the old terms re-shifted), plus the
    tile's own sums. z is overwritten (by z - m_new) and p is scratch.
    """
    tile_max = z.amax(1)  # (r,)
    # A row's first tiles may be all -inf (a masked slice): a finite floor keeps -inf - -inf = NaN out.
    new_m = tile_max.clamp_(min=_LOWEST) if first else torch.maximum(m, tile_max)
    z.sub_(new_m[:, None]).clamp_(min=_MIN_SHIFTED_LOGIT)
    torch.exp(z, out=p)
    tile_s = p.sum(1)
    tile_a = p.mul_(z).sum(1) if with_entropy else None
    if first:
        s.copy_(tile_s)
        if with_entropy:
            a.copy_(tile_a)
    else:
        d = m - new_m
        scale = d.exp()
        if with_entropy:
            a.addcmul_(d, s).mul_(scale).add_(tile_a)
        s.mul_(scale).add_(tile_s)
    m.copy_(new_m)


def _fold_top(z, v0: int, top_z, top_ids, k: int) -> None:
    """Merge the tile's top k (before any shift) into its rows' running top k, most probable first."""
    tv, ti = z.topk(min(k, z.shape[1]), dim=1)
    vals = torch.cat([top_z, tv], dim=1)
    ids = torch.cat([top_ids, ti.add_(v0)], dim=1)
    best, idx = vals.topk(k, dim=1)
    top_z.copy_(best)
    top_ids.copy_(ids.gather(1, idx))


def _forward(hidden, weight, bias, labels, inv_t, with_entropy, top_k, tile):
    """The tile loop. Returns (log_probs (N,), entropy (N,), lse (N,), top_ids (N, K), top_lp (N, K))."""
    n, vocab, dev = hidden.shape[0], weight.shape[0], hidden.device
    head = _Head(hidden, weight, bias, inv_t, tile[0])
    z_buf = torch.empty(tile[0] * tile[1], dtype=torch.float32, device=dev)  # a tile, flat: any (r, c) view is contiguous
    p_buf = torch.empty_like(z_buf)  # e^(z - max), then times (z - max)
    f32 = dict(dtype=torch.float32, device=dev)
    picked = torch.empty(n, **f32)  # (N,) z[label]
    row_max = torch.empty(n, **f32)  # (N,) running max of z
    sum_exp = torch.empty(n, **f32)  # (N,) sum e^(z - max), in [1, V]
    sum_ez = torch.zeros(n, **f32)  # (N,) sum e^(z - max) (z - max)
    top_z = torch.full((n, top_k), float("-inf"), **f32)  # (N, K) z of the running top K
    top_ids = torch.zeros(n, top_k, dtype=torch.long, device=dev)  # (N, K)
    for s, e, col_ranges in _tiles(n, vocab, tile):
        r = e - s
        hc = head.rows(hidden[s:e])
        picked[s:e] = head.label_logits(hc, labels[s:e])
        for v0, v1 in col_ranges:
            z = head.logits(hc, v0, v1, z_buf[: r * (v1 - v0)].view(r, v1 - v0))
            if top_k:
                _fold_top(z, v0, top_z[s:e], top_ids[s:e], top_k)
            _fold_tile(z, p_buf[: z.numel()].view_as(z), row_max[s:e], sum_exp[s:e], sum_ez[s:e],
                       v0 == 0, with_entropy)
    log_sum = sum_exp.log()
    lse = row_max + log_sum  # (N,) logsumexp(z)
    log_probs = (picked - lse).clamp_(max=0.0)  # z_y is a separate dot product: it may pass lse by an ulp
    entropy = None
    if with_entropy:
        entropy = log_sum - sum_ez / sum_exp  # H = lse - E_p[z], both shifted by the max
        # H >= 0, and what the clamp above adds is at most V * 1.4e-36: below that the row is one-hot.
        entropy.masked_fill_(entropy < vocab * _ONE_HOT_ENTROPY_PER_TOKEN, 0.0)
        # NaN or +inf logits, or only -inf ones: no distribution
        entropy.masked_fill_(~torch.isfinite(row_max) | (row_max == _LOWEST), float("nan"))
    return log_probs, entropy, lse, top_ids, top_z - lse[:, None]


class _ChunkedHead(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, inv_t, with_entropy, top_k, tile):
        log_probs, entropy, lse, top_ids, top_lp = _forward(hidden, weight, bias, labels, inv_t, with_entropy,
                                                            top_k, tile)
        ctx.save_for_backward(hidden, weight, bias, labels, lse, entropy if with_entropy else None)
        ctx.inv_t, ctx.tile = inv_t, tile
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
        f32 = dict(dtype=torch.float32, device=dev)
        grad_h = torch.zeros_like(hidden) if need_h else None  # (N, H)
        grad_w = torch.zeros(weight.shape, **f32) if need_w else None  # (V, H) float32 accumulator
        grad_b = torch.zeros(vocab, **f32) if need_b else None  # (V,)
        if n == 0 or (g_lp is None and g_ent is None):
            return grad_h, _cast(grad_w, weight), _cast(grad_b, bias), None, None, None, None, None
        rows, cols = ctx.tile
        inv_t = ctx.inv_t
        head = _Head(hidden, weight, bias, inv_t, rows)
        g_buf = torch.empty(rows * cols, **f32)  # a tile: z, then log p, then dL/dz
        p_buf = torch.empty_like(g_buf)  # p
        gh_buf = torch.empty(rows, hidden.shape[1], **f32) if need_h else None  # (R, H) dL/dh of a row block, unscaled
        g_lp = torch.zeros(n, **f32) if g_lp is None else g_lp.float()  # (N,)
        # dL/dz = g_lp (onehot - p) - g_ent p (log p + H) = p (a + b log p) + g_lp onehot, per row, with
        # a = -(g_lp + g_ent H), b = -g_ent: one pass makes a + b log p, one more multiplies by p.
        if g_ent is not None:
            b = -g_ent.float()  # (N,)
            a = (b * entropy).sub_(g_lp)  # (N,)
        else:
            a = -g_lp  # (N,) dL/dz = -g_lp p off the label
        for s, e, col_ranges in _tiles(n, vocab, ctx.tile):
            r = e - s
            hc = head.rows(hidden[s:e])
            gh = gh_buf[:r].zero_() if need_h else None
            head.backward_labels(g_lp[s:e], hc, labels[s:e], gh, grad_w, grad_b)
            for v0, v1 in col_ranges:
                g = head.logits(hc, v0, v1, g_buf[: r * (v1 - v0)].view(r, v1 - v0))
                p = p_buf[: g.numel()].view_as(g)
                g.sub_(lse[s:e, None]).clamp_(min=_MIN_SHIFTED_LOGIT)  # log p
                torch.exp(g, out=p)
                if g_ent is not None:
                    torch.addcmul(a[s:e, None], g, b[s:e, None], out=g).mul_(p)
                else:
                    torch.mul(p, a[s:e, None], out=g)
                if grad_b is not None:
                    grad_b[v0:v1].add_(g.sum(0), alpha=inv_t)
                head.backward_tile(g, hc, v0, v1, gh, grad_w)
            if need_h:
                grad_h[s:e] = gh.mul_(inv_t)
        return grad_h, _cast(grad_w, weight), _cast(grad_b, bias), None, None, None, None, None


def _cast(grad32, like):
    """A float32 gradient accumulator in its parameter's dtype (no copy when it is float32)."""
    return None if grad32 is None else grad32.to(like.dtype)
