#!/usr/bin/env python
"""The reward of one step of the main job: `MathVerifyReward` against math-verify per response.

    python benchmarks/bench_reward.py                  # 64 prompts x 8 careless-student solutions
    python benchmarks/bench_reward.py --workers 2      # pool size for the responses the shortcut leaves

One step's worth of work: 64 problems x 8 worked solutions, written by the careless student the
embedded model imitates (so about half are right and most groups repeat a solution), scored
(1) as the reward did before: math-verify parses the label and the response of every sample and
compares them (the baseline), (2) by `MathVerifyReward` (labels parsed once, distinct responses
judged once, plain integers without a parse), and, for responses the shortcut does not cover, the
same step with every answer written as "the answer is N" instead of boxed: (3) baseline and
(4) `MathVerifyReward` with its process pool. Checks that all give the same rewards. Best of 3.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from openrlhf_ext.datasets.column_addition import operands, worked_solution  # noqa: E402
from openrlhf_ext.datasets.prompts import builtin_prompts  # noqa: E402
from openrlhf_ext.rewards.math_verify_reward import MathVerifyReward  # noqa: E402


def math_verify_each(responses: list[str], labels: list[str]) -> list[float]:
    """The reward before: math-verify parses both sides of every sample."""
    from math_verify import parse, verify

    return [float(verify(parse(lab), parse(r))) for r, lab in zip(responses, labels)]


def best_of(n: int, fn) -> tuple[float, list]:
    times, out = [], None
    for _ in range(n):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 8))
    a = p.parse_args()
    rng = random.Random(0)
    rows = [r for r in builtin_prompts(a.prompts, seed=1) for _ in range(a.samples)]
    prompts, labels = [r["prompt"] for r in rows], [r["label"] for r in rows]
    boxed = [worked_solution(*operands(pr), rng, 0.12, 0.12) for pr in prompts]
    plain = [b.replace("\\boxed{", "the answer is ").rstrip("}") for b in boxed]
    print(f"{len(rows)} responses, {len(set(zip(boxed, labels)))} distinct; mean reward "
          f"{sum(math_verify_each(boxed, labels)) / len(rows):.3f}")
    for name, responses, workers in (("boxed answers", boxed, 0), ("'the answer is N'", plain, a.workers)):
        reward = MathVerifyReward(num_workers=workers)
        queries = [pr + r for pr, r in zip(prompts, responses)]
        reward(queries[:64], prompts[:64], labels[:64])  # start the pool (if any) outside the timing
        t_base, base = best_of(3, lambda: math_verify_each(responses, labels))
        t_new, new = best_of(3, lambda: reward(queries, prompts, labels))
        reward.close()
        assert new == base, "MathVerifyReward and math-verify disagree"
        print(f"{name:<20} math-verify per response {t_base * 1000:8.1f} ms | MathVerifyReward "
              f"({'pool of ' + str(workers) if workers > 1 else 'in process'}) {t_new * 1000:7.1f} ms "
              f"({t_base / t_new:.1f}x), same rewards")


if __name__ == "__main__":
    main()
