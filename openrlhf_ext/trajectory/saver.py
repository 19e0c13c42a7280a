"""TrajectorySaver: a training step's experiences -> trajectory records -> files (FORMAT.md).

The saver reads OpenRLHF-style experience objects by attribute and never calls back into
training. It sees every response of the step, so the high-entropy threshold is the step's, then
keeps a few responses (``--trajectory_sampling``) and writes them with their per-token texts,
entropies and marks. A failure to write is a warning, not a crash, unless ``--trajectory_strict``.

What an experience may carry beyond OpenRLHF's fields, each read when present (a trainer that has
none of them gets files without those keys): ``rollout_log_probs`` (B, A), the log-probs the
rollout engine reported (saved as ``rollout_logprob``, and the manifest's ``logprob_mismatch``);
``alternative_ids`` / ``alternative_log_probs`` (B, A, K), the top K of the sampling distribution
(saved as ``alternatives`` on marked tokens, or on all, ``--alternatives_for``). Probe responses
(experiences of the run's probe prompts) go to ``probes_step_<N>.json``, marked by the step's
own threshold.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from .alternatives import ALTERNATIVES_FOR, alternative_lists, fork_words
from .files import MANIFEST_FILE, STEPS_DIR, forget_steps_after, npz_file_name, probe_file_name, step_file_name
from .files import upsert_manifest, write_npz, write_records, write_summary
from .folder_lock import FolderInUse, FolderLock
from .layouts import ExperienceLayoutError, check_layout_name
from .manifest_entry import manifest_entry, mismatch_summary
from .marks import high_entropy_mask, marks_at_threshold
from .records import StepBatch, build_record, collect_step
from .sampling import choose_responses

logger = logging.getLogger(__name__)


class TrajectorySaver:
    """Saves trajectories of training steps as FORMAT.md files.

    Example (a toy tokenizer and experience; in training, the model's tokenizer and the step's
    experiences, read by attribute):
        >>> import argparse, tempfile
        >>> from openrlhf_ext.trajectory import add_trajectory_args, load_trajectories
        >>> from openrlhf_ext.trajectory.toy import toy_experience, toy_tokenizer
        >>> tokenizer = toy_tokenizer()
        >>> parser = add_trajectory_args(argparse.ArgumentParser())
        >>> args = parser.parse_args(["--save_trajectories", "--mark_high_entropy_tokens",
        ...                           "--high_entropy_token_ratio", "0.25", "--trajectory_dir", tempfile.mkdtemp()])
        >>> saver = TrajectorySaver.from_args(args, tokenizer)
        >>> experience = toy_experience(tokenizer, ["1+1=", "1+1="], ["2", "11"], rewards=[1.0, 0.0])
        >>> entry = saver.save_step(1, [experience])
        >>> entry["file"], entry["num_responses"], entry["num_response_tokens"], entry["reward_mean"]
        ('trajectories_step_1.json', 2, 3, 0.5)
        >>> for record in load_trajectories(saver.out_dir):   # the top 25% of the step's 3 tokens: 1 marked
        ...     print([(t["text"], round(t["entropy_score"], 2), t["high_entropy"]) for t in record["pure_generated_tokens"]])
        [('2', 1.37, True)]
        [('1', 1.05, False), ('1', 1.21, False)]
    """

    def __init__(
        self,
        out_dir,
        tokenizer,
        num_to_save: int = 10,
        mark_high_entropy: bool = True,
        ratio: float = 0.2,
        scope: str = "step",
        save_every: int = 1,
        sampling: str = "groups",
        save_trace: bool = False,
        strict: bool = False,
        seed: int = 42,
        group=None,
        run_info: dict | None = None,
        layout: str = "auto",
        top_k_alternatives: int = 5,
        alternatives_for: str = "high",
    ):
        self.out_dir = Path(out_dir)
        self.tokenizer = tokenizer
        self.num_to_save = num_to_save
        self.mark_high_entropy = mark_high_entropy
        self.ratio = ratio
        self.scope = scope
        self.save_every = max(1, save_every)
        self.sampling = sampling
        self.save_trace = save_trace
        self.strict = strict
        self.seed = seed
        self.group = group
        self.run_info = run_info or {}
        self.layout = check_layout_name(layout)  # how experiences are laid out (layouts.py)
        if alternatives_for not in ALTERNATIVES_FOR:
            raise ValueError(f"alternatives_for must be one of {ALTERNATIVES_FOR}, got {alternatives_for!r}")
        self.top_k_alternatives = max(0, int(top_k_alternatives))  # at most K alternatives a token (0: none)
        self.alternatives_for = alternatives_for  # "high": on marked tokens only; "all": on every response token
        self.failures = 0
        self._lock = FolderLock(self.out_dir, "TrajectorySaver")  # taken by open() or the first write

    @classmethod
    def from_args(cls, args, tokenizer, group=None, layout: str | None = None) -> "TrajectorySaver":
        """Build from parsed flags (``add_trajectory_args``); unknown trainers' args work too,
        missing flags take their defaults. ``--trajectory_dir`` overrides
        ``<save_path>/trajectories``. ``layout`` (else ``args.trajectory_layout``, else "auto")
        says how the experiences are laid out: "response", "shifted" (upstream OpenRLHF) or "auto"."""
        get = lambda name, default: getattr(args, name, default) if getattr(args, name, None) is not None else default  # noqa: E731
        out_dir = get("trajectory_dir", None) or str(Path(get("save_path", "./ckpt")) / "trajectories")
        from .. import __version__

        flags = {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, type(None), list))}
        run_info = {
            "model": get("pretrain", None),
            "tokenizer": getattr(tokenizer, "name_or_path", None) or get("pretrain", None),
            "flags": flags,
            "package_version": __version__,
        }
        return cls(
            out_dir,
            tokenizer,
            num_to_save=get("num_trajectories_to_save", 10),
            mark_high_entropy=bool(get("mark_high_entropy_tokens", False)),
            ratio=get("high_entropy_token_ratio", 0.2),
            scope=get("high_entropy_scope", "step"),
            save_every=get("trajectory_save_steps", 1),
            sampling=get("trajectory_sampling", "groups"),
            save_trace=bool(get("save_entropy_trace", False)),
            strict=bool(get("trajectory_strict", False)),
            seed=get("seed", 42),
            group=group,
            run_info=run_info,
            layout=layout or get("trajectory_layout", "auto"),
            top_k_alternatives=get("save_top_k_alternatives", 5),
            alternatives_for=get("alternatives_for", "high"),
        )

    def open(self) -> "TrajectorySaver":
        """Take the folder's writer lock now (the first write takes it otherwise), so that a
        second run writing the same folder stops before it trains: ``FolderInUse`` names the
        holder. ``OSError`` when the folder cannot be written. Held until ``close()``."""
        self._lock.acquire()
        return self

    def close(self) -> None:
        """Give the folder's writer lock back (the end of the process does too)."""
        self._lock.release()

    def __enter__(self) -> "TrajectorySaver":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def forget_steps_after(self, step: int) -> list[str]:
        """Before resuming from step ``step``'s checkpoint: drop the files and manifest lines of
        later steps (a crash between a checkpoint and the next leaves some), so the resumed run
        writes each step once. ``OSError`` when the folder cannot be written."""
        self.open()
        return forget_steps_after(self.out_dir, step)

    def should_save(self, global_step: int) -> bool:
        return global_step % self.save_every == 0

    def save_step(self, global_step: int, experiences, marks=None, probes=None, marks_rule=None) -> dict | None:
        """Write step ``global_step``'s files; returns its manifest entry, or None when the step
        is not one to save or writing failed (a warning is logged; raised with ``strict``).
        ``marks``: the step's ``(marks, threshold)`` if the trainer has them already, as
        ``high_entropy_mask`` gives them; ``marks_rule``: the ``(ratio, scope)`` they were ranked
        by. They are used when that is this saver's rule and it ranks without a process group, or
        when no rule is given (they are then taken to be at this saver's ratio and scope); else,
        and when None, the marks are computed here.
        ``probes``: experiences of the responses to the run's probe prompts at this step (never
        trained on): all of them go to ``probes_step_<N>.json``, marked by this step's threshold
        (scope "response": each response's own), and the manifest line names the file."""
        if not self.should_save(global_step):
            return None
        if marks_rule is not None:
            ratio, scope = marks_rule
            if not (scope == self.scope and ratio == self.ratio and self.group is None):
                marks = None  # ranked by another rule than this saver's
        try:
            entry = self._save_step(global_step, experiences, marks, probes)
        except FolderInUse:  # another run writes this folder: a configuration error, whatever strict says
            raise
        except Exception as e:  # the saver must never stop training unless asked to
            if self.strict:
                raise
            self.failures += 1
            # One clear message, not one per step: a full disk would otherwise flood the log. A
            # layout error is logged as an error: no step will be saved until the glue is fixed.
            if self.failures == 1:
                logger.log(
                    logging.ERROR if isinstance(e, ExperienceLayoutError) else logging.WARNING,
                    "trajectory saver: step %d not saved to %s (%s: %s); training goes on and later "
                    "failures are counted quietly. Use --trajectory_strict to make this fatal.",
                    global_step, self.out_dir, type(e).__name__, e,
                )
            else:
                logger.debug("trajectory saver: step %d not saved (%s: %s)", global_step, type(e).__name__, e)
            return None
        if self.failures:
            logger.warning("trajectory saver: saving again from step %d, after %d step(s) that could not be saved",
                           global_step, self.failures)
            self.failures = 0
        return entry

    def _save_step(self, global_step: int, experiences, given_marks=None, probes=None) -> dict:
        started = time.perf_counter()
        batch = collect_step(experiences, self.layout)  # an experience it cannot read touches no file
        self._lock.acquire()
        marks, threshold = given_marks if given_marks is not None and self.mark_high_entropy else self._marks(batch)
        chosen = choose_responses(
            batch.group, batch.rewards, self.num_to_save, self.sampling, seed=self.seed + global_step,
            forks=marks.sum(-1).tolist(),
        )
        path = self.out_dir / step_file_name(global_step)
        write_records(path, self._records(batch, chosen, global_step, marks, threshold))
        if self.save_trace:
            self._write_trace(batch, global_step)
        mask = batch.mask  # (R, A) every response token of the step
        probe_file = None if probes is None else self._save_probes(global_step, probes, threshold)
        entry = manifest_entry(
            global_step,
            num_responses=len(batch),
            num_saved=len(chosen),
            entropies=batch.entropy[batch.mask].numpy(),  # (n,) every response token of the step
            rewards=batch.rewards,
            ratio=self.ratio if self.mark_high_entropy else None,
            # per-response scope: one threshold per response, none for the step
            threshold=None if isinstance(threshold, torch.Tensor) else threshold,
            file_bytes=path.stat().st_size,
            # the step's fork words over all its responses, not only the saved ones
            fork_words=fork_words(self.tokenizer, batch.responses[(marks & mask).numpy()]) if self.mark_high_entropy else None,
            logprob_mismatch=None if batch.rollout_log_probs is None
            else mismatch_summary(batch.log_probs[mask].numpy(), batch.rollout_log_probs[mask].numpy()),
            probe_file=probe_file,
            save_seconds=round(time.perf_counter() - started, 4),
        )
        upsert_manifest(self.out_dir / MANIFEST_FILE, entry, repair=True)  # lines an earlier failure left out
        write_summary(self.out_dir, self.run_info)
        return entry

    def _marks(self, batch: StepBatch):
        if not self.mark_high_entropy or batch.entropy.numel() == 0:
            return torch.zeros_like(batch.mask), None
        return high_entropy_mask(batch.entropy, batch.mask, self.ratio, scope=self.scope, group=self.group)

    def _save_probes(self, global_step: int, probes, threshold) -> str:
        """Write every probe response of the step, marked by the step's threshold; the file's name."""
        batch = collect_step(probes, self.layout)
        if not self.mark_high_entropy or batch.entropy.numel() == 0:
            marks, tau = torch.zeros_like(batch.mask), None
        elif self.scope == "step":
            tau = float("nan") if threshold is None else float(threshold)
            marks = marks_at_threshold(batch.entropy, batch.mask, tau)
        else:  # per-response scope: each probe response ranked inside itself, as the step's are
            marks, tau = high_entropy_mask(batch.entropy, batch.mask, self.ratio, scope="response")
        name = probe_file_name(global_step)
        write_records(self.out_dir / name, self._records(batch, range(len(batch)), global_step, marks, tau, probe=True))
        return name

    def _records(self, batch: StepBatch, chosen, global_step: int, marks, threshold, probe: bool = False):
        """The records of responses ``chosen``, built one at a time as the file is written."""
        alternatives = self._alternatives(batch, list(chosen), marks)
        for i in chosen:
            yield self._record(batch, i, global_step, marks, threshold, alternatives.get(i), probe)

    def _alternatives(self, batch: StepBatch, chosen: list, marks) -> dict:
        """Response index -> one entry per response token: its alternatives, or None where it gets
        none. Looked up for all the chosen responses at once (one text per distinct token id)."""
        if not self.top_k_alternatives or batch.alternative_ids is None or not chosen:
            return {}
        rows = np.asarray(chosen)
        mask = batch.mask.numpy()[rows]  # (n, A)
        wanted = mask if self.alternatives_for == "all" else mask & marks.numpy()[rows]  # (n, A)
        r, c = np.nonzero(wanted)
        lists = alternative_lists(self.tokenizer, batch.alternative_ids[rows[r], c],
                                  batch.alternative_log_probs[rows[r], c], self.top_k_alternatives)
        place = np.cumsum(mask, 1) - 1  # (n, A) index of each slot among its response's tokens
        out = {i: [None] * int(m.sum()) for i, m in zip(chosen, mask)}
        for ri, ci, alts in zip(r.tolist(), c.tolist(), lists):
            out[chosen[ri]][place[ri, ci]] = alts or None
        return out

    def _record(self, batch: StepBatch, i: int, global_step: int, marks, threshold, alternatives=None,
                probe: bool = False) -> dict:
        row_mask = batch.mask[i]
        tau = threshold[i].item() if isinstance(threshold, torch.Tensor) else threshold
        return build_record(
            self.tokenizer,
            global_step=global_step,
            experience_index=batch.experience_index[i],
            sample_in_exp=batch.sample_in_exp[i],
            prompt_ids=batch.prompt_ids(i),
            response_ids=batch.response_ids(i),
            entropy=batch.entropy[i][row_mask].tolist(),
            log_probs=batch.log_probs[i][row_mask].tolist(),
            high_entropy=marks[i][row_mask].tolist(),
            advantages=batch.advantages[i],
            returns=batch.returns[i],
            info=batch.info[i],
            threshold=tau,
            ratio=self.ratio if self.mark_high_entropy else None,
            label=batch.labels[i],
            prompt_text=batch.prompts[i],
            group_index=batch.group[i],
            rollout_log_probs=None if batch.rollout_log_probs is None else batch.rollout_log_probs[i][row_mask].tolist(),
            alternatives=alternatives,
            probe=probe,
        )

    def _write_trace(self, batch: StepBatch, global_step: int) -> None:
        mask = batch.mask.numpy()  # (R, A)
        width = int(np.flatnonzero(mask.any(0)).max()) + 1 if mask.any() else 0
        mask = mask[:, :width]  # (R, L) no all-padding columns at the end
        uid = np.array(batch.group, dtype=np.int32)  # (R,) prompt group
        sample_index = np.zeros(len(batch), dtype=np.int32)  # (R,) index inside the prompt group
        seen: dict = {}
        for i, g in enumerate(batch.group):
            sample_index[i] = seen.get(g, 0)
            seen[g] = sample_index[i] + 1
        write_npz(
            self.out_dir / STEPS_DIR / npz_file_name(global_step),
            {
                "entropies": np.where(mask, batch.entropy.numpy()[:, :width], 0).astype(np.float16),  # (R, L)
                "response_mask": mask,  # (R, L)
                "responses": np.where(mask, batch.responses[:, :width], 0).astype(np.int32),  # (R, L)
                "response_index": np.arange(len(batch), dtype=np.int32),  # (R,)
                "prompt_length": batch.prompt_mask.sum(1).astype(np.int32),  # (R,)
                "uid": uid,
                "sample_index": sample_index,
                "rewards": batch.rewards.astype(np.float32),  # (R,)
                "advantages": batch.advantages.astype(np.float32),  # (R,)
            },
        )

