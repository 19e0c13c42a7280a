"""Save a ``trl.GRPOTrainer``'s rollouts as trajectory files: one call before ``train()``.

    trainer = GRPOTrainer(model=..., reward_funcs=[...], args=GRPOConfig(...), train_dataset=...)
    save_trajectories(trainer, mark_high_entropy_tokens=True, num_trajectories_to_save=16)
    trainer.train()       # -> <output_dir>/trajectories/trajectories_step_N.json, manifest, summary

What a step file holds: every completion token's entropy of softmax(logits / temperature) (the
distribution it was sampled from, under the weights that sampled it), the round's top-ratio marks,
lossless token texts, the reward (TRL's weighted sum of the reward functions) with each function's
value as ``info["reward/<name>"]``, the advantage, the prompt text and the label.

Numbering: one file per generation round, named by the optimizer step it feeds first, i.e. TRL's
``state.global_step + 1`` when the round is generated. TRL generates once every
``steps_per_generation * num_iterations`` micro-batches, so with ``steps_per_generation = 4`` and
no gradient accumulation the files are steps 1, 5, 9, ... Rounds that start in the same
optimizer step (``steps_per_generation < gradient_accumulation_steps``) share that step's file.
``trajectory_save_steps = k`` keeps the rounds that feed a multiple of k.

How it stays out of training's way: TRL's callbacks see no tensors, so the hook wraps four methods
of this one trainer object (generation + scoring, the reward calculation, the log-prob/entropy
forward, ``compute_loss``) and reads what they return. It changes no value TRL computes: it only
asks TRL's generation-time forward for the entropies it would drop (``compute_entropy=True``), and
tags the rows of a saved round with one extra batch key, removed before ``compute_loss`` sees the
batch. Entropies come from forwards TRL runs anyway:
- when a round spans optimizer steps (``steps_per_generation > gradient_accumulation_steps`` or
  ``num_iterations > 1``, or vLLM importance sampling), TRL computes the old log-probs at
  generation time; that call is asked for its entropies too;
- otherwise every micro-batch of the round is trained on under the weights that sampled it, and
  ``compute_loss`` already computes entropies (TRL's ``entropy`` metric): they are kept.
Only where TRL has no entropies (0.19, Liger loss) does the hook run one no-grad forward over the
process's rows of the round, at generation time, under a forked RNG.

With several processes every process keeps its slice; when a step ends the slices are gathered to
the main process, which alone writes, so marks, sampling and the manifest cover the whole round.
"""
from __future__ import annotations

import inspect
import logging
import math
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from transformers import TrainerCallback

from openrlhf_ext.trajectory import TrajectorySaver, token_entropy
from openrlhf_ext.trajectory.layouts import nan_unless_sampled

from .common import saver_args

logger = logging.getLogger(__name__)

ROW_KEY = "_trajectory_row"  # (B, 2) int64 [round, row]: rides through TRL's shuffle and split, removed before the loss
LABEL_KEYS = ("label", "answer", "solution", "ground_truth", "target")


# ---- TRL version differences: the only place that knows them --------------------------------
def _entropy_method(trainer) -> str | None:
    """The name of TRL's log-prob forward that can also return entropies, or None.

    - 0.19: only ``_get_per_token_logps`` (log-probs, no entropies): None.
    - 0.20 to 1.6: ``_get_per_token_logps_and_entropies(..., compute_entropy=...)`` -> (logps, entropies).
    - 1.7 and newer (1.16 here): the same name -> (logps, entropies, aux_loss); see ``_logps_and_entropies``.
    """
    name = "_get_per_token_logps_and_entropies"
    return name if callable(getattr(trainer, name, None)) else None


def _logps_and_entropies(result):
    """(logps, entropies) out of that method's result: a pair before 1.7, a triple from 1.7."""
    return result[0], result[1]


def _loss_computes_entropies(trainer) -> bool:
    """Whether ``compute_loss`` calls that method with ``compute_entropy=True``: yes from 0.20 to
    1.16, except on the Liger path (``trainer.use_liger_loss`` in 0.20-0.2x, ``trainer.use_liger_kernel``
    in 1.0-1.9; 1.16 has neither: its fused LM head always yields entropies)."""
    liger = getattr(trainer, "use_liger_loss", False) or getattr(trainer, "use_liger_kernel", False)
    return _entropy_method(trainer) is not None and not liger


