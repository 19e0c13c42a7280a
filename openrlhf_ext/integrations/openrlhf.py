"""Upstream OpenRLHF (0.8.3 - 0.11.x): save every PPO step's rollouts with per-token entropy.

One command, upstream's own launcher and flags after ``--``::

    python -m openrlhf_ext.integrations.openrlhf --save_trajectories --mark_high_entropy_tokens \\
        -- --pretrain Qwen/Qwen2.5-1.5B ...            # any openrlhf.cli.train_ppo_ray flags

or, in a launch script of your own, our actor class in place of upstream's ``PolicyModelActor``::

    from openrlhf_ext.integrations.openrlhf import trajectory_policy_actor
    actor_cls = trajectory_policy_actor(save_trajectories=True, mark_high_entropy_tokens=True)
    actor_model = RayActorGroup(num_nodes, num_gpus_per_node, actor_cls, pg=pg, ...)

Where it hooks (the same methods from 0.8.3 to 0.11.2): the controller calls ``forward`` on the
actor group for the old log-probs of each micro-batch, then ``append`` with the finished
experiences (advantages and returns computed), then ``fit``. ``forward`` also computes, from the
very logits of that pass (a forward hook on the model, before upstream touches them), the entropy
of softmax(logits / temperature) of every token: the distribution the rollout sampled from.
Upstream's own entropy (``compute_entropy``, used for ``entropy_loss_coef`` and logged) is taken
in the training step, from the logits *before* the division by the temperature in 0.8.3 - 0.11.0
(0.11.1 and later scale first), so at temperature != 1 it is not the sampling distribution's; ours
always is. ``append`` keeps each
experience with its entropy (rows whose ``forward`` ran on another rank, as with dynamic batching,
cost one extra no-grad forward here); ``fit`` gathers the step's experiences on rank 0, which saves
them with ``TrajectorySaver`` (layout "shifted" detected: see trajectory/layouts.py) before training.

Not covered: ring attention or tensor parallelism (the logits a rank sees are a slice: no entropy,
the records are still written), steps where the actor does not train (``--critic.freezing_steps``:
not saved), the async trainer (not tried).
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import types

import torch

from openrlhf_ext.trajectory import TrajectorySaver, token_entropy

from .common import ray_actor_class, saver_args

logger = logging.getLogger(__name__)


def upstream_arg(args, nested: str, flat: str, default=None):
    """An upstream flag from 0.11's nested args (``args.rollout.temperature``) or the flat args
    of earlier versions (``args.temperature``).

    Example:
        >>> import types
        >>> upstream_arg(types.SimpleNamespace(rollout=types.SimpleNamespace(temperature=0.7)), "rollout.temperature", "temperature")
        0.7
        >>> upstream_arg(types.SimpleNamespace(temperature=0.9), "rollout.temperature", "temperature")
        0.9
    """
    value = args
    for part in nested.split("."):
        value = getattr(value, part, None)
        if value is None:
            break
    if value is None:
        value = getattr(args, flat, None)
    return default if value is None else value


class TrajectoryActorMixin:
    """Mixed in before upstream's ``PolicyModelActor`` (``trajectory_policy_actor`` does it)."""

    trajectory_flags: dict = {}  # the saver's flags, baked into the class that Ray ships to workers

    def init_model_from_pretrained(self, strategy, pretrain, *args, **kwargs):
        result = super().init_model_from_pretrained(strategy, pretrain, *args, **kwargs)
        self._trajectory_setup(strategy, pretrain)
        return result

    def forward(self, sequences, action_mask=None, attention_mask=None, *args, **kwargs):
        if getattr(self, "_trajectory_open", False):  # experiences but no fit: the actor did not train
            self._trajectory_close()
        return self._forward_with_entropy(sequences, action_mask, attention_mask, *args, **kwargs)

    def append(self, experience):
        if not self._trajectory_open:
            self._trajectory_open = True
            self._trajectory_step += 1
        if self._trajectory_keep():
            self._trajectory_pending.append(self._saved_fields(experience))
        return super().append(experience)

    def fit(self, *args, **kwargs):
        if self._trajectory_open:
            self._trajectory_save()
        return super().fit(*args, **kwargs)

    # -- setup --------------------------------------------------------------------------------
    def _trajectory_setup(self, strategy, pretrain) -> None:
        args = strategy.args
        self._trajectory_temperature = float(upstream_arg(args, "rollout.temperature", "temperature", 1.0))
        ring = upstream_arg(args, "ds.ring_attn_size", "ring_attn_size", 1)
        tp = upstream_arg(args, "ds.tensor_parallel_size", "ds_tensor_parallel_size", 1)
        self._trajectory_duplicates = int(ring) * int(tp)  # ranks that hold the same experiences
        self._trajectory_entropy_ok = self._trajectory_duplicates == 1
        self._trajectory_rank, self._trajectory_world = _rank_and_world()
        self._trajectory_entropies: dict = {}  # real-token bytes of a row -> (n - 1,) entropies
        self._trajectory_pending: list = []
        self._trajectory_open = False
        flags = saver_args(
            self.trajectory_flags, where="openrlhf_ext trajectory flags",
            save_path=upstream_arg(args, "ckpt.output_dir", "save_path", "./ckpt"),
            seed=upstream_arg(args, "train.seed", "seed", 42), pretrain=pretrain,
        )
        self._trajectory_every = flags.trajectory_save_steps
        checkpoint = getattr(self, "checkpoint_states", None) or {}
        self._trajectory_step = int(checkpoint.get("global_step", 0))  # the controller's step count
        self._trajectory_saver = None
        if flags.save_trajectories and self._trajectory_rank == 0:
            self._trajectory_saver = TrajectorySaver.from_args(flags, getattr(self, "tokenizer", None))
            if self._trajectory_step:  # resuming: later steps' files are redone
                self._trajectory_saver.forget_steps_after(self._trajectory_step)
        self._trajectory_enabled = bool(flags.save_trajectories)
        if self._trajectory_enabled and not self._trajectory_entropy_ok and self._trajectory_rank == 0:
            logger.warning("openrlhf_ext: ring attention / tensor parallelism: trajectories are saved without entropy")

    def _trajectory_due(self, step: int) -> bool:
        """Whether step ``step`` is saved (``trajectory_save_steps``: every k-th step)."""
        return getattr(self, "_trajectory_enabled", False) and step % self._trajectory_every == 0

    def _trajectory_keep(self) -> bool:
        """Whether this rank keeps this step's experiences (one rank of each duplicate group)."""
        return self._trajectory_due(self._trajectory_step) and self._trajectory_rank % self._trajectory_duplicates == 0

    # -- entropy ------------------------------------------------------------------------------
    def _forward_with_entropy(self, sequences, action_mask, attention_mask, *args, **kwargs):
        with self._entropy_hook(sequences, attention_mask):
            return super().forward(sequences, action_mask, attention_mask, *args, **kwargs)

    @contextlib.contextmanager
    def _entropy_hook(self, sequences, attention_mask):
        # The controller's old-log-prob forward comes before the step's first append opens it (it
        # belongs to step + 1); the extra pass of _entropy_of runs inside the open step.
        step = getattr(self, "_trajectory_step", 0) + (0 if getattr(self, "_trajectory_open", False) else 1)
        if not (self._trajectory_due(step) and self._trajectory_entropy_ok):  # a step not saved: no entropy work
            yield
            return
        rows = _real_rows(sequences, attention_mask)

        def hook(module, inputs, output):
            logits = output["logits"] if isinstance(output, dict) else output[0]  # (B, S, V) or packed (1, T, V)
            entropy = token_entropy(logits.detach(), self._trajectory_temperature)  # (B, S) or (1, T)
            self._keep_entropies(rows, tuple(sequences.shape), entropy)

        handle = self.actor.model.register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    def _keep_entropies(self, rows: list, shape: tuple, entropy: torch.Tensor) -> None:
        """Entropies of one model call, by row: padded (B, S) like the sequences, or packed
        (1, T) with the rows' real tokens one after the other (``--packing_samples``)."""
        entropy = entropy.float().cpu()
        if tuple(entropy.shape) == shape:
            for i, (key, pos) in enumerate(rows):  # position p is the distribution of token p + 1
                self._trajectory_entropies[key] = entropy[i, pos[:-1]]
        elif entropy.shape[0] == 1 and entropy.shape[1] == sum(len(pos) for _, pos in rows):
            offset = 0
            for key, pos in rows:
                self._trajectory_entropies[key] = entropy[0, offset : offset + len(pos) - 1]
                offset += len(pos)
        else:
            logger.warning("openrlhf_ext: logits of shape %s do not match the batch; no entropy kept", tuple(entropy.shape))

    def _entropy_of(self, exp) -> torch.Tensor:
        """(B, S - 1) entropy of each token in the shifted layout (column j: token j + 1)."""
        seqs, attn = exp.sequences, exp.attention_mask
        entropy = torch.full((seqs.shape[0], seqs.shape[1] - 1), float("nan"))  # (B, S - 1)
        if not self._trajectory_entropy_ok:
            return entropy
        rows = _real_rows(seqs, attn)
        missing = [i for i, (key, _) in enumerate(rows) if key not in self._trajectory_entropies]
        if missing:  # their old-log-prob pass ran on another rank: one more pass here
            idx = torch.tensor(missing)
            self._forward_with_entropy(seqs[idx], exp.action_mask[idx], attn[idx])
        for i, (key, pos) in enumerate(rows):
            values = self._trajectory_entropies.get(key)
            if values is not None and len(pos) > 1:
                entropy[i, pos[:-1]] = values
        return entropy

    # -- saving -------------------------------------------------------------------------------
    def _saved_fields(self, exp):
        """What the saver reads of an upstream experience, on the CPU (what is gathered on rank 0)."""
        fields = ("sequences", "attention_mask", "action_mask", "action_log_probs", "rollout_log_probs", "advantages",
                  "returns", "rewards", "total_length", "truncated")  # rollout_log_probs: None unless vLLM kept them
        kept = {k: _cpu(getattr(exp, k, None)) for k in fields}
        kept["info"] = {k: _cpu(v) for k, v in (getattr(exp, "info", None) or {}).items()}
        kept["prompts"], kept["labels"] = getattr(exp, "prompts", None), getattr(exp, "labels", None)
        kept["action_entropy"] = self._entropy_of(types.SimpleNamespace(**kept))
        return types.SimpleNamespace(**kept)

    def _trajectory_save(self) -> None:
        pending, step = self._trajectory_pending, self._trajectory_step
        self._trajectory_close()
        if not self._trajectory_due(step):
            return
        if self._trajectory_world > 1:
            gathered = [None] * self._trajectory_world if self._trajectory_rank == 0 else None
            torch.distributed.gather_object(pending, gathered, dst=0)
            pending = [e for part in (gathered or []) for e in part]
        if self._trajectory_saver is not None:
            self._trajectory_saver.save_step(step, pending)

    def _trajectory_close(self) -> None:
        self._trajectory_open = False
        self._trajectory_pending = []
        self._trajectory_entropies = {}


