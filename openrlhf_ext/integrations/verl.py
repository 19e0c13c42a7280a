"""verl (>= 0.7, its ``RayPPOTrainer``): save every step's rollouts with per-token entropy.

Launch with this module instead of ``verl.trainer.main_ppo``: the same Hydra overrides, plus the
saver's flags under ``+trainer.trajectory_saver`` (our command-line flags' names)::

    python -m openrlhf_ext.integrations.verl <your verl overrides> \\
        +trainer.trajectory_saver.save_trajectories=true \\
        +trainer.trajectory_saver.mark_high_entropy_tokens=true \\
        +trainer.trajectory_saver.high_entropy_token_ratio=0.2

(scripts/verl_grpo_with_trajectories.sh is a whole example). Files go to
``<trainer.default_local_dir>/trajectories`` unless ``trajectory_dir`` says otherwise. Or, in a
script of your own, pass ``TrajectoryTaskRunner`` to ``run_ppo`` (it makes verl's TaskRunner build
a ``TrajectoryRayPPOTrainer``), or build that trainer yourself.

What it does: ``_compute_old_log_prob`` keeps the ``entropys`` its workers computed from the
old-log-prob pass, at the rollout temperature (verl divides the logits by
``actor_rollout_ref.rollout.temperature`` before its entropy: the sampling distribution's, as
FORMAT.md wants); ``fit`` logs their mean and drops them. After the advantages, the first of
``_update_critic`` / ``_update_actor`` of the step saves the step's batch: verl's layout is this
project's (left-padded prompts, right-padded responses, ``response_mask``), so no conversion but
names. No extra forward pass: the cost is the saver's own (well under 1% of a step, see
docs/benchmarks.md) on the driver.

verl 0.9 made a new trainer (``trainer.use_v1=true``, TransferQueue) its default; this drop-in
hooks ``RayPPOTrainer``, which 0.9 still runs with ``trainer.use_v1=false`` (and which 0.7-0.8
always run). Without ``_compute_old_log_prob`` (``algorithm.rollout_correction.bypass_mode``) the
records have no entropy and no marks.
"""
from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import ray
import torch
from verl.trainer.ppo.ray_trainer import RayPPOTrainer

from openrlhf_ext.trajectory import TrajectorySaver
from openrlhf_ext.trajectory.layouts import nan_unless_sampled
from openrlhf_ext.utils.tensors import masked_mean

from .common import ray_actor_class, saver_args

logger = logging.getLogger(__name__)

CONFIG_KEY = "trajectory_saver"  # under trainer: +trainer.trajectory_saver.<flag>=<value>


def saver_from_config(config, tokenizer) -> TrajectorySaver | None:
    """The saver that ``trainer.trajectory_saver`` asks for, or None when it does not ask.

    Example:
        >>> saver = saver_from_config(OmegaConf.create({"trainer": {"trajectory_saver": {   # doctest: +SKIP
        ...     "save_trajectories": True}, "default_local_dir": "ckpt"}}), tokenizer)
        >>> saver.out_dir                                                                   # doctest: +SKIP
        PosixPath('ckpt/trajectories')
    """
    from omegaconf import OmegaConf

    node = config.trainer.get(CONFIG_KEY)
    if node is None:
        return None
    flags = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    args = saver_args(flags, where=f"+trainer.{CONFIG_KEY}",
                      save_path=config.trainer.get("default_local_dir") or "./checkpoints",
                      seed=config.get("data", {}).get("seed") or 42,
                      pretrain=config.get("actor_rollout_ref", {}).get("model", {}).get("path"))
    return TrajectorySaver.from_args(args, tokenizer) if args.save_trajectories else None


def verl_experience(batch, entropys: torch.Tensor | None) -> SimpleNamespace:
    """One step's ``DataProto`` (after the advantages) as an experience the saver reads.

    verl's layout is the saver's: ``input_ids`` (B, P + R) = [left-padded prompt | right-padded
    response]. Every real response token is in the texts; entropy, log-prob and advantages cover
    the ``response_mask`` tokens (a multi-turn rollout's tool output is masked out there).
    """
    t, extra = batch.batch, batch.non_tensor_batch
    responses = t["responses"]  # (B, R)
    B, R = responses.shape
    real = t["attention_mask"][:, -R:].bool().cpu()  # (B, R) real response tokens
    sampled = t["response_mask"].bool().cpu() if "response_mask" in t.keys() else real  # (B, R)

    def per_sample_mean(key):  # (B,) mean over the sampled tokens
        if key not in t.keys():
            return None
        return masked_mean(t[key].detach().float().cpu(), sampled, dim=-1)

    info = {k: v.tolist() for k, v in extra.items() if k != "uid" and _scalars(v)}  # python scalars
    if "token_level_scores" in t.keys():  # the reward, before any KL penalty
        info["reward"] = t["token_level_scores"].detach().float().cpu().sum(-1)
    labels = [rm.get("ground_truth") if isinstance(rm, dict) else None for rm in extra.get("reward_model", [None] * B)]
    return SimpleNamespace(
        sequences=t["input_ids"].cpu(),  # (B, P + R)
        attention_mask=t["attention_mask"].cpu(),  # (B, P + R)
        action_mask=real,  # (B, R)
        action_entropy=nan_unless_sampled(entropys, sampled),  # (B, R), NaN where no token was sampled
        action_log_probs=nan_unless_sampled(t["old_log_probs"] if "old_log_probs" in t.keys() else None, sampled),
        advantages=per_sample_mean("advantages"),  # (B,)
        returns=per_sample_mean("returns"),  # (B,)
        info=info,
        group_index=extra["uid"].tolist() if "uid" in extra else None,  # responses to one prompt share a uid
        labels=[x if isinstance(x, (str, int, float)) or x is None else str(x) for x in labels],
        prompts=None,  # decoded from the prompt ids
    )


