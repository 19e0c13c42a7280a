"""Train a policy with RL (GRPO / REINFORCE++ / PPO) on Ray + DeepSpeed, saving its trajectories.

    python train_colocate.py --save_trajectories --mark_high_entropy_tokens     # embedded model, CPU
    python train_colocate.py --pretrain Qwen/Qwen2.5-1.5B --prompt_data data.jsonl ...  # see scripts/

The recipe: flags -> prompts, reward, saver on the controller -> Ray groups -> trainer.fit().
"""
from __future__ import annotations

import os
import sys
import time


def main(argv: list[str] | None = None):
    """Run training; returns the PPOTrainer (its `history` holds each step's metrics)."""
    from openrlhf_ext.cli.train_args import parse_train_args

    args = parse_train_args(argv)
    if args.rollout_backend == "vllm":
        # In-process vLLM engine: starts in seconds instead of ~25 s, and runs inside a Ray actor.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    t_start = time.perf_counter()

    import ray
    from transformers import AutoTokenizer

    from openrlhf_ext.datasets.prompts import load_prompts
    from openrlhf_ext.ray.groups import build_groups, cpus_needed
    from openrlhf_ext.ray.launcher import start_ray
    from openrlhf_ext.rewards import build_reward_fn
    from openrlhf_ext.trainer.checkpoint import latest_checkpoint_step
    from openrlhf_ext.trainer.ppo_trainer import PPOTrainer
    from openrlhf_ext.trainer.probes import load_probe_prompts
    from openrlhf_ext.trajectory import TrajectorySaver

    # 1. the model, its tokenizer, the prompts (less the probe prompts) and the reward (all on the controller)
    if args.pretrain is None:
        from openrlhf_ext.models.embedded import embedded_model_path

        args.pretrain = embedded_model_path()
    tokenizer = AutoTokenizer.from_pretrained(args.pretrain)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    prompts, probe_prompts = load_probe_prompts(args, tokenizer, load_prompts(args, tokenizer))
    reward_fn = None if args.reward_pretrain else build_reward_fn(args, tokenizer)

    # 2. the trajectory saver; on resume, first forget the trajectories of the steps to be redone
    saver = None
    if getattr(args, "save_trajectories", False):
        saver = TrajectorySaver.from_args(args, tokenizer)
        resume_step = latest_checkpoint_step(args.ckpt_path) if args.load_checkpoint else None
        open_trajectory_folder(saver, resume_step)

    # 3. the Ray groups: actor (DeepSpeed), reference, critic, reward model, vLLM engines
    start_ray(num_cpus=cpus_needed(args))
    try:
        groups = build_groups(args, args.pretrain)
        t_ready = time.perf_counter()
        print(f"[openrlhf_ext] {args.rollout_backend} rollouts, ZeRO-{args.zero_stage}, "
              f"{'colocated' if args.colocate_all_models else 'separate'} groups, "
              f"ready in {t_ready - t_start:.1f} s; model {args.pretrain}")

        # 4. train
        trainer = PPOTrainer(args, groups, tokenizer, prompts, reward_fn, saver, probe_prompts)
        history = trainer.fit()
        trainer.save_model()
        print_summary(args, history, saver, time.perf_counter() - t_start)
        return trainer
    finally:
        ray.shutdown()


def open_trajectory_folder(saver, resume_step: int | None) -> None:
    """Take the trajectory folder for this run (its writer lock) and, on resume, forget the steps
    after the checkpoint; when that cannot be done, say what is wrong and stop before Ray starts."""
    from openrlhf_ext.trajectory.folder_lock import FolderInUse

    try:
        saver.open()
        if resume_step is not None:
            saver.forget_steps_after(resume_step)
    except FolderInUse as error:
        raise SystemExit(f"[openrlhf_ext] --save_trajectories: {error}") from None
    except OSError as error:
        todo = (f"resuming from step {resume_step} must remove the trajectory files of later steps"
                if resume_step is not None else "the run writes its trajectories there")
        raise SystemExit(f"[openrlhf_ext] --save_trajectories: cannot write to {saver.out_dir} ({error}); {todo}. "
                         "Make the folder writable, or pass another --trajectory_dir.") from None


def print_summary(args, history: list[dict], saver, seconds: float) -> None:
    if history:
        first, last = history[0], history[-1]
        k = max(1, len(history) // 4)
        early = sum(m["reward"] for m in history[:k]) / k
        late = sum(m["reward"] for m in history[-k:]) / k
        print(f"\nTrained steps {first['global_step']}-{last['global_step']} in {seconds:.0f} s; "
              f"mean reward {early:.3f} (first {k} steps) -> {late:.3f} (last {k} steps).")
    print(f"Model saved to {os.path.abspath(args.save_path)}")
    if saver is not None:
        d = os.path.abspath(saver.out_dir)
        print(f"Trajectories are in {d}")
        print(f"  open them: {viewer_path()} in a browser, then pick that folder (or drop it on the page)")
        print(f"  summarize: openrlhf-traj stats {d}")
        print(f"  share:     openrlhf-traj report {d} -o report.html   (one self-contained HTML file)")


def viewer_path() -> str:
    """Where the viewer page is: the checkout's viewer/ folder, or the copy in an installed wheel."""
    try:
        from openrlhf_ext.trajectory.tools.report import find_viewer_html

        return os.path.abspath(find_viewer_html()[1])
    except Exception:  # the pointer is a courtesy; never fail a finished run over it
        return "viewer/render_trajectories.html"


if __name__ == "__main__":
    main(sys.argv[1:])
