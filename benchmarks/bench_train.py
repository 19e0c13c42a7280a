"""Throughput of the main job and the trajectory saver's share of the step time.

    python benchmarks/bench_train.py                # embedded model, 12 steps, hf rollouts, CPU
    python benchmarks/bench_train.py --steps 20 -- --pretrain /path/to/model ...   # extra trainer flags

Runs the same training three times in one process: without the trajectory flags (the baseline),
with them (16 records per step, high-entropy marks), and with --save_entropy_trace as well,
and prints for each: steps/s and tokens/s over the timed steps (the first step is warm-up and is
left out), the mean time of every stage, and for the saving run the saver's share of the step time
(target: under 2%). Start-up (Ray, DeepSpeed, model load) is reported apart.
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

STAGES = ("generate", "score", "forward", "advantages", "save", "update", "sync")


def run(steps: int, save: str, extra: list[str], folder: str) -> dict:
    import train_colocate

    argv = ["--max_steps", str(steps), "--save_path", folder, "--colocate_all_models"] + extra
    if save:
        argv += ["--save_trajectories", "--mark_high_entropy_tokens", "--num_trajectories_to_save", "16"]
    if save == "trace":
        argv += ["--save_entropy_trace"]
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
        "reward_first": trainer.history[0]["reward"], "reward_last": trainer.history[-1]["reward"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("extra", nargs="*", help="flags passed to train_colocate.py (after --)")
    a = p.parse_args()
    results = {}
    runs = (("baseline (no saver)", ""), ("saver (16 records/step)", "records"), ("saver + entropy trace", "trace"))
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
    base = results["baseline (no saver)"]
    for name, _ in runs[1:]:
        r = results[name]
        print(f"{name}: saver share of step time {r['save_share']:.2%} (target < 2%); "
              f"steps/s vs baseline {r['steps/s'] / base['steps/s']:.3f}")


if __name__ == "__main__":
    main()
