"""KL(policy || reference) per token, from the log-probs of the sampled tokens: pure torch.

Used twice with one rule: as a penalty in the token rewards (`compute_advantages(kl=...)`) or as a
loss term (`--use_kl_loss`, `openrlhf_ext.algo.losses.actor_loss`).
"""
from __future__ import annotations

import torch

KL_ESTIMATORS = ("k1", "k2", "k3")


def kl_estimate(log_probs: torch.Tensor, ref_log_probs: torch.Tensor, kl_estimator: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from the sampled tokens' log-probs, (B, A) float32.

    With ``d = log_probs - ref_log_probs`` (Schulman, "Approximating KL divergence"):
    ``k1 = d`` (unbiased, can be negative), ``k2 = d**2 / 2``, ``k3 = exp(-d) - 1 + d`` (unbiased, >= 0).
    Masking is the caller's job (padding positions come out as whatever their inputs give).

    Example:
        >>> lp, ref = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-2.0, -2.0]])
        >>> kl_estimate(lp, ref, "k1"), kl_estimate(lp, ref, "k2")
        (tensor([[1., 0.]]), tensor([[0.5000, 0.0000]]))
        >>> kl_estimate(lp, ref, "k3")  # exp(-1) - 1 + 1
        tensor([[0.3679, 0.0000]])
    """
    d = log_probs.float() - ref_log_probs.float()  # (B, A) log ratio policy / reference
    if kl_estimator == "k1":
        return d
    if kl_estimator == "k2":
        return d.square() / 2.0
    if kl_estimator == "k3":
        return torch.expm1(-d) + d
    raise ValueError(f"kl_estimator must be one of {KL_ESTIMATORS}, got {kl_estimator!r}")