def _rank_and_world():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _cpu(value):
    return value.detach().cpu() if isinstance(value, torch.Tensor) else value


def _real_rows(sequences, attention_mask) -> list:
    """(key, positions) per row: the bytes of its real tokens, and where they are."""
    seqs = sequences.detach().cpu().long()
    real = torch.ones_like(seqs, dtype=torch.bool) if attention_mask is None else attention_mask.detach().cpu().bool()
    out = []
    for row, m in zip(seqs, real):
        pos = m.nonzero().squeeze(-1)  # (n,)
        out.append((row[pos].numpy().tobytes(), pos))
    return out


def trajectory_policy_actor(base=None, **flags):
    """Upstream's ``PolicyModelActor`` (or ``base``) with the trajectory saver, as a Ray actor class.

    ``flags`` are the saver's flags by name (``save_trajectories``, ``num_trajectories_to_save``,
    ``mark_high_entropy_tokens``, ``high_entropy_token_ratio``, ``trajectory_dir``, ...); the files go
    to ``<save_path>/trajectories`` (``--ckpt.output_dir`` in 0.11, ``--save_path`` before) unless
    ``trajectory_dir`` says otherwise.

    Example:
        >>> cls = trajectory_policy_actor(save_trajectories=True, mark_high_entropy_tokens=True)  # doctest: +SKIP
        >>> actor_model = RayActorGroup(1, 8, cls, pg=pg, num_gpus_per_actor=0.2)                 # doctest: +SKIP
    """
    import ray

    saver_args(flags, where="trajectory_policy_actor")  # refuse a typo here, not on every worker
    if base is None:
        from openrlhf.trainer.ray.ppo_actor import PolicyModelActor as base
    cls = type("TrajectoryPolicyModelActor", (TrajectoryActorMixin, ray_actor_class(base)),
               {"trajectory_flags": dict(flags), "__module__": __name__})
    return ray.remote(num_gpus=1)(cls)


