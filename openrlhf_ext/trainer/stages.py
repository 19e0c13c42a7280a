"""The stages of one training step, each a plain function the controller calls in order:

    generate -> score -> forward (old log-probs + entropy + alternatives, ref, values) -> advantages
             (+ the step's high-entropy marks) -> probe (at probe steps) -> save trajectories -> update
             -> sync weights to vLLM -> checkpoint

Each takes what it needs and returns what it made, over the step's B responses of A response slots:
`generate` the packed rollouts (with the rollout engine's log-probs), `score` the rewards (B,),
`forward` a `Forward`, `mark_entropy` an `EntropyMarks`, `advantages` an `Advantages`, `probe` the
experiences of the probe prompts' responses. `PPOTrainer.step` times each one into the step's log
line and cuts what they made into the experiences it hands to the saver and the update. Data flows
one way: the saver sees finished experiences and never calls back.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import ray
import torch

from openrlhf_ext.algo.advantages import compute_advantages
from openrlhf_ext.algo.experience import Experience, make_experiences
from openrlhf_ext.algo.kl import kl_estimate
from openrlhf_ext.algo.losses import high_entropy_loss_mask
from openrlhf_ext.ray.launcher import in_item_order
from openrlhf_ext.rollout.sequences import pack_sequences
from openrlhf_ext.trajectory import high_entropy_mask
from openrlhf_ext.trajectory.manifest_entry import mismatch_summary
from openrlhf_ext.utils.tensors import masked_mean

MODEL_INPUTS = ("sequences", "attention_mask", "action_mask")  # what a forward pass reads


@dataclass
class Forward:
    """What the forward stage made: one pass of each model over the step's responses."""
    log_probs: torch.Tensor  # (B, A) log-prob of each response token, recomputed by the trainer's policy
    entropy: torch.Tensor  # (B, A) entropy of the sampling distribution (nats, at --temperature)
    ref_log_probs: torch.Tensor | None = None  # (B, A) the reference policy's log-probs (a KL term)
    values: torch.Tensor | None = None  # (B, A) the critic's values (gae)
    alternative_ids: torch.Tensor | None = None  # (B, A, K) int32 top-K tokens of the sampling distribution (top_k > 0)
    alternative_log_probs: torch.Tensor | None = None  # (B, A, K) float32 their log-probs, most probable first

    def experience_fields(self) -> dict[str, torch.Tensor | None]:
        """These tensors by their `Experience` field names, for `make_experiences`."""
        return dict(action_log_probs=self.log_probs, action_entropy=self.entropy,
                    alternative_ids=self.alternative_ids, alternative_log_probs=self.alternative_log_probs,
                    base_action_log_probs=self.ref_log_probs, values=self.values)


@dataclass
class EntropyMarks:
    """The step's high-entropy ("forking") tokens by the rule of the saved marks, scope "step"."""
    marks: torch.Tensor  # (B, A) bool: real tokens with a finite entropy >= threshold
    threshold: float  # the k-th largest finite entropy, k = max(1, ceil(ratio * n)); NaN when n = 0
    ratio: float  # --high_entropy_token_ratio
    scope: str  # the high_entropy_mask scope they were ranked in: "step"


@dataclass
class Advantages:
    """What the advantages stage made, over the whole step (group estimators see every response of a prompt)."""
    advantages: torch.Tensor  # (B, A) float32, zero on padding
    returns: torch.Tensor  # (B, A) float32, zero on padding
    kl: torch.Tensor | None = None  # (B, A) per-token KL estimate vs the reference, zero on padding
    kl_per_response: torch.Tensor | None = None  # (B,) mean of kl over each response's tokens
    loss_mask: torch.Tensor | None = None  # (B, A) float 0/1: the tokens trained on (--policy_loss_entropy_top_ratio)


def tokenize_prompts(tokenizer, prompts: list[str], max_len: int) -> list[list[int]]:
    """Prompt token ids, left-truncated to `max_len` (the end of a prompt is what the answer follows)."""
    ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    return [p[-max_len:] for p in ids]


