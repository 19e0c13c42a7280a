"""Advantages and returns of a step's responses, by the estimators of OpenRLHF: pure torch, no trainer state.

Conventions (OpenRLHF's):
- One step's batch is ``B = num_prompts * n_samples_per_prompt`` responses, the samples of a
  prompt next to each other: response ``i`` belongs to group ``i // n_samples_per_prompt``.
- Tensors over response tokens are ``(B, A)``; ``action_mask`` (B, A) marks the real tokens of each
  response (padding is False). The scalar reward of a response is credited to its last real token.
- Outcome estimators (reinforce, rloo, reinforce_baseline, group_norm, dr_grpo) use the return
  to go as the advantage; ``gae`` needs a critic's values.

Example (GRPO on one prompt with 2 samples, one right and one wrong):
    >>> import torch
    >>> adv, ret = compute_advantages(torch.tensor([1.0, 0.0]), torch.ones(2, 3, dtype=torch.bool),
    ...                               "group_norm", n_samples_per_prompt=2)
    >>> adv
    tensor([[ 0.7071,  0.7071,  0.7071],
            [-0.7071, -0.7071, -0.7071]])
"""
from __future__ import annotations

import torch

from openrlhf_ext.utils.tensors import masked_mean

ADVANTAGE_ESTIMATORS = ("gae", "reinforce", "rloo", "reinforce_baseline", "group_norm", "dr_grpo")
# Estimators that compare the samples of one prompt with each other (need whole groups, gamma 1).
GROUP_ESTIMATORS = ("rloo", "reinforce_baseline", "group_norm", "dr_grpo")
# OpenRLHF whitens these over all response tokens of the step (the group ones are already centred).
BATCH_NORMALIZED_ESTIMATORS = ("gae", "reinforce", "reinforce_baseline")


def check_advantage_config(estimator: str, n_samples_per_prompt: int, gamma: float = 1.0, has_critic: bool = False) -> None:
    """Raise ``ValueError`` with a sentence saying what to change if the combination cannot work.

    A trainer calls this at start-up so a bad flag fails before any model is loaded.

    Example:
        >>> check_advantage_config("group_norm", n_samples_per_prompt=1)
        Traceback (most recent call last):
        ...
        ValueError: --advantage_estimator group_norm compares the samples of a prompt with each other: set --n_samples_per_prompt to 2 or more (got 1).
    """
    if estimator not in ADVANTAGE_ESTIMATORS:
        raise ValueError(f"--advantage_estimator {estimator!r} is unknown: use one of {', '.join(ADVANTAGE_ESTIMATORS)}.")
    if n_samples_per_prompt < 1:
        raise ValueError(f"--n_samples_per_prompt must be 1 or more (got {n_samples_per_prompt}).")
    if estimator in GROUP_ESTIMATORS and n_samples_per_prompt < 2:
        raise ValueError(
            f"--advantage_estimator {estimator} compares the samples of a prompt with each other: "
            f"set --n_samples_per_prompt to 2 or more (got {n_samples_per_prompt})."
        )
    if estimator in GROUP_ESTIMATORS and gamma != 1.0:
        raise ValueError(f"--advantage_estimator {estimator} needs --gamma 1.0 (got {gamma}): a group baseline is a per-response quantity.")
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"--gamma must be in [0, 1] (got {gamma}).")
    if estimator == "gae" and not has_critic:
        raise ValueError("--advantage_estimator gae needs a critic (values); pick reinforce, rloo, reinforce_baseline, group_norm or dr_grpo to train without one.")