def split_argv(argv: list) -> tuple[dict, list]:
    """(saver flags that differ from their defaults, upstream's argv) from our command line.

    Example:
        >>> split_argv(["--save_trajectories", "--", "--pretrain", "m", "--rollout.temperature", "0.7"])
        ({'save_trajectories': True}, ['--pretrain', 'm', '--rollout.temperature', '0.7'])
    """
    from openrlhf_ext.trajectory import add_trajectory_args

    ours, rest = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = add_trajectory_args(argparse.ArgumentParser(
        prog="python -m openrlhf_ext.integrations.openrlhf", allow_abbrev=False,
        description="Run upstream OpenRLHF's train_ppo_ray with the trajectory saver: saver flags, "
                    "then -- and the flags of openrlhf.cli.train_ppo_ray."))
    flags, unknown = parser.parse_known_args(ours)
    defaults = vars(parser.parse_args([]))
    return {k: v for k, v in vars(flags).items() if v != defaults[k]}, unknown + rest


def main(argv=None) -> None:
    """``python -m openrlhf_ext.integrations.openrlhf [saver flags] -- [train_ppo_ray flags]``:
    upstream's launcher, run as its own ``__main__``, with our actor class in place of its own."""
    import runpy

    import openrlhf.trainer.ray.ppo_actor as ppo_actor

    flags, upstream_argv = split_argv(list(sys.argv[1:] if argv is None else argv))
    # train_ppo_ray imports PolicyModelActor from this module when it runs: it gets ours.
    ppo_actor.PolicyModelActor = trajectory_policy_actor(ppo_actor.PolicyModelActor, **flags)
    sys.argv = ["openrlhf.cli.train_ppo_ray", *upstream_argv]
    runpy.run_module("openrlhf.cli.train_ppo_ray", run_name="__main__", alter_sys=True)

if __name__ == "__main__":
    main()
