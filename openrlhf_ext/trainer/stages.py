"""The stages of one training step, each a plain function the controller calls in order:

    generate -> score -> forward (old log-probs + entropy, ref, values) -> advantages
             -> save trajectories -> update -> sync weights to vLLM -> checkpoint

Each takes what it needs and returns what the next reads; `PPOTrainer.step` times each one into
the step's log line. Data flows one way: the saver sees finished experiences and never calls back.
"""
from __future__ import annotations

import math

import ray
import torch

from openrlhf_ext.rollout.sequences import pack_sequences
from openrlhf_ext.trainer.advantages import compute_advantages, high_entropy_loss_mask, kl_estimate
from openrlhf_ext.trainer.experience import Experience, cat_field, make_experiences, split_field, split_info
from openrlhf_ext.trajectory import high_entropy_mask


def round_robin(items: list, n: int) -> list[list]:
    return [items[i::n] for i in range(n)]


def tokenize_prompts(tokenizer, prompts: list[str], max_len: int) -> list[list[int]]:
    """Prompt token ids, left-truncated to `max_len` (the end of a prompt is what the answer follows)."""
    ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    return [p[-max_len:] for p in ids]


def generate(groups, tokenizer, args, rows: list[dict], seed: int) -> dict:
    """Sample n_samples_per_prompt responses per prompt; returns the step's packed batch.

    Responses of a prompt are contiguous (rows i*n .. i*n+n-1): the group estimators rely on it.
    """
    n = args.n_samples_per_prompt
    prompts = [r["prompt"] for r in rows for _ in range(n)]
    labels = [r.get("label", "") for r in rows for _ in range(n)]
    prompt_ids = tokenize_prompts(tokenizer, prompts, args.prompt_max_len)
    pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    if groups.vllm is not None:
        if args.vllm_enable_sleep:
            groups.vllm.wake_up()
        responses = groups.vllm.generate(prompt_ids, seed)
        if args.vllm_enable_sleep:
            groups.vllm.sleep()  # frees the GPU memory of the KV cache for the training stages
    else:
        world = len(groups.actor)
        shards = [prompt_ids[len(prompt_ids) * w // world: len(prompt_ids) * (w + 1) // world] for w in range(world)]
        outs = ray.get([w.generate.remote(s, pad_id, eos_id, seed * 1000 + i)
                        for i, (w, s) in enumerate(zip(groups.actor.workers, shards))])
        responses = [r for o in outs for r in o]
    batch = pack_sequences(prompt_ids, responses, pad_id, eos_id)
    response_length = batch["action_mask"].sum(-1)  # (B,) long
    batch.update(
        prompts=prompts, labels=labels,
        group_index=torch.arange(len(rows)).repeat_interleave(n),
        info={"response_length": response_length,
              "total_length": batch["attention_mask"].sum(-1),  # (B,) long: prompt + response
              "truncated": batch.pop("truncated")},  # (B,) bool: hit generate_max_len without EOS
    )
    return batch


def score(groups, reward_fn, tokenizer, batch: dict, micro_batch_size: int) -> torch.Tensor:
    """Rewards (B,) float32: the reward model group if there is one, else `reward_fn` on the texts."""
    if groups.reward is not None:
        exps = make_experiences(batch, micro_batch_size)
        outs = ray.get(groups.reward.call_sharded(
            "forward", round_robin([e.to_payload(("sequences", "attention_mask", "action_mask")) for e in exps],
                                   len(groups.reward))))
        world = len(outs)
        return torch.cat([outs[i % world][i // world] for i in range(len(exps))]).float()
    A = batch["action_mask"].shape[1]
    responses = [tokenizer.decode(seq[-A:][m].tolist(), skip_special_tokens=True)
                 for seq, m in zip(batch["sequences"], batch["action_mask"])]
    queries = [p + r for p, r in zip(batch["prompts"], responses)]
    rewards = reward_fn(queries, batch["prompts"], batch["labels"])
    return torch.tensor([float(r) for r in rewards], dtype=torch.float32)


def forward(groups, experiences: list[Experience]) -> None:
    """Old log-probs + entropy (actor, one forward), reference log-probs, values; all groups at once."""
    keys = ("sequences", "attention_mask", "action_mask")

    def launch(group):
        if group is None:
            return None
        shards = round_robin([e.to_payload(keys) for e in experiences], len(group))
        return group.call_sharded("forward", shards)

    refs = {name: launch(getattr(groups, name)) for name in ("actor", "ref", "critic")}
    for name, rs in refs.items():
        if rs is None:
            continue
        outs = ray.get(rs)
        world = len(outs)
        for i, e in enumerate(experiences):
            out = outs[i % world][i // world]
            if name == "actor":
                e.action_log_probs, e.action_entropy = out
            elif name == "ref":
                e.base_action_log_probs = out
            else:
                e.values = out


def advantages(args, experiences: list[Experience], rewards: torch.Tensor) -> dict:
    """KL, advantages and returns over the whole step (group estimators need every response of a
    prompt), written back into the experiences. Returns step metrics."""
    mask = cat_field(experiences, "action_mask")  # (B, A)
    split_info(experiences, "reward", rewards)
    metrics = {}
    kl = None
    if experiences[0].base_action_log_probs is not None:
        kl = kl_estimate(cat_field(experiences, "action_log_probs"), cat_field(experiences, "base_action_log_probs"),
                         args.kl_estimator) * mask  # (B, A)
        split_field(experiences, "kl", kl)
        per_sample = (kl.sum(-1) / mask.sum(-1).clamp(min=1))  # (B,)
        split_info(experiences, "kl", per_sample)
        metrics["kl"] = per_sample.mean().item()
    values = cat_field(experiences, "values") if experiences[0].values is not None else None
    adv, ret = compute_advantages(
        rewards, mask, args.advantage_estimator, args.n_samples_per_prompt, values=values,
        gamma=args.gamma, lambd=args.lambd,
        kl=None if args.use_kl_loss else kl, kl_coef=0.0 if args.use_kl_loss else args.init_kl_coef,
        advantage_std_norm=not args.no_advantage_std_norm)
    split_field(experiences, "advantages", adv)
    split_field(experiences, "returns", ret)
    if args.policy_loss_entropy_top_ratio is not None:
        weights = high_entropy_loss_mask(cat_field(experiences, "action_entropy"), mask,
                                         args.policy_loss_entropy_top_ratio).float()
        split_field(experiences, "loss_mask", weights)
    metrics["advantage_abs"] = (adv.abs() * mask).sum().item() / max(mask.sum().item(), 1)
    return metrics


def entropy_stats(experiences: list[Experience], ratio: float) -> dict:
    """The step's entropy over every response token: mean, p80, the top-ratio threshold, share at/above it."""
    ent = cat_field(experiences, "action_entropy")
    mask = cat_field(experiences, "action_mask")
    vals = ent[mask & torch.isfinite(ent)]
    if vals.numel() == 0:
        return {}
    marks, threshold = high_entropy_mask(ent, mask, ratio, scope="step")
    return {"entropy/mean": vals.mean().item(),
            "entropy/p80": torch.quantile(vals.double(), 0.8).item(),
            "entropy/threshold": float(threshold),
            "entropy/share_above": marks.sum().item() / vals.numel()}


def save_trajectories(saver, global_step: int, experiences: list[Experience]) -> dict | None:
    """Hand every response of the step to the saver (so its threshold sees them all)."""
    if saver is None:
        return None
    return saver.save_step(global_step, experiences)


def update(groups, args, experiences: list[Experience], global_step: int) -> dict:
    """PPO epochs on the actor (and critic) workers; each gets an equal share of the experiences."""
    keys = ("sequences", "attention_mask", "action_mask", "action_log_probs", "advantages", "returns",
            "base_action_log_probs", "values", "loss_mask")
    payloads = [e.to_payload(keys) for e in experiences]
    refs = groups.actor.call_sharded("train", round_robin(payloads, len(groups.actor)), args.seed + global_step)
    if groups.critic is not None:
        refs += groups.critic.call_sharded("train", round_robin(payloads, len(groups.critic)), args.seed + global_step)
    metrics: dict[str, list[float]] = {}
    for out in ray.get(refs):
        for k, v in out.items():
            metrics.setdefault(k, []).append(v)
    return {k: sum(v) / len(v) for k, v in metrics.items() if not math.isnan(sum(v))}


def sync_weights(groups, args) -> None:
    """Push the updated actor weights into the vLLM engines (vllm backend only)."""
    if groups.vllm is None:
        return
    blob = ray.get(groups.actor.call("state_dict_bytes"))[0]  # all ranks: ZeRO-3 gathers collectively
    if args.vllm_enable_sleep:
        groups.vllm.wake_up()
    groups.vllm.load_weights(blob)
    if args.vllm_enable_sleep:
        groups.vllm.sleep()


def step_metrics(experiences: list[Experience]) -> dict:
    """Per-step means of the per-sample info (reward, response_length, truncated, ...)."""
    out = {}
    for k in experiences[0].info:
        v = torch.cat([torch.as_tensor(e.info[k], dtype=torch.float32) for e in experiences])
        out[k] = v.mean().item()
    return out
