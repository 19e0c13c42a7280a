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
        "reward_first": trainer.history[0]["reward"], "reward_last": trainer.history[-1]["reward"],
    }


def run_trl(steps: int) -> dict:
    """TRL's GRPOTrainer on the same model, prompts, rewards, batch and generation length as the
    embedded defaults: 64 prompts x 8 samples per generation round, 4 optimizer steps of 128 per
    round (one of our steps), 8 new tokens, lr 1e-4, no KL, HF generate, CPU."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from openrlhf_ext.cli.train_args import EMBEDDED_DEFAULTS as D
    from openrlhf_ext.datasets.prompts import builtin_prompts
    from openrlhf_ext.models.embedded import embedded_model_path
    from openrlhf_ext.rewards import build_reward_fn

    path = embedded_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    rows = builtin_prompts(D["rollout_batch_size"] * (steps + 1), seed=42)
    data = datasets.Dataset.from_list(rows)
    reward = build_reward_fn(argparse.Namespace(remote_rm_url=None), tok)

    def reward_func(prompts, completions, label, **_):
        return reward([p + c for p, c in zip(prompts, completions)], prompts, label)

    per_round = D["rollout_batch_size"] * D["n_samples_per_prompt"] // D["train_batch_size"]
    stamps = []

    class Stamp(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as out:
        cfg = GRPOConfig(
            output_dir=out, use_cpu=True, report_to="none", save_strategy="no", logging_steps=per_round,
            max_steps=steps * per_round, learning_rate=D["actor_learning_rate"], beta=0.0,
            num_generations=D["n_samples_per_prompt"], per_device_train_batch_size=D["train_batch_size"],
            steps_per_generation=per_round,  # generation batch = 128 x 4 = 512 = 64 prompts x 8
            gradient_accumulation_steps=1, max_completion_length=D["generate_max_len"], temperature=1.0, top_k=0,
            num_iterations=1, bf16=False, seed=42, lr_scheduler_type="constant",
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
           "reward_first": logs[0]["reward"] if logs else float("nan"),
           "reward_last": logs[-1]["reward"] if logs else float("nan")}
    if len(n_tokens) >= 2:
        out["tokens/s"] = (n_tokens[-1] - n_tokens[0]) / timed
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--trl", action="store_true",
                   help="also run TRL's GRPOTrainer on the same model/prompts/batch/generation length (needs trl)")
    p.add_argument("--probes", action="store_true", help="also run with probe prompts (8 prompts x 4 every 4 steps)")
    p.add_argument("extra", nargs="*", help="flags passed to train_colocate.py (after --)")
    a = p.parse_args()
    results = {}
    runs = (("baseline (no saver)", ""), ("saver (16 records/step)", "records"), ("saver + entropy trace", "trace"))
    runs += (("saver + probes (8x4/4 st)", "probes"),) if a.probes else ()
    for name, save in runs:
        folder = tempfile.mkdtemp(prefix="bench_train_")
        try:
            results[name] = run(a.steps, save, a.extra, folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"\n== bench_train: {a.steps} steps (first excluded), flags {a.extra or '(embedded defaults)'} ==")
    print(f"{'run':<24}{'steps/s':>9}{'tokens/s':>10}{'step s':>8}{'startup s':>11}{'saver share':>13}  stage means (s)")
    for name, r in results.items():
        stages = " ".join(f"{k[:3]} {v:.3f}" for k, v in r["stages"].items())
        print(f"{name:<24}{r['steps/s']:>9.3f}{r['tokens/s']:>10.0f}{r['step_s_median']:>8.2f}{r['startup_s']:>11.1f}"
              f"{r['save_share']:>12.2%}  {stages}")
    if a.trl:
        trl = run_trl(a.steps)
        ours = results["baseline (no saver)"]
        print(f"TRL GRPOTrainer (same model, 64x8 responses, 4 optimizer steps/round, HF generate): "
              f"{trl['steps/s']:.3f} rounds/s, {trl.get('tokens/s', float('nan')):.0f} tokens/s, "
              f"reward {trl['reward_first']:.3f} -> {trl['reward_last']:.3f}; "
              f"train_colocate.py without saver: {ours['steps/s']:.3f} steps/s ({ours['steps/s'] / trl['steps/s']:.2f}x), "
              f"reward {ours['reward_first']:.3f} -> {ours['reward_last']:.3f}")
    base = results["baseline (no saver)"]
    for name, _ in runs[1:]:
        r = results[name]
        print(f"{name}: saver share of step time {r['save_share']:.2%} (target < 2%); "
              f"steps/s vs baseline {r['steps/s'] / base['steps/s']:.3f}"
              + (f"; probe stage {r['probe_s']:.3f} s per probe step" if r["probe_s"] else ""))


if __name__ == "__main__":
    main()