def _trl_version() -> str | None:
    try:
        import trl
    except ImportError:  # pragma: no cover - the trainer came from somewhere
        return None
    return getattr(trl, "__version__", None)
# -----------------------------------------------------------------------------------------------


def save_trajectories(trainer, *, label_key: str | None = None, **flags) -> TrajectorySaver:
    """Make a constructed ``trl.GRPOTrainer`` write trajectory files while it trains.

    Args:
        trainer: a ``trl.GRPOTrainer`` (or subclass), before ``train()``.
        label_key: the dataset column saved as each record's ``label`` (default: the first of
            ``label``, ``answer``, ``solution``, ``ground_truth``, ``target`` that the rows have).
        **flags: the saver's flags, named as ``add_trajectory_args`` names them:
            ``num_trajectories_to_save``, ``mark_high_entropy_tokens``, ``high_entropy_token_ratio``,
            ``high_entropy_scope``, ``trajectory_sampling``, ``trajectory_save_steps``,
            ``trajectory_dir`` (default ``<trainer.args.output_dir>/trajectories``),
            ``save_entropy_trace``, ``trajectory_strict``. Defaults are the flags' defaults.

    Returns:
        The ``TrajectorySaver`` it writes with (its ``out_dir`` is the run folder).

    Example:
        >>> from trl import GRPOConfig, GRPOTrainer                                       # doctest: +SKIP
        >>> from openrlhf_ext.integrations.trl import save_trajectories                   # doctest: +SKIP
        >>> trainer = GRPOTrainer(model=path, reward_funcs=reward, args=GRPOConfig("runs/grpo"),
        ...                       train_dataset=data)                                     # doctest: +SKIP
        >>> saver = save_trajectories(trainer, mark_high_entropy_tokens=True)             # doctest: +SKIP
        >>> trainer.train()                                                               # doctest: +SKIP
        >>> saver.out_dir                                                                 # doctest: +SKIP
        PosixPath('runs/grpo/trajectories')
    """
    if not callable(getattr(trainer, "_generate_and_score_completions", None)):
        raise TypeError(f"save_trajectories expects a trl.GRPOTrainer, got {type(trainer).__name__}")
    if any(isinstance(cb, TRLTrajectoryHook) for cb in trainer.callback_handler.callbacks):
        raise RuntimeError("save_trajectories was already called on this trainer")
    model = trainer.accelerator.unwrap_model(trainer.model)
    temperature = float(getattr(trainer, "temperature", trainer.args.temperature))
    # Calling this is the --save_trajectories flag; the rest are checked as the command line checks them.
    args = saver_args({**flags, "save_trajectories": True}, where="save_trajectories()",
                      exclude=("save_trajectories",) if "save_trajectories" in flags else (),
                      trajectory_dir=str(Path(trainer.args.output_dir) / "trajectories"), seed=trainer.args.seed,
                      pretrain=getattr(model.config, "_name_or_path", None) or None,
                      trainer=f"trl.{type(trainer).__name__}", trl_version=_trl_version(), temperature=temperature)
    # TRL's rounds are laid out as ours ([left-padded prompt | right-padded completion]); say so,
    # since a round of one-token prompts would also fit the shifted layout's shapes.
    args.trajectory_layout = "response"
    saver = TrajectorySaver.from_args(args, _tokenizer(trainer))
    # The hook picks the rounds to save (their numbers skip steps: see trajectory_save_steps above).
    saver.save_every = 1
    hook = TRLTrajectoryHook(trainer, saver, every=args.trajectory_save_steps, label_key=label_key,
                             temperature=temperature)
    hook.install()
    return saver