def shape_group_rewards(rewards: torch.Tensor, estimator: str, n_samples_per_prompt: int) -> torch.Tensor:
    """Subtract each response's group baseline (and divide by the group std for group_norm), (B,).

    - rloo: minus the mean of the *other* samples of the prompt.
    - reinforce_baseline, dr_grpo: minus the group mean (no std: Dr. GRPO's point).
    - group_norm (GRPO): ``(r - mean) / (std + 1e-9)``, std with Bessel's correction, as OpenRLHF.
    - gae, reinforce: unchanged.

    Example:
        >>> shape_group_rewards(torch.tensor([1.0, 0.0, 0.0, 0.0]), "rloo", 4)
        tensor([ 1.0000, -0.3333, -0.3333, -0.3333])
    """
    if estimator not in GROUP_ESTIMATORS:
        return rewards.float()
    n = n_samples_per_prompt
    if rewards.numel() % n:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of n_samples_per_prompt={n}")
    # float64: in float32 the mean of a group of equal rewards can miss them by an ulp, and that
    # ulp divided by a std of ~1e-7 gave such a group advantages of ~0.1 instead of 0.
    r = rewards.double().reshape(-1, n)  # (num_prompts, n)
    if estimator == "rloo":
        r = r - (r.sum(-1, keepdim=True) - r) / (n - 1)
    elif estimator in ("reinforce_baseline", "dr_grpo"):
        r = r - r.mean(-1, keepdim=True)
    else:  # group_norm
        r = (r - r.mean(-1, keepdim=True)) / (r.std(-1, keepdim=True) + 1e-9)
    return r.reshape(-1).float()


def token_rewards(rewards: torch.Tensor, action_mask: torch.Tensor, kl: torch.Tensor | None = None,
                  kl_coef: float = 0.0) -> torch.Tensor:
    """Per-token rewards (B, A): the response's reward on its last real token, ``-kl_coef * kl`` on every real token.

    Example:
        >>> mask = torch.tensor([[True, True, False]])
        >>> token_rewards(torch.tensor([1.0]), mask, kl=torch.tensor([[0.5, 0.5, 9.0]]), kl_coef=0.1)
        tensor([[-0.0500,  0.9500,  0.0000]])
    """
    mask = action_mask.bool()
    A = mask.size(1)
    # index of the last True of each row (0 for an empty row, whose reward then lands on a padding slot and is masked)
    last = (A - 1 - mask.long().flip(1).argmax(dim=1)).unsqueeze(1)  # (B, 1)
    out = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)  # (B, A)
    out.scatter_(1, last, rewards.float().unsqueeze(1))
    if kl is not None and kl_coef > 0:
        out = out - kl_coef * kl.float()
    return out.masked_fill(~mask, 0.0)


