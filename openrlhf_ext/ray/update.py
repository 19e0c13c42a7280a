"""The update inside a DeepSpeed worker: PPO epochs of shuffled micro-batches through the engine.

The loss math is openrlhf_ext/algo/losses.py (pure torch); this is the loop that drives a DeepSpeed
engine with it (forward, ``engine.backward``, ``engine.step``), so it lives with the workers.

    >>> import argparse
    >>> from openrlhf_ext.ray.deepspeed_utils import build_engine, free_port, init_distributed, setup_dist_env
    >>> setup_dist_env(rank=0, world_size=1, master_addr="127.0.0.1", master_port=free_port())
    >>> init_distributed()
    >>> engine = build_engine(torch.nn.Linear(2, 1), lr=0.1, betas=(0.9, 0.95), weight_decay=0.0, zero_stage=0,
    ...                       micro_batch=2, grad_accum=2, world_size=1, bf16=False, max_norm=1.0)
    >>> def squared_output(engine, mb, args):  # a loss_fn: (engine, micro-batch, args) -> (loss, stats)
    ...     loss = engine(mb["sequences"]).square().mean()
    ...     return loss, {"loss": loss.item()}
    >>> payloads = [{"sequences": torch.ones(2, 2)}, {"sequences": torch.ones(2, 2)}]  # two experiences
    >>> args = argparse.Namespace(max_epochs=3, micro_train_batch_size=2)
    >>> before = engine.module.weight.detach().clone()
    >>> stats = run_update(engine, payloads, args, squared_output, seed=0)   # 3 epochs x 2 micro-batches
    >>> list(stats), bool((engine.module.weight != before).all())
    (['loss'], True)
"""
from __future__ import annotations

import torch

from openrlhf_ext.algo.losses import actor_loss, value_loss


def join_payloads(payloads: list[dict]) -> dict:
    """The worker's experiences as one batch (they share the step's padded width).

    Example:
        >>> join_payloads([{"x": torch.zeros(2, 3)}, {"x": torch.ones(1, 3)}])["x"].shape
        torch.Size([3, 3])
    """
    return {k: torch.cat([p[k] for p in payloads]) for k in payloads[0]}


def micro_batches(batch: dict, micro_batch_size: int, generator: torch.Generator):
    """Shuffled micro-batches: every epoch visits each response once, in a new order.

    Example:
        >>> batch = {"sequences": torch.arange(5)[:, None]}
        >>> mbs = [mb["sequences"].flatten().tolist() for mb in micro_batches(batch, 2, torch.Generator().manual_seed(0))]
        >>> [len(m) for m in mbs], sorted(sum(mbs, []))
        ([2, 2, 1], [0, 1, 2, 3, 4])
    """
    n = batch["sequences"].shape[0]
    order = torch.randperm(n, generator=generator)
    for s in range(0, n, micro_batch_size):
        idx = order[s : s + micro_batch_size]
        yield {k: v[idx] for k, v in batch.items()}


def policy_micro_batch_loss(actor, mb: dict, args) -> tuple[torch.Tensor, dict]:
    """Forward the policy on one micro-batch, then `algo.losses.actor_loss` with the run's flags."""
    mask = mb["action_mask"]  # (b, A)
    need_entropy = args.entropy_loss_coef != 0
    log_probs, entropy = actor(mb["sequences"], mb["attention_mask"], mask.shape[1],
                               temperature=args.temperature, with_entropy=need_entropy)  # (b, A) each
    # Dr. GRPO sums each response's token losses over a constant length (no length bias).
    dr = args.advantage_estimator == "dr_grpo"
    return actor_loss(
        log_probs, mb["action_log_probs"], mb["advantages"], mask, eps_clip=args.eps_clip,
        loss_mask=mb.get("loss_mask"), loss_agg="seq_sum_norm" if dr else "token_mean",
        norm_len=args.generate_max_len if dr else None,
        ref_log_probs=mb.get("base_action_log_probs") if args.use_kl_loss else None,
        kl_coef=args.init_kl_coef, kl_estimator=args.kl_estimator,
        entropy=entropy if need_entropy else None, entropy_coef=args.entropy_loss_coef,
    )


def critic_micro_batch_loss(critic, mb: dict, args) -> tuple[torch.Tensor, dict]:
    """Forward the critic on one micro-batch, then PPO's clipped value loss."""
    mask = mb["action_mask"]  # (b, A)
    values = critic(mb["sequences"], mb["attention_mask"], mask.shape[1])  # (b, A)
    loss = value_loss(values, mb["values"], mb["returns"], mask, args.value_clip)
    return loss, {"critic_loss": loss.item()}


def run_update(engine, payloads: list[dict], args, loss_fn, seed: int, device="cpu") -> dict:
    """``args.max_epochs`` passes of micro-batches through ``loss_fn``; DeepSpeed accumulates and steps.

    Returns the mean of each of ``loss_fn``'s stats over every micro-batch of every epoch.
    """
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
