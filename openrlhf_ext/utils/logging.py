"""Progress and metrics: a tqdm bar over steps, one console line per step, TensorBoard, W&B.

    >>> import argparse
    >>> args = argparse.Namespace(use_tensorboard=None, use_wandb=None, logging_steps=1)
    >>> log = StepLogger(args, total_steps=20, initial_step=0)   # the tqdm bar is drawn on stderr
    >>> log.log_step(1, {"reward": 0.4, "entropy/mean": 1.234, "time/generate": 1.5, "time/step": 2.1})
    step 1/20 | reward 0.400 | ent 1.234 | 2.1s (gen 1.50)
    >>> log.close()
"""
from __future__ import annotations

import math

from tqdm.auto import tqdm

# The console line: (metric key, label, format). Timings are appended after these.
CONSOLE_FIELDS = (
    ("reward", "reward", "{:.3f}"),
    ("response_length", "len", "{:.1f}"),
    ("entropy/mean", "ent", "{:.3f}"),
    ("entropy/p80", "p80", "{:.3f}"),
    ("entropy/threshold", "thr", "{:.3f}"),
    ("entropy/share_above", "above", "{:.0%}"),
    ("kl", "kl", "{:.4f}"),
    # train-inference mismatch |logprob - rollout_logprob|: the step's mean and p95
    ("mismatch/mean_abs", "mism", "{:.2g}"),
    ("mismatch/p95_abs", "mism95", "{:.2g}"),
    ("policy_loss", "loss", "{:.4f}"),
)
STAGES = ("generate", "score", "forward", "advantages", "probe", "save", "update", "sync", "checkpoint")


def format_step_line(step: int, total: int, m: dict) -> str:
    parts = [f"step {step}/{total}"]
    for key, label, fmt in CONSOLE_FIELDS:
        v = m.get(key)
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            parts.append(f"{label} {fmt.format(v)}")
    times = " ".join(f"{s[:3]} {m[f'time/{s}']:.2f}" for s in STAGES if f"time/{s}" in m)
    parts.append(f"{m.get('time/step', 0.0):.1f}s ({times})")
    return " | ".join(parts)


class StepLogger:
    def __init__(self, args, total_steps: int, initial_step: int = 0):
        self.args, self.total = args, total_steps
        self.bar = tqdm(total=total_steps, initial=initial_step, desc="train", unit="step", dynamic_ncols=True)
        self.tb = None
        self.wandb = None
        if args.use_tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=args.use_tensorboard)
        if args.use_wandb is not None:
            import wandb  # imported only when asked for: it is a heavy, optional dependency

            if args.use_wandb:
                wandb.login(key=args.use_wandb)
            self.wandb = wandb.init(project=args.wandb_project, name=args.wandb_run_name,
                                    config={k: v for k, v in vars(args).items() if _plain(v)}, reinit=True)

    def log_step(self, step: int, metrics: dict) -> None:
        self.bar.update(1)
        self.bar.set_postfix(reward=f"{metrics.get('reward', float('nan')):.3f}")
        if step % max(self.args.logging_steps, 1):
            return
        self.bar.write(format_step_line(step, self.total, metrics))
        scalars = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(f"train/{k}", v, step)
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.log({f"train/{k}": v for k, v in scalars.items()}, step=step)

    def close(self) -> None:
        self.bar.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def _plain(v) -> bool:
    return isinstance(v, (int, float, str, bool, type(None), list, tuple))
