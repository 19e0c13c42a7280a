"""The TRL drop-in's share of a TRL GRPOTrainer step (target: under 3%).

    python benchmarks/bench_trl_saver.py                 # 12 optimizer steps per run, both TRL layouts
    python benchmarks/bench_trl_saver.py --steps 24 --repeats 3 --trace

Trains TRL's GRPOTrainer on the embedded model with the embedded job's sizes (64 prompts x 8
samples, the embedded job's new-token budget, HF generate, CPU), without and with ``save_trajectories`` (16 records per
step, high-entropy marks), alternating in one process. Two TRL layouts, since the drop-in gets its
entropies from a different place in each:
- ``loss``: one generation round per optimizer step (128 responses): entropies kept from compute_loss;
- ``generation``: one round of 512 feeds 4 optimizer steps (``steps_per_generation=4``): entropies
  from TRL's old-log-prob forward at generation time;
and ``--own-forward`` adds the path of TRL versions without entropies (0.19, Liger): one extra
no-grad forward per round.

Reported per layout: the mean step time without and with the saver (median over the repeats),
and the saver's share: the time spent inside the drop-in (capture, any extra forward, gathering,
writing) over the step time of the same runs. The first round is warm-up and left out. The
difference of the step times is shown too; on a shared machine it is noise-dominated, the
measured share much less so.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import warnings
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

LAYOUTS = {"loss": 1, "generation": 4, "own_forward": 1}  # steps_per_generation


def run(layout: str, steps: int, save: bool, trace: bool) -> dict:
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from openrlhf_ext.cli.train_args import EMBEDDED_DEFAULTS as D
    from openrlhf_ext.datasets.prompts import builtin_prompts
    from openrlhf_ext.integrations.trl import TRLTrajectoryHook, save_trajectories
    from openrlhf_ext.models.embedded import embedded_model_path
    from openrlhf_ext.rewards import build_reward_fn

    path = embedded_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    spg = LAYOUTS[layout]
    per_step = D["rollout_batch_size"] * D["n_samples_per_prompt"] // 4  # 128 responses per optimizer step
    data = datasets.Dataset.from_list(builtin_prompts(per_step // D["n_samples_per_prompt"] * (steps + spg), seed=42))
    reward = build_reward_fn(argparse.Namespace(remote_rm_url=None), tok)

    def reward_func(prompts, completions, label, **_):
        return reward([p + c for p, c in zip(prompts, completions)], prompts, label)

    stamps, hook_seconds = [], []
    hook = None

    class Stamp(TrainerCallback):  # added after the hook: a step's stamp includes its saving
        def on_step_end(self, args, state, control, **kw):
            stamps.append(time.perf_counter())
            hook_seconds.append(hook.seconds if hook else 0.0)

    with tempfile.TemporaryDirectory() as out:
        cfg = GRPOConfig(
            output_dir=out, use_cpu=True, report_to=[], save_strategy="no", logging_steps=spg, max_steps=steps,
            learning_rate=D["actor_learning_rate"], beta=0.0, num_generations=D["n_samples_per_prompt"],
            per_device_train_batch_size=per_step, steps_per_generation=spg, gradient_accumulation_steps=1,
            max_completion_length=D["generate_max_len"], temperature=1.0, top_k=0, num_iterations=1, bf16=False,
            seed=42, lr_scheduler_type="constant", disable_tqdm=True, log_level="error",
        )
        trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), args=cfg,
                              reward_funcs=reward_func, train_dataset=data, processing_class=tok)
        if save:
            save_trajectories(trainer, mark_high_entropy_tokens=True, num_trajectories_to_save=16,
                              save_entropy_trace=trace)
            hook = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, TRLTrajectoryHook))
            hook.reuse_loss_entropies = layout != "own_forward"
        trainer.remove_callback(PrinterCallback)  # no log dict per step on stdout
        trainer.add_callback(Stamp())
        t0 = time.perf_counter()
        trainer.train()
    # The steps after the first round, and the hook's time inside the same window.
    timed = stamps[-1] - stamps[spg - 1]
    return {"step_s": timed / (len(stamps) - spg), "timed_s": timed,
            "hook_s": hook_seconds[-1] - hook_seconds[spg - 1], "total_s": time.perf_counter() - t0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=12, help="optimizer steps per run (a multiple of 4)")
    p.add_argument("--repeats", type=int, default=2, help="baseline/saver pairs per layout, alternating")
    p.add_argument("--trace", action="store_true", help="also write the npz entropy trace")
    p.add_argument("--own-forward", action="store_true", help="also time the extra-forward path (TRL 0.19, Liger)")
    a = p.parse_args()
    warnings.filterwarnings("ignore")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    layouts = [x for x in LAYOUTS if x != "own_forward" or a.own_forward]
    print(f"== bench_trl_saver: {a.steps} steps/run (first round excluded), {a.repeats} pairs per layout ==")
    print(f"{'layout':<12}{'base step s':>12}{'saver step s':>13}{'saver share':>13}{'difference':>12}")
    for layout in layouts:
        base, saved = [], []
        for _ in range(a.repeats):
            base.append(run(layout, a.steps, False, a.trace))
            saved.append(run(layout, a.steps, True, a.trace))
        b = statistics.median(r["step_s"] for r in base)
        s = statistics.median(r["step_s"] for r in saved)
        share = sum(r["hook_s"] for r in saved) / sum(r["timed_s"] for r in saved)
        print(f"{layout:<12}{b:>12.3f}{s:>13.3f}{share:>12.2%}{(s - b) / b:>+11.1%}")
    print("saver share: time inside the drop-in / step time of the saving runs (target < 3%)")


if __name__ == "__main__":
    main()
