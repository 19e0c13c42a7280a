"""The controller: one process that drives the Ray groups through the steps of training.

    trainer = PPOTrainer(args, groups, tokenizer, prompts, reward_fn, saver, probe_prompts)
    history = trainer.fit()   # one dict of metrics per step

(train_colocate.py does exactly this; tests/test_groups.py runs single steps on a tiny model.)

A step is the stages of openrlhf_ext/trainer/stages.py in order, each timed into the step's log.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager

import ray
import torch

from openrlhf_ext.algo.experience import make_experiences
from openrlhf_ext.ray.groups import RayGroups
from openrlhf_ext.trainer import stages
from openrlhf_ext.trainer.checkpoint import latest_checkpoint_step, prune_old_checkpoints, tag_for
from openrlhf_ext.trainer.probes import is_probe_step
from openrlhf_ext.utils.logging import StepLogger


# The probes' sampling seeds stay apart from the training rollouts' (seed + step).
PROBE_SEED_OFFSET = 1_000_003


class PPOTrainer:
    def __init__(self, args, groups: RayGroups, tokenizer, prompts: list[dict], reward_fn, saver=None,
                 probe_prompts: list[dict] | None = None):
        self.args, self.groups, self.tokenizer = args, groups, tokenizer
        self.prompts, self.reward_fn, self.saver = prompts, reward_fn, saver
        self.probe_prompts = probe_prompts or []  # answered at probe steps, never trained on (trainer/probes.py)
        if len(prompts) < args.rollout_batch_size:
            raise ValueError(f"the prompt set has {len(prompts)} prompts, fewer than --rollout_batch_size "
                             f"{args.rollout_batch_size}: lower --rollout_batch_size or add prompts.")
        self.steps_per_episode = len(prompts) // args.rollout_batch_size
        total = self.steps_per_episode * args.num_episodes
        self.total_steps = min(total, args.max_steps) if args.max_steps else total
        self.global_step = 0  # steps completed
        self.history: list[dict] = []  # per-step metrics, for callers and tests
        self.last_experiences = None  # the newest step's experiences (what the saver was handed)

    # ---- prompts -------------------------------------------------------------------------------
    def rows_for_step(self, step: int) -> list[dict]:
        """The prompts of global step `step` (1-based): a seeded shuffle per episode, so a resumed
        run sees exactly the prompts the uninterrupted run would have."""
        s = step - 1
        episode, i = divmod(s, self.steps_per_episode)
        perm = torch.randperm(len(self.prompts), generator=torch.Generator().manual_seed(self.args.seed + episode))
        rb = self.args.rollout_batch_size
        return [self.prompts[j] for j in perm[i * rb : (i + 1) * rb].tolist()]

    # ---- one step ------------------------------------------------------------------------------
    def step(self, step: int) -> dict:
        a, g = self.args, self.groups
        times: dict[str, float] = {}

        @contextmanager
        def timed(name):
            t0 = time.perf_counter()
            yield
            times[f"time/{name}"] = time.perf_counter() - t0

        t_step = time.perf_counter()
        saving = self.saver is not None and self.saver.should_save(step)
        top_k = self.saver.top_k_alternatives if saving else 0  # alternatives only for the steps saved
        with timed("generate"):
            rollouts = stages.generate(g, self.tokenizer, a, self.rows_for_step(step), seed=a.seed + step)
        mask = rollouts["action_mask"]  # (B, A) the step's response tokens
        with timed("score"):
            rewards = stages.score(g, self.reward_fn, self.tokenizer, rollouts, a.micro_rollout_batch_size)  # (B,)
        with timed("forward"):
            fwd = stages.forward(g, rollouts, a.micro_rollout_batch_size, top_k)  # log-probs, entropy, alternatives, ref, values
        with timed("advantages"):
            marks = stages.mark_entropy(fwd.entropy, mask, getattr(a, "high_entropy_token_ratio", 0.2) or 0.2)
            adv = stages.advantages(a, mask, rewards, fwd)  # advantages, returns, kl, loss mask
        # What the stages made, cut into the experiences that the saver and the update read.
        experiences = make_experiences(
            rollouts, a.micro_rollout_batch_size, info={"reward": rewards, "kl": adv.kl_per_response},
            **fwd.experience_fields(), kl=adv.kl, advantages=adv.advantages, returns=adv.returns, loss_mask=adv.loss_mask)
        metrics = {**stages.step_metrics(experiences), **stages.advantage_stats(adv.advantages, mask),
                   **stages.entropy_stats(fwd.entropy, mask, marks),
                   **stages.mismatch_stats(fwd.log_probs, rollouts["rollout_log_probs"], mask)}
        probes = None
        if saving and self.probe_prompts and is_probe_step(step, a.trajectory_probe_steps, self.total_steps):
            with timed("probe"):  # under the weights that sampled this step, before the update
                probes = stages.probe(g, self.tokenizer, self.reward_fn, a, self.probe_prompts,
                                      seed=a.seed + step + PROBE_SEED_OFFSET, top_k=top_k)
        with timed("save"):
            saved = stages.save_trajectories(self.saver, step, experiences, marks, probes)
        if saved:
            metrics["trajectories_saved"] = float(saved.get("num_saved", 0)) if isinstance(saved, dict) else 1.0
        with timed("update"):
            metrics.update(stages.update(g, a, experiences, step))
        with timed("sync"):
            stages.sync_weights(g, a)
        self.global_step = step
        if a.save_steps > 0 and step % a.save_steps == 0:
            with timed("checkpoint"):
                self.save_checkpoint()
        metrics.update(times)
        metrics["time/step"] = time.perf_counter() - t_step
        n_tokens = int(sum(e.attention_mask.sum().item() for e in experiences))
        metrics["tokens"] = float(n_tokens)
        metrics["global_step"] = step
        self.last_experiences = experiences
        return metrics

    def fit(self) -> list[dict]:
        a = self.args
        if a.load_checkpoint:
            self.load_checkpoint()
        logger = StepLogger(a, self.total_steps, initial_step=self.global_step)
        try:
            for step in range(self.global_step + 1, self.total_steps + 1):
                m = self.step(step)
                self.history.append(m)
                logger.log_step(step, m)
        finally:
            logger.close()
        return self.history

    # ---- checkpoints ---------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        a, step = self.args, self.global_step
        state = {"global_step": step}
        refs = self.groups.actor.call("save_checkpoint", os.path.join(a.ckpt_path, "_actor"), tag_for(step), state)
        if self.groups.critic is not None:
            refs += self.groups.critic.call("save_checkpoint", os.path.join(a.ckpt_path, "_critic"), tag_for(step), state)
        ray.get(refs)
        prune_old_checkpoints(a.ckpt_path, a.max_ckpt_num)

    def load_checkpoint(self) -> None:
        """Resume at the newest checkpoint's step (train_colocate.py has already dropped the
        trajectories of later steps, before the saver opened its folder)."""
        a = self.args
        step = latest_checkpoint_step(a.ckpt_path)
        if step is None:
            print(f"[openrlhf_ext] --load_checkpoint: no checkpoint in {a.ckpt_path}, starting at step 1")
            return
        refs = self.groups.actor.call("load_checkpoint", os.path.join(a.ckpt_path, "_actor"), tag_for(step))
        if self.groups.critic is not None:
            refs += self.groups.critic.call("load_checkpoint", os.path.join(a.ckpt_path, "_critic"), tag_for(step))
        states = ray.get(refs)
        self.global_step = int(states[0].get("global_step", step))
        stages.sync_weights(self.groups, a)
        print(f"[openrlhf_ext] resumed from {a.ckpt_path} at global step {self.global_step}")

    def save_model(self) -> None:
        ray.get(self.groups.actor.call("save_model", self.args.save_path, self.args.pretrain))