def generate(groups, tokenizer, args, rows: list[dict], seed: int, n: int | None = None) -> dict:
    """Sample ``n`` (default n_samples_per_prompt) responses per prompt (vLLM engines, or HF generate
    in the actor workers), each with the log-probs the engine sampled it with; returns the step's
    packed rollouts (`pack_rollouts`)."""
    n = n or args.n_samples_per_prompt
    prompts = [r["prompt"] for r in rows for _ in range(n)]
    labels = [r.get("label", "") for r in rows for _ in range(n)]
    prompt_ids = tokenize_prompts(tokenizer, prompts, args.prompt_max_len)
    pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    if groups.vllm is not None:
        if args.vllm_enable_sleep:
            groups.vllm.wake_up()
        outs = groups.vllm.generate(prompt_ids, seed)  # (ids, vLLM's sample log-probs) each
        if args.vllm_enable_sleep:
            groups.vllm.sleep()  # frees the GPU memory of the KV cache for the training stages
    else:
        world = len(groups.actor)
        shards = [prompt_ids[len(prompt_ids) * w // world: len(prompt_ids) * (w + 1) // world] for w in range(world)]
        outs = ray.get([w.generate.remote(s, pad_id, eos_id, seed * 1000 + i)
                        for i, (w, s) in enumerate(zip(groups.actor.workers, shards))])
        outs = [r for o in outs for r in o]  # (ids, HF generate's log-probs) each
    responses, rollout_log_probs = [ids for ids, _ in outs], [lps for _, lps in outs]
    return pack_rollouts(prompt_ids, responses, prompts, labels, n, pad_id, eos_id, rollout_log_probs)


def pack_rollouts(prompt_ids: list[list[int]], responses: list[list[int]], prompts: list[str], labels: list,
                  n_samples_per_prompt: int, pad_id: int, eos_id: int | None,
                  rollout_log_probs: list[list[float]] | None = None) -> dict:
    """The step's rollouts as the later stages read them: ``sequences`` (B, S) long,
    ``attention_mask`` (B, S) long, ``action_mask`` (B, A) bool (openrlhf_ext/rollout/sequences.py),
    ``group_index`` (B,) long, ``prompts`` and ``labels`` (lists of B), ``info`` with
    ``response_length``, ``total_length`` and ``truncated``, each (B,), and ``rollout_log_probs``
    (B, A) float32 (NaN on padding; None when the engine gave none).

    Responses of a prompt are contiguous (rows i*n .. i*n+n-1): the group estimators rely on it.
    """
    batch = pack_sequences(prompt_ids, responses, pad_id, eos_id)
    rollout = None
    if rollout_log_probs is not None:
        rollout = torch.full(batch["action_mask"].shape, float("nan"))  # (B, A) NaN on padding
        for i, (lps, n) in enumerate(zip(rollout_log_probs, batch["action_mask"].sum(-1).tolist())):
            rollout[i, :n] = torch.tensor(lps[:n], dtype=torch.float32)  # cut at EOS as the response is
    batch.update(rollout_log_probs=rollout)
    batch.update(
        prompts=prompts, labels=labels,
        group_index=torch.arange(len(prompts) // n_samples_per_prompt).repeat_interleave(n_samples_per_prompt),
        info={"response_length": batch["action_mask"].sum(-1),  # (B,) long
              "total_length": batch["attention_mask"].sum(-1),  # (B,) long: prompt + response
              "truncated": batch.pop("truncated")},  # (B,) bool: hit generate_max_len without EOS
    )
    return batch


def score(groups, reward_fn, tokenizer, rollouts: dict, micro_batch_size: int) -> torch.Tensor:
    """Rewards (B,) float32: the reward model group if there is one, else `reward_fn` on the texts."""
    if groups.reward is not None:
        payloads = [e.to_payload(MODEL_INPUTS) for e in make_experiences(rollouts, micro_batch_size)]
        return torch.cat(in_item_order(ray.get(groups.reward.call_round_robin("forward", payloads)))).float()
    A = rollouts["action_mask"].shape[1]
    responses = [tokenizer.decode(seq[-A:][m].tolist(), skip_special_tokens=True)
                 for seq, m in zip(rollouts["sequences"], rollouts["action_mask"])]
    queries = [p + r for p, r in zip(rollouts["prompts"], responses)]
    rewards = reward_fn(queries, rollouts["prompts"], rollouts["labels"])
    return torch.tensor([float(r) for r in rewards], dtype=torch.float32)


def forward(groups, rollouts: dict, micro_batch_size: int, top_k: int = 0,
            models: tuple[str, ...] = ("actor", "ref", "critic")) -> Forward:
    """Old log-probs + entropy (+ the top-``top_k`` alternatives) from one actor forward, reference
    log-probs, values: every group of ``models`` at once, each worker a round-robin share of the
    step's micro-batches of ``micro_batch_size`` responses."""
    payloads = [e.to_payload(MODEL_INPUTS) for e in make_experiences(rollouts, micro_batch_size)]
    names = [name for name in models if getattr(groups, name) is not None]
    refs = {name: getattr(groups, name).call_round_robin("forward", payloads, *((top_k,) if name == "actor" else ()))
            for name in names}  # all launched
    outs = {name: in_item_order(ray.get(r)) for name, r in refs.items()}  # one result per micro-batch
    actor = {k: torch.cat([o[k] for o in outs["actor"]]) for k in outs["actor"][0]}  # (B, A) / (B, A, K) each
    return Forward(log_probs=actor["log_probs"], entropy=actor["entropy"],
                   alternative_ids=actor.get("alternative_ids"), alternative_log_probs=actor.get("alternative_log_probs"),
                   ref_log_probs=torch.cat(outs["ref"]) if "ref" in outs else None,
                   values=torch.cat(outs["critic"]) if "critic" in outs else None)


def mark_entropy(entropy: torch.Tensor, action_mask: torch.Tensor, ratio: float) -> EntropyMarks:
    """The step's top-``ratio`` highest-entropy tokens, once: for the step's log line and for the saver."""
    scope = "step"
    marks, threshold = high_entropy_mask(entropy, action_mask, ratio, scope=scope)
    return EntropyMarks(marks=marks, threshold=threshold, ratio=ratio, scope=scope)


def advantages(args, action_mask: torch.Tensor, rewards: torch.Tensor, fwd: Forward) -> Advantages:
    """KL, advantages, returns and the policy loss's token mask over the whole step; ``rewards`` (B,)."""
    kl = kl_per_response = None
    if fwd.ref_log_probs is not None:
        kl = kl_estimate(fwd.log_probs, fwd.ref_log_probs, args.kl_estimator) * action_mask  # (B, A)
        kl_per_response = masked_mean(kl, action_mask, dim=-1)  # (B,)
    adv, ret = compute_advantages(
        rewards, action_mask, args.advantage_estimator, args.n_samples_per_prompt, values=fwd.values,
        gamma=args.gamma, lambd=args.lambd,
        kl=None if args.use_kl_loss else kl, kl_coef=0.0 if args.use_kl_loss else args.init_kl_coef,
        advantage_std_norm=not args.no_advantage_std_norm)
    loss_mask = None
    if args.policy_loss_entropy_top_ratio is not None:
        loss_mask = high_entropy_loss_mask(fwd.entropy, action_mask, args.policy_loss_entropy_top_ratio).float()
    return Advantages(advantages=adv, returns=ret, kl=kl, kl_per_response=kl_per_response, loss_mask=loss_mask)


def entropy_stats(entropy: torch.Tensor, action_mask: torch.Tensor, marks: EntropyMarks) -> dict:
    """The step's entropy over every response token: mean, p80, the top-ratio threshold, share at/above it."""
    vals = entropy[action_mask.bool() & torch.isfinite(entropy)]  # (n,)
    if vals.numel() == 0:
        return {}
    return {"entropy/mean": vals.mean().item(),
            "entropy/p80": torch.quantile(vals.double(), 0.8).item(),
            "entropy/threshold": float(marks.threshold),
            "entropy/share_above": marks.marks.sum().item() / vals.numel()}


def mismatch_stats(log_probs: torch.Tensor, rollout_log_probs: torch.Tensor | None, action_mask: torch.Tensor) -> dict:
    """The step's train-inference mismatch over its response tokens: mean, p95 and max of
    |trainer log-prob - rollout engine log-prob| (the manifest's ``logprob_mismatch``, same rule)."""
    if rollout_log_probs is None:
        return {}
    m = action_mask.bool()
    found = mismatch_summary(log_probs[m].numpy(), rollout_log_probs[m].numpy())
    return {} if found is None else {f"mismatch/{k}": v for k, v in found.items()}


def probe(groups, tokenizer, reward_fn, args, rows: list[dict], seed: int, top_k: int = 0) -> list[Experience]:
    """Responses to the run's probe prompts under the current weights, never trained on:
    ``args.trajectory_probe_samples`` per prompt from the rollout engine, their rewards, and one
    actor forward for their log-probs, entropy and alternatives. Returns their experiences, for the
    saver (which marks them by the step's own threshold)."""
    mb = args.micro_rollout_batch_size
    rollouts = generate(groups, tokenizer, args, rows, seed, n=args.trajectory_probe_samples)
    rewards = score(groups, reward_fn, tokenizer, rollouts, mb)  # (P,)
    fwd = forward(groups, rollouts, mb, top_k=top_k, models=("actor",))
    return make_experiences(rollouts, mb, info={"reward": rewards}, **fwd.experience_fields())


def save_trajectories(saver, global_step: int, experiences: list[Experience], marks: EntropyMarks,
                      probes: list[Experience] | None = None) -> dict | None:
    """Hand every response of the step to the saver (so its threshold sees them all), with the probe
    responses when the step has them. The step's marks go with the rule they were ranked by: a saver
    that ranks by that rule writes them instead of ranking again."""
    if saver is None:
        return None
    return saver.save_step(global_step, experiences, marks=(marks.marks, marks.threshold),
                           marks_rule=(marks.ratio, marks.scope), probes=probes)


def update(groups, args, experiences: list[Experience], global_step: int) -> dict:
    """PPO epochs on the actor (and critic) workers; each gets a round-robin share of the experiences."""
    keys = ("sequences", "attention_mask", "action_mask", "action_log_probs", "advantages", "returns",
            "base_action_log_probs", "values", "loss_mask")
    payloads = [e.to_payload(keys) for e in experiences]
    refs = groups.actor.call_round_robin("train", payloads, args.seed + global_step)
    if groups.critic is not None:
        refs += groups.critic.call_round_robin("train", payloads, args.seed + global_step)
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
    """Per-step means of the per-sample info (reward, response_length, truncated, kl, ...)."""
    out = {}
    for k in experiences[0].info:
        v = torch.cat([torch.as_tensor(e.info[k], dtype=torch.float32) for e in experiences])
        out[k] = v.mean().item()
    return out


def advantage_stats(advantages: torch.Tensor, action_mask: torch.Tensor) -> dict:
    """The advantages' mean size over every response token of the step; both (B, A)."""
    return {"advantage_abs": masked_mean(advantages.abs(), action_mask).item()}
