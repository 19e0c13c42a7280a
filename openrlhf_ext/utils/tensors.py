"""Tensor reductions over a mask, shared by the trainer's losses and the trajectory saver.

    >>> x = torch.tensor([[1.0, 3.0, 100.0], [4.0, 0.0, 0.0]])
    >>> m = torch.tensor([[True, True, False], [True, False, False]])
    >>> masked_mean(x, m)            # over all real entries: (1 + 3 + 4) / 3
    tensor(2.6667)
    >>> masked_mean(x, m, dim=-1)    # per row
    tensor([2., 4.])
"""
from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim=None) -> torch.Tensor:
    """Mean of ``x`` over the entries where ``mask`` is true (over all of them, or along ``dim``).

    A row (or a whole tensor) without a true entry gives 0, not NaN: the denominator is clamped to 1.
    """
    mask = mask.to(x.dtype)
    return (x * mask).sum(dim=dim) / mask.sum(dim=dim).clamp(min=1)