class TRLTrajectoryHook(TrainerCallback):
    """The wrappers and the callback behind ``save_trajectories`` (one per trainer).

    ``seconds`` is the time spent in the hook itself (capture, any extra forward, gathering and
    writing), for benchmarks.
    """

    def __init__(self, trainer, saver: TrajectorySaver, every: int, label_key, temperature: float):
        self.trainer, self.saver, self.every, self.label_key = trainer, saver, every, label_key
        self.temperature = temperature
        args = trainer.args
        self.generate_every = args.steps_per_generation * trainer.num_iterations  # micro-batches per round
        # Every micro-batch of a round trained under the weights that sampled it (TRL's own test for
        # skipping the old log-probs): then compute_loss's entropies are the sampling ones.
        aligned = args.gradient_accumulation_steps % self.generate_every == 0
        self.reuse_loss_entropies = aligned and _loss_computes_entropies(trainer)
        self.rounds_per_step = max(1, math.ceil(self.generate_every / args.gradient_accumulation_steps))
        self.pending: dict[int, list] = {}  # step -> its rounds (SimpleNamespace each), in order
        self.by_seq: dict[int, SimpleNamespace] = {}  # round number -> round, while rows wait for entropies
        self.seq = 0
        self.generating = None  # list of (logps, entropies) of policy forwards during a saved round's generation
        self.rewards = None  # (B, F) this process's rewards per function, from the last reward calculation
        self.loss_rows = None  # (b, 2) rows of the micro-batch compute_loss is working on
        self.seconds = 0.0
        self.warned = False

    def install(self) -> None:
        t = self.trainer
        for name in ("_generate_and_score_completions", "_calculate_rewards", "compute_loss"):
            setattr(t, name, getattr(self, "_" + name.lstrip("_"))(getattr(t, name)))
        method = _entropy_method(t)
        if method:
            setattr(t, method, self._logps_forward(getattr(t, method)))
        t.add_callback(self)

    # -- which rounds are saved ------------------------------------------------------------------
    def wanted(self, step: int) -> bool:
        """A round numbered ``step`` feeds steps step .. step + rounds_per_step - 1: saved when one
        of them is a multiple of ``trajectory_save_steps``."""
        last = step + self.rounds_per_step - 1
        return last // self.every > (step - 1) // self.every

    # -- wrappers --------------------------------------------------------------------------------
    def _generate_and_score_completions(self, original):
        def wrapped(inputs, *args, **kwargs):
            step = self.trainer.state.global_step + 1
            if not self.trainer.model.training or not self.wanted(step):
                return original(inputs, *args, **kwargs)
            self.generating, self.rewards = [], None
            try:
                out = original(inputs, *args, **kwargs)
            finally:
                generating, self.generating = self.generating, None
            started = time.perf_counter()
            self._start_round(step, inputs, out, generating)
            self.seconds += time.perf_counter() - started
            return out

        return wrapped

    def _calculate_rewards(self, original):
        def wrapped(inputs, prompts, *args, **kwargs):
            rewards_per_func = original(inputs, prompts, *args, **kwargs)  # (B_all, F) gathered over processes
            if self.generating is not None:
                i, n = self.trainer.accelerator.process_index, len(prompts)
                self.rewards = rewards_per_func[i * n:(i + 1) * n].detach()  # (B, F) this process's rows
            return rewards_per_func

        return wrapped

    def _logps_forward(self, original):
        signature = inspect.signature(original)

        def wrapped(model, *args, **kwargs):
            gen = self.generating is not None and model is not getattr(self.trainer, "ref_model", None)
            if gen:  # ask the generation-time forward for its entropies too (they cost no extra forward)
                bound = signature.bind(model, *args, **kwargs)
                bound.arguments["compute_entropy"] = True
                args, kwargs, model = bound.args[1:], bound.kwargs, bound.args[0]
            result = original(model, *args, **kwargs)
            logps, entropies = _logps_and_entropies(result)
            if gen:
                self.generating.append((logps, entropies))
            elif self.loss_rows is not None and entropies is not None:
                self._fill(self.loss_rows, logps.detach(), entropies.detach())
                self.loss_rows = None  # the first call is the policy's; any later one is not ours
            return result

        return wrapped

    def _compute_loss(self, original):
        def wrapped(model, inputs, *args, **kwargs):
            if isinstance(inputs, dict) and ROW_KEY in inputs:
                self.loss_rows = inputs[ROW_KEY]
                inputs = {k: v for k, v in inputs.items() if k != ROW_KEY}  # TRL never sees the key
            try:
                return original(model, inputs, *args, **kwargs)
            finally:
                self.loss_rows = None

        return wrapped

    # -- rounds ----------------------------------------------------------------------------------
    def _start_round(self, step: int, inputs, out: dict, generating: list) -> None:
        rnd = self._round(step, inputs, out)
        old = out.get("old_per_token_logps")
        found = [(lp, ent) for lp, ent in generating if lp is old and ent is not None]
        if found:  # TRL's old-log-prob forward at generation time
            rnd.logps, rnd.entropy = found[0]
        elif self.reuse_loss_entropies:  # compute_loss will see every row under these weights
            n_rows, width = rnd.mask.shape
            rnd.entropy = torch.full((n_rows, width), float("nan"), device=rnd.mask.device)  # (B, C)
            rnd.logps = torch.full_like(rnd.entropy, float("nan"))  # (B, C)
            rnd.filled = torch.zeros(n_rows, dtype=torch.bool)  # (B,)
            out[ROW_KEY] = torch.stack([torch.full((n_rows,), rnd.seq), torch.arange(n_rows)], 1)  # (B, 2)
            self.by_seq[rnd.seq] = rnd
        else:
            rnd.entropy = self._entropy_forward(rnd)
        self.pending.setdefault(step, []).append(rnd)

    def _round(self, step: int, inputs, out: dict) -> SimpleNamespace:
        """This process's rows of a round, as TRL returned them (tensors stay where they are)."""
        mask = out["completion_mask"].bool()  # (B, C) a copy: TRL's mask is left alone
        # mask_truncated_completions zeroes a truncated row's mask: keep its tokens, but its
        # entropies were computed with the completion masked out, so they are not saved.
        zeroed = ~mask.any(-1)  # (B,)
        if zeroed.any():
            mask[zeroed] = out["completion_ids"][zeroed] != _tokenizer(self.trainer).pad_token_id
        unsampled = zeroed[:, None].expand_as(mask)  # (B, C) tokens whose entropy is not saved
        if out.get("tool_mask") is not None:  # tool outputs inside a completion were not sampled
            unsampled = unsampled | (out["tool_mask"] == 0)
        rnd = SimpleNamespace(
            step=step, seq=self.seq, prompt_ids=out["prompt_ids"], prompt_mask=out["prompt_mask"],
            completion_ids=out["completion_ids"], mask=mask, unsampled=unsampled, advantages=out["advantages"],
            rewards=self.rewards, entropy=None, logps=None, filled=None,
            prompts=[x.get("prompt") if isinstance(x.get("prompt"), str) else None for x in inputs],
            labels=[self._label(x) for x in inputs],
        )
        self.seq, self.rewards = self.seq + 1, None
        return rnd

    def _fill(self, rows: torch.Tensor, logps: torch.Tensor, entropies: torch.Tensor) -> None:
        started = time.perf_counter()
        rows = rows.tolist()
        rnd = self.by_seq.get(rows[0][0])
        if rnd is not None and entropies.shape[1] == rnd.entropy.shape[1]:
            idx = torch.tensor([r for _, r in rows])
            new = ~rnd.filled[idx]  # with num_iterations > 1 a row comes back: keep its first pass
            rnd.entropy[idx[new]] = entropies[new.to(entropies.device)].float()
            rnd.logps[idx[new]] = logps[new.to(logps.device)].float()
            rnd.filled[idx] = True
            if bool(rnd.filled.all()):
                del self.by_seq[rnd.seq]
        self.seconds += time.perf_counter() - started

    def _entropy_forward(self, rnd) -> torch.Tensor:
        """One no-grad forward over this process's rows: entropy at the sampling temperature."""
        t = self.trainer
        ids = torch.cat([rnd.prompt_ids, rnd.completion_ids], 1)  # (B, P + C)
        attention = torch.cat([rnd.prompt_mask, rnd.mask.to(rnd.prompt_mask.dtype)], 1)  # (B, P + C)
        width = rnd.completion_ids.shape[1]
        chunk = t.args.per_device_train_batch_size
        devices = [ids.device] if ids.device.type == "cuda" else []
        parts = []
        with torch.no_grad(), torch.random.fork_rng(devices=devices), t.accelerator.autocast():
            for s in range(0, ids.shape[0], chunk):
                logits = t.model(input_ids=ids[s:s + chunk], attention_mask=attention[s:s + chunk],
                                 logits_to_keep=width + 1).logits[:, -width - 1:-1]  # (b, C, V)
                parts.append(token_entropy(logits, self.temperature))  # (b, C)
        return torch.cat(parts)

    def _label(self, row: dict):
        keys = (self.label_key,) if self.label_key else LABEL_KEYS
        for key in keys:
            if key in row:
                value = row[key]
                return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)
        return None

    # -- saving ----------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, **kwargs):
        # Resumed from a checkpoint: drop the files of later steps a crash left behind, so each
        # step is written once and by the weights that resumed.
        if state.global_step > 0 and self.trainer.accelerator.is_main_process:
            self.saver.forget_steps_after(state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        self._flush(lambda step: step <= state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        self._flush(lambda step: True)
        self.saver.close()  # a finished train() gives the folder back (a later write takes it again)

    def _flush(self, due) -> None:
        for step in sorted(s for s in self.pending if due(s)):
            started = time.perf_counter()
            rounds = self.pending.pop(step)
            payload = [self._experience(r, offset) for r, offset in zip(rounds, self._group_offsets(rounds))]
            t = self.trainer
            if t.accelerator.num_processes > 1:  # every process calls this: the step ends on all of them
                from accelerate.utils import gather_object

                payload = gather_object(payload)  # round-major per process: [p0 r0, p0 r1, p1 r0, ...]
            if t.accelerator.is_main_process:
                self.saver.save_step(step, payload)
            self.seconds += time.perf_counter() - started

    def _group_offsets(self, rounds) -> list:
        offsets, total = [], 0
        world = self.trainer.accelerator.num_processes
        for r in rounds:
            offsets.append(total)
            total += (r.mask.shape[0] * world) // self.trainer.num_generations + 1
        return offsets

    def _experience(self, rnd, group_offset: int) -> SimpleNamespace:
        """One process's rows of one round, in the saver's layout (OpenRLHF-style experience)."""
        t = self.trainer
        self.by_seq.pop(rnd.seq, None)
        if rnd.filled is not None and not bool(rnd.filled.all()) and not self.warned:
            self.warned = True
            logger.warning("trajectory saver: compute_loss returned no entropies for %d row(s) of step %d; "
                           "they are saved without entropy", int((~rnd.filled).sum()), rnd.step)
        sampled = ~rnd.unsampled.cpu()  # (B, C) per-token values are float32 on the CPU, NaN elsewhere
        n = rnd.mask.shape[0]
        first = t.accelerator.process_index * n  # this process's first row in the round's global order
        return SimpleNamespace(
            sequences=torch.cat([rnd.prompt_ids, rnd.completion_ids], 1).cpu(),  # (B, P + C)
            attention_mask=torch.cat([rnd.prompt_mask.bool(), rnd.mask], 1).cpu(),  # (B, P + C)
            action_mask=rnd.mask.cpu(),  # (B, C)
            action_entropy=nan_unless_sampled(rnd.entropy, sampled),  # (B, C) entropy of the sampling distribution
            action_log_probs=nan_unless_sampled(rnd.logps, sampled),  # (B, C) log-prob under the sampling weights, or None
            advantages=rnd.advantages.detach().float().cpu(),  # (B,) or (B, C)
            returns=None,  # GRPO has none
            info=self._reward_info(rnd.rewards),
            group_index=[group_offset + (first + i) // t.num_generations for i in range(n)],  # TRL's grouping
            labels=rnd.labels,
            prompts=rnd.prompts,
        )

    def _reward_info(self, rewards) -> dict:
        """``reward``: the weighted sum TRL logs (NaN when every function returned None), and
        ``reward/<name>`` for each reward function."""
        if rewards is None:
            return {}
        rewards = rewards.float().cpu()  # (B, F)
        total = (rewards * self.trainer.reward_weights.float().cpu()).nansum(1)  # (B,)
        info = {"reward": total.masked_fill(rewards.isnan().all(1), float("nan"))}
        for j, name in enumerate(self.trainer.reward_func_names):
            info[f"reward/{name}"] = rewards[:, j]
        return info


def _tokenizer(trainer):
    """The tokenizer of TRL's processing class (a VLM's processor holds one)."""
    return getattr(trainer.processing_class, "tokenizer", trainer.processing_class)
