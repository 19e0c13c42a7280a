"""The high-entropy ("forking") token mark of arXiv 2506.01939, exactly as FORMAT.md defines it.

Over the n valid tokens (in the mask, entropy finite) let k = max(1, ceil(r * n)); the threshold
tau is the k-th largest entropy, and a token is marked when its entropy >= tau (ties all marked).
With scope "step" the ranking spans every response of the step on every rank; with scope
"response" it is done inside each response.
"""
from __future__ import annotations

import math
from decimal import Decimal
from typing import TYPE_CHECKING

# torch is imported in the functions that use it, so that the rule itself (check_ratio, top_count,
# SCOPES) loads without it: the command-line tools check their flags with it and start in a
# fraction of a second.
if TYPE_CHECKING:
    import torch

SCOPES = ("step", "response")


def check_ratio(value) -> float:
    """The ratio ``value`` as a float, or ValueError saying what a ratio is. THE rule for every
    ratio of tokens to mark or to train on: a number in (0, 1].

    Example:
        >>> check_ratio("0.2")
        0.2
        >>> check_ratio(1.5)
        Traceback (most recent call last):
        ...
        ValueError: ratio must be in (0, 1] (0.2 is the top 20% of tokens), got 1.5
    """
    try:
        ratio = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"ratio must be a number in (0, 1], got {value!r}") from None
    if not 0 < ratio <= 1:  # NaN fails too
        raise ValueError(f"ratio must be in (0, 1] (0.2 is the top 20% of tokens), got {value}")
    return ratio


def top_count(ratio: float, n: int) -> int:
    """k = max(1, ceil(ratio * n)) without floating-point error rounding a whole product up.

    ``0.1 * 30`` is ``3.0000000000000004`` in binary floating point; the ratio is taken as the
    decimal the user wrote (its shortest repr) so that the product is exact.

    Example:
        >>> top_count(0.1, 30)
        3
        >>> top_count(0.2, 7)
        2
        >>> top_count(0.01, 3)
        1
    """
    ratio = check_ratio(ratio)
    if n <= 0:
        return 0
    return max(1, math.ceil(Decimal(repr(ratio)) * n))


def _gather_values(values: torch.Tensor, group) -> torch.Tensor:
    """Concatenate every rank's 1-D ``values`` (lengths may differ) on every rank."""
    import torch
    import torch.distributed as dist

    world = dist.get_world_size(group)
    # gloo and nccl both need equal shapes: share the lengths, pad to the longest, trim after.
    device = values.device
    length = torch.tensor([values.numel()], dtype=torch.long, device=device)
    lengths = [torch.zeros_like(length) for _ in range(world)]
    dist.all_gather(lengths, length, group=group)
    lengths = [int(x.item()) for x in lengths]
    longest = max(lengths)
    padded = torch.zeros(longest, dtype=values.dtype, device=device)
    padded[: values.numel()] = values
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded, group=group)
    return torch.cat([g[:n] for g, n in zip(gathered, lengths)])


def high_entropy_mask(
    entropy: torch.Tensor,
    mask: torch.Tensor,
    ratio: float,
    scope: str = "step",
    group=None,
):
    """Mark the top-``ratio`` highest-entropy tokens.

    Args:
        entropy: (B, A) entropy of each response token (any float dtype).
        mask: (B, A) true on real response tokens (OpenRLHF's ``action_mask``).
        ratio: share of tokens to mark, in (0, 1].
        scope: "step" ranks all valid tokens of the batch (and of every rank of ``group``);
            "response" ranks inside each row.
        group: a ``torch.distributed`` process group (``torch.distributed.group.WORLD`` for all
            ranks), or None for this process's tokens alone. With scope "step" and a group, every
            rank's tokens are gathered first, so all ranks get the same threshold; every rank of
            the group must then call this.

    Returns:
        (marks, threshold): marks is (B, A) bool; threshold is a float for "step" (NaN when there
        is no valid token) and a (B,) float32 tensor for "response" (NaN for rows without one).

    Example:
        >>> import torch
        >>> ent = torch.tensor([[0.1, 2.0, 0.5], [3.0, 0.2, 0.0]])
        >>> msk = torch.tensor([[True, True, True], [True, True, False]])
        >>> marks, tau = high_entropy_mask(ent, msk, ratio=0.4)   # k = ceil(0.4 * 5) = 2
        >>> marks.tolist(), tau
        ([[False, True, False], [True, False, False]], 2.0)
    """
    import torch

    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    if entropy.shape != mask.shape:
        raise ValueError(f"entropy {tuple(entropy.shape)} and mask {tuple(mask.shape)} differ in shape")
    ratio = check_ratio(ratio)  # on every path, even a step without tokens
    entropy = entropy.detach().float()
    valid = mask.bool() & torch.isfinite(entropy)  # (B, A)

    if scope == "step":
        values = entropy[valid]  # (n_local,)
        if group is not None:
            if not _distributed_ready():
                raise RuntimeError("high_entropy_mask got a process group but torch.distributed is not initialised")
            values = _gather_values(values, group)
        k = top_count(ratio, values.numel())
        if k == 0:
            return torch.zeros_like(valid), float("nan")
        tau = torch.topk(values, k, sorted=False).values.min()
        return valid & (entropy >= tau), float(tau)

    # scope == "response": one threshold per row.
    masked = entropy.masked_fill(~valid, float("-inf"))  # (B, A)
    n_valid = valid.sum(dim=-1)  # (B,)
    ks = [top_count(ratio, int(n)) for n in n_valid.tolist()]
    thresholds = torch.full((entropy.shape[0],), float("nan"))  # (B,)
    if entropy.numel() and max(ks, default=0) > 0:
        ranked = torch.sort(masked, dim=-1, descending=True).values  # (B, A)
        k_index = torch.tensor([max(k, 1) - 1 for k in ks], device=entropy.device)
        kth = ranked.gather(-1, k_index[:, None]).squeeze(-1).cpu()  # (B,)
        has = n_valid.cpu() > 0
        thresholds[has] = kth[has]
    marks = valid & (entropy >= thresholds.to(entropy.device)[:, None])
    return marks, thresholds


def marks_at_threshold(entropy: torch.Tensor, mask: torch.Tensor, threshold: float) -> torch.Tensor:
    """(B, A) bool: the real tokens whose finite entropy is >= ``threshold``, the mark of
    ``high_entropy_mask`` at a threshold taken elsewhere (a step's probe responses are marked by
    the step's own threshold). A NaN threshold (a step without a valid token) marks nothing.

    Example:
        >>> import torch
        >>> marks_at_threshold(torch.tensor([[0.1, 2.0, float("nan")]]), torch.tensor([[True, True, True]]), 2.0).tolist()
        [[False, True, False]]
    """
    import torch

    entropy = entropy.detach().float()
    return mask.bool() & torch.isfinite(entropy) & (entropy >= float(threshold))


def _distributed_ready() -> bool:
    import torch

    return torch.distributed.is_available() and torch.distributed.is_initialized()
