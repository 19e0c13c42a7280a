"""The losses of the update: PPO's clipped policy and value losses, the KL and entropy terms, and the
high-entropy ("forking") token weights of arXiv 2506.01939. Pure torch: tensors in, scalar losses out.

The DeepSpeed loop that feeds them micro-batches runs in the workers (openrlhf_ext/ray/update.py).

    >>> lp = torch.zeros(1, 3)
    >>> loss, stats = actor_loss(lp, lp, torch.tensor([[1.0, 2.0, 3.0]]), torch.ones(1, 3, dtype=torch.bool))
    >>> loss.item(), stats
    (-2.0, {'policy_loss': -2.0, 'clip_ratio': 0.0})
"""
from __future__ import annotations

import torch

from openrlhf_ext.algo.kl import kl_estimate
from openrlhf_ext.trajectory.marks import check_ratio, high_entropy_mask
from openrlhf_ext.utils.tensors import masked_mean

LOSS_AGGREGATIONS = ("token_mean", "seq_mean", "seq_sum_norm")


def high_entropy_loss_mask(entropy: torch.Tensor, action_mask: torch.Tensor, top_ratio: float) -> torch.Tensor:
    """(B, A) bool: the real tokens whose entropy is in the top ``top_ratio`` of the batch.

    "Beyond the 80/20 Rule" (arXiv 2506.01939) trains on the forking tokens only. The rule is the
    one of the saved marks (`openrlhf_ext.trajectory.marks.high_entropy_mask`, scope "step"), so
    the tokens trained on are exactly the tokens the trajectory files mark at the same ratio: over
    the n real tokens with a finite entropy, ``k = max(1, ceil(top_ratio * n))`` (exact for the
    decimal written), and every token ``>=`` the k-th largest entropy is kept (ties all kept, NaN
    never). Compute it once over the whole step's batch, not per micro-batch.

    Example:
        >>> ent = torch.tensor([[0.1, 2.0, 0.3, 9.9], [1.5, 0.2, 0.0, 0.0]])
        >>> mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
        >>> high_entropy_loss_mask(ent, mask, 0.4)  # 5 real tokens -> top 2: 2.0 and 1.5
        tensor([[False,  True, False, False],
                [ True, False, False, False]])
    """
    try:
        check_ratio(top_ratio)
    except ValueError as e:
        raise ValueError(f"--policy_loss_entropy_top_ratio: {e}") from None
    marks, _ = high_entropy_mask(entropy, action_mask, top_ratio, scope="step")
    return marks


