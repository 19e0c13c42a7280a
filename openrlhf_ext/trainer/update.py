"""The update: PPO-clip epochs over a worker's share of the step's experiences.

Runs inside the DeepSpeed workers (openrlhf_ext/ray/workers.py); the math lives here so it reads
apart from the process plumbing.

    >>> metrics = actor_update(engine, payloads, args)   # payloads: Experience.to_payload() dicts
    >>> metrics["policy_loss"]
"""
from __future__ import annotations

import torch

from openrlhf_ext.trainer.advantages import kl_estimate, policy_loss


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1)


def join_payloads(payloads: list[dict]) -> dict:
    """The worker's experiences as one batch (they share the step's padded width)."""
    return {k: torch.cat([p[k] for p in payloads]) for k in payloads[0]}


def micro_batches(batch: dict, micro_batch_size: int, generator: torch.Generator):
    """Shuffled micro-batches: every epoch visits each response once, in a new order."""
    n = batch["sequences"].shape[0]
    order = torch.randperm(n, generator=generator)
    for s in range(0, n, micro_batch_size):
        idx = order[s : s + micro_batch_size]
        yield {k: v[idx] for k, v in batch.items()}


def actor_loss(actor, mb: dict, args) -> tuple[torch.Tensor, dict]:
    """PPO-clip policy loss (+ KL loss, - entropy bonus) of one micro-batch."""
    mask = mb["action_mask"]  # (b, A)
    need_entropy = args.entropy_loss_coef != 0
    log_probs, entropy = actor(mb["sequences"], mb["attention_mask"], mask.shape[1],
                               temperature=args.temperature, with_entropy=need_entropy)
    # Dr. GRPO sums each response's token losses over a constant length (no length bias).
    dr = args.advantage_estimator == "dr_grpo"
    pg_loss, clip_ratio = policy_loss(log_probs, mb["action_log_probs"], mb["advantages"], mask, args.eps_clip,
                                      token_weights=mb.get("loss_mask"),
                                      loss_agg="seq_sum_norm" if dr else "token_mean",
                                      norm_len=args.generate_max_len if dr else None)
    loss = pg_loss
    stats = {"policy_loss": pg_loss.item(), "clip_ratio": clip_ratio.item()}
    if args.use_kl_loss and "base_action_log_probs" in mb:
        kl = masked_mean(kl_estimate(log_probs, mb["base_action_log_probs"], args.kl_estimator), mask)
        loss = loss + args.init_kl_coef * kl
        stats["kl_loss"] = kl.item()
    if need_entropy:
        ent = masked_mean(entropy, mask)
        loss = loss - args.entropy_loss_coef * ent
        stats["entropy_loss"] = ent.item()
    return loss, stats


def critic_loss(critic, mb: dict, args) -> tuple[torch.Tensor, dict]:
    """Clipped value loss of PPO."""
    mask = mb["action_mask"]
    values = critic(mb["sequences"], mb["attention_mask"], mask.shape[1])  # (b, A)
    old = mb["values"]
    clipped = old + (values - old).clamp(-args.value_clip, args.value_clip)
    loss = 0.5 * masked_mean(torch.max((values - mb["returns"]) ** 2, (clipped - mb["returns"]) ** 2), mask)
    return loss, {"critic_loss": loss.item()}


def run_update(engine, payloads: list[dict], args, loss_fn, seed: int, device) -> dict:
    """max_epochs passes of micro-batches through `loss_fn`; DeepSpeed accumulates and steps."""
    batch = {k: v.to(device) for k, v in join_payloads(payloads).items()}
    gen = torch.Generator().manual_seed(seed)
    engine.train()
    sums: dict[str, float] = {}
    n = 0
    for _ in range(args.max_epochs):
        for mb in micro_batches(batch, args.micro_train_batch_size, gen):
            loss, stats = loss_fn(engine, mb, args)  # engine(...) runs the module through DeepSpeed
            engine.backward(loss)
            engine.step()  # steps the optimizer at the gradient-accumulation boundary only
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
            n += 1
    return {k: v / max(n, 1) for k, v in sums.items()}


def actor_update(engine, payloads, args, seed, device="cpu") -> dict:
    return run_update(engine, payloads, args, actor_loss, seed, device)


def critic_update(engine, payloads, args, seed, device="cpu") -> dict:
    return run_update(engine, payloads, args, critic_loss, seed, device)