def _scalars(values) -> bool:
    return isinstance(values, np.ndarray) and values.ndim == 1 and all(
        isinstance(x, (bool, int, float, str, np.number, np.bool_)) for x in values)


class TrajectoryRayPPOTrainer(RayPPOTrainer):
    """``RayPPOTrainer`` that saves each step's rollouts after the advantages (see the module doc).

    Example:
        >>> trainer = TrajectoryRayPPOTrainer(config=config, tokenizer=tokenizer, ...)  # doctest: +SKIP
        >>> trainer.init_workers(); trainer.fit()                                      # doctest: +SKIP
    """

    def _compute_old_log_prob(self, batch):
        result = super()._compute_old_log_prob(batch)
        old = result[0] if isinstance(result, tuple) else result  # (DataProto, mfu) since 0.7
        entropys = old.batch["entropys"] if "entropys" in old.batch.keys() else None  # (B, R)
        # fit() pops "entropys" from `old` right after: keep our own reference, with the responses
        # it belongs to (to check the rows are still in this order at save time).
        self._trajectory_entropys = (batch.batch["responses"], None if entropys is None else entropys.detach().cpu())
        return result

    def _update_critic(self, batch):
        self._save_trajectories(batch)
        return super()._update_critic(batch)

    def _update_actor(self, batch):
        self._save_trajectories(batch)
        return super()._update_actor(batch)

    def _load_checkpoint(self):
        result = super()._load_checkpoint()
        saver = self._trajectory_saver()
        if saver is not None and self.global_steps:  # resuming: the later steps are redone
            saver.forget_steps_after(self.global_steps)
        return result

    def _trajectory_saver(self):
        if not hasattr(self, "_trajectory_saver_obj"):
            self._trajectory_saver_obj = saver_from_config(self.config, self.tokenizer)
            self._trajectory_saved_step = None
        return self._trajectory_saver_obj

    def _save_trajectories(self, batch) -> None:
        saver = self._trajectory_saver()
        step = self.global_steps
        if saver is None or self._trajectory_saved_step == step:
            return
        self._trajectory_saved_step = step
        responses, entropys = getattr(self, "_trajectory_entropys", (None, None))
        self._trajectory_entropys = (None, None)
        if entropys is not None and not torch.equal(responses.cpu(), batch.batch["responses"].cpu()):
            logger.warning("openrlhf_ext: step %d: the batch was reordered after the old-log-prob pass; "
                           "its trajectories are saved without entropy", step)
            entropys = None

        def experiences():  # built inside save_step, so a failure follows the saver's rule
            yield verl_experience(batch, entropys)

        saver.save_step(step, experiences())


def _runner_module():
    """The module whose TaskRunner builds a ``RayPPOTrainer``: main_ppo_v0 since verl 0.9, main_ppo before."""
    import importlib

    try:
        return importlib.import_module("verl.trainer.main_ppo_v0")
    except ImportError:
        return importlib.import_module("verl.trainer.main_ppo")


_RUNNER_MODULE = _runner_module()


class _TrajectoryTaskRunner(ray_actor_class(_RUNNER_MODULE.TaskRunner)):
    """verl's TaskRunner, building a ``TrajectoryRayPPOTrainer`` (in the runner's own Ray process)."""

    def run(self, config):
        _RUNNER_MODULE.RayPPOTrainer = TrajectoryRayPPOTrainer
        return super().run(config)


TrajectoryTaskRunner = ray.remote(num_cpus=1)(_TrajectoryTaskRunner)  # for run_ppo(config, TrajectoryTaskRunner)


def main() -> None:
    """``python -m openrlhf_ext.integrations.verl <Hydra overrides>``: verl's own ``main_ppo`` entry
    (its Hydra config, checks and Ray start) with ``TrajectoryTaskRunner`` as the task runner."""
    import verl.trainer.main_ppo as main_ppo

    run_ppo = main_ppo.run_ppo

    def run_ppo_with_trajectories(config, task_runner_class=None):
        if config.trainer.get("use_v1", False):
            raise SystemExit("openrlhf_ext: the trajectory saver hooks verl's RayPPOTrainer, and verl >= 0.9 runs "
                             "its new v1 trainer by default: add trainer.use_v1=false (or ++trainer.use_v1=false)")
        return run_ppo(config, task_runner_class=TrajectoryTaskRunner)

    main_ppo.run_ppo = run_ppo_with_trajectories  # main() looks run_ppo up when it runs
    main_ppo.main()


if __name__ == "__main__":
    main()