def policy_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    action_mask: torch.Tensor,
    eps_clip: float = 0.2,
    token_weights: torch.Tensor | None = None,
    eps_clip_high: float | None = None,
    loss_agg: str = "token_mean",
    norm_len: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO clipped surrogate loss: ``(loss, clip_ratio)``, both scalar tensors.

    Per token: ``-min(ratio * A, clip(ratio, 1 - eps_clip, 1 + eps_clip_high) * A)`` with
    ``ratio = exp(log_probs - old_log_probs)``. ``token_weights`` (B, A), e.g. the float of
    `high_entropy_loss_mask`, multiplies each token's loss while the normaliser stays the count of
    real tokens: the 80/20 paper's objective, where the other tokens simply give no gradient.

    loss_agg: ``token_mean`` (sum over real tokens / their count: OpenRLHF's default),
    ``seq_mean`` (mean per response, then over responses), or ``seq_sum_norm`` (each response's sum
    divided by the constant ``norm_len``, e.g. generate_max_len: Dr. GRPO's length-unbiased form).
    clip_ratio is the share of real tokens whose clipped branch was taken.

    Example (ratio 1 everywhere: loss = -mean advantage):
        >>> lp = torch.zeros(1, 3, requires_grad=True)
        >>> loss, clip = policy_loss(lp, torch.zeros(1, 3), torch.tensor([[1.0, 2.0, 99.0]]), torch.tensor([[1, 1, 0]]))
        >>> loss.item(), clip.item()
        (-1.5, 0.0)
    """
    mask = action_mask.float()
    eps_high = eps_clip if eps_clip_high is None else eps_clip_high
    ratio = (log_probs.float() - old_log_probs.float()).exp()  # (B, A)
    surr1 = ratio * advantages
    surr2 = ratio.clamp(1 - eps_clip, 1 + eps_high) * advantages
    per_token = -torch.min(surr1, surr2)  # (B, A)
    if token_weights is not None:
        per_token = per_token * token_weights.float()
    if loss_agg == "token_mean":
        loss = masked_mean(per_token, mask)
    elif loss_agg == "seq_mean":
        loss = masked_mean(per_token, mask, dim=-1).mean()
    elif loss_agg == "seq_sum_norm":
        if not norm_len:
            raise ValueError("loss_agg='seq_sum_norm' needs norm_len (e.g. --generate_max_len)")
        loss = ((per_token * mask).sum(-1) / norm_len).mean()
    else:
        raise ValueError(f"loss_agg must be one of {', '.join(LOSS_AGGREGATIONS)}, got {loss_agg!r}")
    clip_ratio = masked_mean((surr2 < surr1).float(), mask).detach()
    return loss, clip_ratio


def actor_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    action_mask: torch.Tensor,
    *,
    eps_clip: float = 0.2,
    loss_mask: torch.Tensor | None = None,
    loss_agg: str = "token_mean",
    norm_len: int | None = None,
    ref_log_probs: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    kl_estimator: str = "k1",
    entropy: torch.Tensor | None = None,
    entropy_coef: float = 0.0,
) -> tuple[torch.Tensor, dict]:
    """The policy's loss on one micro-batch: PPO-clip ``+ kl_coef * KL - entropy_coef * entropy``.

    Every tensor is (b, A) over the micro-batch's response tokens. The KL term (GRPO's
    ``--use_kl_loss``) is added when ``ref_log_probs`` is given, the entropy bonus when ``entropy``
    is; both are token means over ``action_mask``. Returns ``(loss, stats)``, stats as floats.

    Example (one token, ratio 1, advantage 1; k1 KL of 0.5 weighted 0.1):
        >>> lp = torch.tensor([[-1.0]])
        >>> loss, stats = actor_loss(lp, lp, torch.ones(1, 1), torch.ones(1, 1, dtype=torch.bool),
        ...                          ref_log_probs=torch.tensor([[-1.5]]), kl_coef=0.1)
        >>> round(loss.item(), 6), stats["kl_loss"]
        (-0.95, 0.5)
    """
    pg_loss, clip_ratio = policy_loss(log_probs, old_log_probs, advantages, action_mask, eps_clip,
                                      token_weights=loss_mask, loss_agg=loss_agg, norm_len=norm_len)
    loss = pg_loss
    stats = {"policy_loss": pg_loss.item(), "clip_ratio": clip_ratio.item()}
    if ref_log_probs is not None:
        kl = masked_mean(kl_estimate(log_probs, ref_log_probs, kl_estimator), action_mask)
        loss = loss + kl_coef * kl
        stats["kl_loss"] = kl.item()
    if entropy is not None:
        ent = masked_mean(entropy, action_mask)
        loss = loss - entropy_coef * ent
        stats["entropy_loss"] = ent.item()
    return loss, stats


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, action_mask: torch.Tensor,
               value_clip: float = 0.2) -> torch.Tensor:
    """PPO's clipped value loss, a scalar: ``0.5 * mean(max((V - R)^2, (V_clip - R)^2))`` over real tokens,
    with ``V_clip = V_old + clip(V - V_old, -value_clip, value_clip)``; each tensor (b, A).

    Example (the value jumped from 0 onto the return 1, past the clip 0.2: the clipped error counts):
        >>> value_loss(torch.tensor([[1.0]]), torch.tensor([[0.0]]), torch.tensor([[1.0]]),
        ...            torch.ones(1, 1, dtype=torch.bool), value_clip=0.2)   # max(0, 0.8^2) / 2
        tensor(0.3200)
    """
    clipped = old_values + (values - old_values).clamp(-value_clip, value_clip)
    return 0.5 * masked_mean(torch.max((values - returns) ** 2, (clipped - returns) ** 2), action_mask)
