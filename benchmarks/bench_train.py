"""Throughput of the main job and the trajectory saver's share of the step time.

    python benchmarks/bench_train.py                # embedded model, 12 steps, hf rollouts, CPU
    python benchmarks/bench_train.py --probes       # also a run with probe prompts (8 x 4 every 4 steps)
    python benchmarks/bench_train.py --steps 20 -- --pretrain /path/to/model ...   # extra trainer flags

Runs the same training three times (four with --probes) in one process: without the trajectory
flags (the baseline), with them (16 records per step, high-entropy marks), and with
--save_entropy_trace as well,
and prints for each: steps/s and tokens/s over the timed steps (the first step is warm-up and is
left out), the mean time of every stage, and for the saving run the saver's share of the step time
(target: under 2%; the saving runs write format v2: alternatives on marked tokens, rollout
log-probs, fork words). With --probes, the probe stage's mean time over the steps that probe.
Start-up (Ray, DeepSpeed, model load) is reported apart.

    python benchmarks/bench_train.py --trl -- --rollout_backend hf   # + TRL's GRPOTrainer, same work

--trl runs TRL's GRPOTrainer right after the baseline, in the same process, on the same model,
prompts, reward, batch (64 prompts x 8), generation length, learning rate and optimizer steps per
round, and prints both trainers' rounds/s, tokens/s, the ratio, and their rewards after the same
number of steps.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

STAGES = ("generate", "score", "forward", "advantages", "probe", "save", "update", "sync")
PROBES = ["--trajectory_probe_prompts", "8", "--trajectory_probe_samples", "4", "--trajectory_probe_steps", "4"]


def run(steps: int, save: str, extra: list[str], folder: str) -> dict:
    import train_colocate

    argv = ["--max_steps", str(steps), "--save_path", folder, "--colocate_all_models"] + extra
    if save:
        argv += ["--save_trajectories", "--mark_high_entropy_tokens", "--num_trajectories_to_save", "16"]
    if save == "trace":
        argv += ["--save_entropy_trace"]
    if save == "probes":
        argv += PROBES
    t0 = time.perf_counter()
    trainer = train_colocate.main(argv)
    total = time.perf_counter() - t0
    hist = trainer.history[1:] or trainer.history  # the first step warms caches up
    step_time = sum(m["time/step"] for m in hist)
    return {
        "steps/s": len(hist) / step_time,
        "tokens/s": sum(m["tokens"] for m in hist) / step_time,
        "startup_s": total - sum(m["time/step"] for m in trainer.history),
        "step_s_median": statistics.median(m["time/step"] for m in hist),
        "save_share": sum(m.get("time/save", 0.0) for m in hist) / step_time,
        "stages": {s: statistics.mean(m.get(f"time/{s}", 0.0) for m in hist) for s in STAGES},
        "probe_s": statistics.mean([m["time/probe"] for m in trainer.history if "time/probe" in m] or [0.0]),
        "generate_max_len": trainer.args.generate_max_len,
        "response_length": statistics.mean(m["response_length"] for m in hist),
        "rewards": [m["reward"] for m in trainer.history],
    }


def run_trl(steps: int, extra: list[str]) -> dict:
    """TRL's GRPOTrainer on the work of our run with the same flags: the same model, the same prompts
    step by step (our trainer's seeded order), the same reward, 64 prompts x 8 samples per
    generation round, 4 optimizer steps of 128 per round (one of our steps), the same number of new
    tokens, temperature, learning rate, Adam betas, clip range and gradient clipping, no KL, HF
    generate, CPU.

    Gradient checkpointing off, as in our trainer (TRL >= 1.0 turns it on by default: 2x slower
    here). Torch threads as many as each of our workers uses (OPENRLHF_EXT_CPU_THREADS, default 1):
    the same compute on both sides, and on a shared 2-core machine 2 threads made HF generate 4-5x
    slower, not faster (measured here under load 8)."""
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from openrlhf_ext.cli.train_args import parse_train_args
    from openrlhf_ext.datasets.prompts import load_prompts
    from openrlhf_ext.models.embedded import embedded_model_path
    from openrlhf_ext.rewards import build_reward_fn
    from openrlhf_ext.trainer.ppo_trainer import PPOTrainer

    torch.set_num_threads(int(os.environ.get("OPENRLHF_EXT_CPU_THREADS", "1")))
    D = parse_train_args(["--max_steps", str(steps)] + extra)
    path = D.pretrain or embedded_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    order = PPOTrainer(D, None, tok, load_prompts(D, tok), None)  # only its prompt order: rows_for_step
    rows = [r for step in range(1, steps + 2) for r in order.rows_for_step(step)]
    data = datasets.Dataset.from_list(rows)
    reward = build_reward_fn(D, tok)

    def reward_func(prompts, completions, label, **_):
        return reward([p + c for p, c in zip(prompts, completions)], prompts, label)

    per_round = D.rollout_batch_size * D.n_samples_per_prompt // D.train_batch_size
    stamps = []

    class Stamp(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as out:
        cfg = GRPOConfig(
            output_dir=out, use_cpu=True, report_to="none", save_strategy="no", logging_steps=per_round,
            max_steps=steps * per_round, learning_rate=D.actor_learning_rate, beta=0.0,
            num_generations=D.n_samples_per_prompt, per_device_train_batch_size=D.train_batch_size,
            steps_per_generation=per_round,  # generation batch = 128 x 4 = 512 = 64 prompts x 8
            gradient_accumulation_steps=1, max_completion_length=D.generate_max_len, temperature=D.temperature,
            top_k=0, top_p=D.top_p, num_iterations=1, bf16=False, seed=D.seed, lr_scheduler_type="constant",
            gradient_checkpointing=False, shuffle_dataset=False,  # the rows are already in our order
            adam_beta1=D.adam_betas[0], adam_beta2=D.adam_betas[1], weight_decay=D.l2, max_grad_norm=D.max_norm,
            epsilon=D.eps_clip,
        )
        trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(path), args=cfg, reward_funcs=reward_func,
                              train_dataset=data, processing_class=tok, callbacks=[Stamp()])
        t0 = time.perf_counter()
        trainer.train()
        total = time.perf_counter() - t0
    rounds = [stamps[i] for i in range(per_round - 1, len(stamps), per_round)]  # end of each generation round
    timed = rounds[-1] - rounds[0]
    logs = [h for h in trainer.state.log_history if "reward" in h]
    n_tokens = [h["num_tokens"] for h in trainer.state.log_history if "num_tokens" in h]
    out = {"steps/s": (len(rounds) - 1) / timed, "total_s": total,
           "rewards": [h["reward"] for h in logs]}  # one log per round: the round's mean reward
    if len(n_tokens) >= 2:
        out["tokens/s"] = (n_tokens[-1] - n_tokens[0]) / timed
    return out


def reward_summary(rewards: list[float], k: int = 5) -> str:
    """Mean reward of the first k steps -> of the last k (one step's 512 samples are noisy)."""
    k = max(1, min(k, len(rewards) // 2))
    return f"{sum(rewards[:k]) / k:.3f} -> {sum(rewards[-k:]) / k:.3f} (first {k} -> last {k} of {len(rewards)} steps)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--trl", action="store_true",
                   help="also run TRL's GRPOTrainer on the same model/prompts/batch/generation length (needs trl)")
    p.add_argument("--probes", action="store_true", help="also run with probe prompts (8 prompts x 4 every 4 steps)")
    p.add_argument("extra", nargs="*", help="flags passed to train_colocate.py (after --)")
    a = p.parse_args()
    results, trl = {}, None
    runs = (("baseline (no saver)", ""), ("saver (16 records/step)", "records"), ("saver + entropy trace", "trace"))
    runs += (("saver + probes (8x4/4 st)", "probes"),) if a.probes else ()
    for name, save in runs:
        folder = tempfile.mkdtemp(prefix="bench_train_")
        try:
            results[name] = run(a.steps, save, a.extra, folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        if a.trl and trl is None:  # right after the baseline: the machine's load is as alike as it gets
            trl = run_trl(a.steps, a.extra)
    print(f"\n== bench_train: {a.steps} steps (first excluded), flags {a.extra or '(embedded defaults)'} ==")
    print(f"{'run':<24}{'steps/s':>9}{'tokens/s':>10}{'step s':>8}{'startup s':>11}{'saver share':>13}  stage means (s)")
    for name, r in results.items():
        stages = " ".join(f"{k[:3]} {v:.3f}" for k, v in r["stages"].items())
        print(f"{name:<24}{r['steps/s']:>9.3f}{r['tokens/s']:>10.0f}{r['step_s_median']:>8.2f}{r['startup_s']:>11.1f}"
              f"{r['save_share']:>12.2%}  {stages}")
    if trl is not None:
        ours = results["baseline (no saver)"]
        print(f"\nagainst TRL GRPOTrainer (same model, prompts, reward, 64x8 responses and 4 optimizer steps of 128 "
              f"per round, {ours['generate_max_len']} new tokens, HF generate, "
              f"{os.environ.get('OPENRLHF_EXT_CPU_THREADS', '1')} torch thread(s) each):")
        for name, r in (("TRL GRPOTrainer", trl), ("train_colocate.py, no saver", ours)):
            print(f"  {name:<28}{r['steps/s']:>7.3f} rounds/s {r.get('tokens/s', float('nan')):>7.0f} tokens/s   "
                  f"reward {reward_summary(r['rewards'])}")
        print(f"  ratio: {ours['steps/s'] / trl['steps/s']:.2f}x TRL's steps/s, "
              f"{ours['tokens/s'] / trl.get('tokens/s', float('nan')):.2f}x its tokens/s")
        # the saving runs come after TRL: together with the baseline before it they bracket its load
        print("  with the saver (runs after TRL's): " + ", ".join(
            f"{name} {r['steps/s'] / trl['steps/s']:.2f}x" for name, r in list(results.items())[1:]))
    base = results["baseline (no saver)"]
    for name, _ in runs[1:]:
        r = results[name]
        print(f"{name}: saver share of step time {r['save_share']:.2%} (target < 2%); "
              f"steps/s vs baseline {r['steps/s'] / base['steps/s']:.3f}"
              + (f"; probe stage {r['probe_s']:.3f} s per probe step" if r["probe_s"] else ""))


if __name__ == "__main__":
    main()