def discounted_returns(rewards: torch.Tensor, action_mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """Reward to go ``G_t = r_t + gamma * G_{t+1}`` over the real tokens, (B, A).

    Example:
        >>> discounted_returns(torch.tensor([[0.0, 0.0, 1.0]]), torch.ones(1, 3, dtype=torch.bool), gamma=0.5)
        tensor([[0.2500, 0.5000, 1.0000]])
    """
    r = rewards.float() * action_mask  # (B, A)
    returns = torch.zeros_like(r)
    running = torch.zeros(r.size(0), dtype=r.dtype, device=r.device)  # (B,)
    for t in reversed(range(r.size(1))):
        running = r[:, t] + gamma * running
        returns[:, t] = running
    return returns * action_mask


def gae(rewards: torch.Tensor, values: torch.Tensor, action_mask: torch.Tensor, gamma: float = 1.0,
        lambd: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation (Schulman et al. 2015): ``(advantages, returns)``, each (B, A).

    ``delta_t = r_t + gamma * V_{t+1} - V_t``; ``A_t = delta_t + gamma * lambd * A_{t+1}``;
    ``returns = A + V``. Values after the last real token count as 0 (the episode ended).

    Example:
        >>> adv, ret = gae(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.5]]), torch.ones(1, 2), 1.0, 0.5)
        >>> adv  # delta = [0, 0.5]; A_0 = 0 + 0.5 * 0.5
        tensor([[0.2500, 0.5000]])
    """
    mask = action_mask.float()
    v = values.float() * mask  # (B, A)
    r = rewards.float() * mask  # (B, A)
    adv = torch.zeros_like(r)
    running = torch.zeros(r.size(0), dtype=r.dtype, device=r.device)  # (B,)
    for t in reversed(range(r.size(1))):
        next_v = v[:, t + 1] if t + 1 < r.size(1) else torch.zeros_like(running)
        delta = r[:, t] + gamma * next_v - v[:, t]
        running = delta + gamma * lambd * running
        adv[:, t] = running
    return adv * mask, (adv + v) * mask


def whiten(advantages: torch.Tensor, action_mask: torch.Tensor, std_norm: bool = True) -> torch.Tensor:
    """Subtract the mean over all real tokens (and divide by their std), zero on padding, (B, A).

    Example:
        >>> whiten(torch.tensor([[1.0, 3.0, 7.0]]), torch.tensor([[True, True, False]]))
        tensor([[-1.,  1.,  0.]])
    """
    mask = action_mask.float()
    mean = masked_mean(advantages, mask)
    out = advantages - mean
    if std_norm:
        var = masked_mean(out.square(), mask)
        out = out * var.clamp(min=1e-8).rsqrt()
    return out * mask


def compute_advantages(
    rewards: torch.Tensor,
    action_mask: torch.Tensor,
    estimator: str,
    n_samples_per_prompt: int,
    values: torch.Tensor | None = None,
    gamma: float = 1.0,
    lambd: float = 0.95,
    kl: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    advantage_std_norm: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns, each (B, A) float32, zero on padding, for a whole step's batch.

    Args:
        rewards: (B,) one scalar per response, group members adjacent (see module doc).
        action_mask: (B, A) bool, real response tokens.
        estimator: gae | reinforce | rloo | reinforce_baseline | group_norm | dr_grpo.
        n_samples_per_prompt: group size for the group estimators.
        values: (B, A) critic values, gae only.
        gamma, lambd: discount and GAE lambda (group estimators require gamma == 1).
        kl: (B, A) per-token KL estimate (`openrlhf_ext.algo.kl.kl_estimate`); with ``kl_coef > 0`` it is subtracted
            from the token rewards as OpenRLHF's KL penalty in the reward (not with ``--use_kl_loss``).
        advantage_std_norm: for gae, reinforce and reinforce_baseline OpenRLHF whitens the advantages
            over all real tokens of the step; False only centres them (``--no_advantage_std_norm``).

    Order of work (OpenRLHF's): group shaping of the scalar rewards -> token rewards with the KL
    penalty -> returns (reward to go, or GAE) -> advantages = returns for outcome estimators ->
    whitening for gae / reinforce / reinforce_baseline.

    Example (Dr. GRPO, 2 prompts x 2 samples):
        >>> mask = torch.ones(4, 2, dtype=torch.bool)
        >>> adv, ret = compute_advantages(torch.tensor([1.0, 0.0, 1.0, 1.0]), mask, "dr_grpo", 2)
        >>> adv[:, 0]
        tensor([ 0.5000, -0.5000,  0.0000,  0.0000])
    """
    check_advantage_config(estimator, n_samples_per_prompt, gamma, has_critic=values is not None)
    mask = action_mask.bool()
    if rewards.dim() != 1 or rewards.size(0) != mask.size(0):
        raise ValueError(f"rewards must be (B,) with B={mask.size(0)}, got shape {tuple(rewards.shape)}")
    shaped = shape_group_rewards(rewards.to(mask.device), estimator, n_samples_per_prompt)  # (B,)
    per_token = token_rewards(shaped, mask, kl=kl, kl_coef=kl_coef)  # (B, A)
    if estimator == "gae":
        advantages, returns = gae(per_token, values, mask, gamma=gamma, lambd=lambd)
    else:
        returns = discounted_returns(per_token, mask, gamma=gamma)
        advantages = returns.clone()
    if estimator in BATCH_NORMALIZED_ESTIMATORS:
        advantages = whiten(advantages, mask, std_norm=advantage_std_norm)
    return advantages, returns
