#!/usr/bin/env python
"""RL headroom of the embedded model: a plain-torch GRPO loop against the frozen model, same samples.

    python benchmarks/bench_embedded_rl.py                         # 20 steps, 16 prompts x 4, lr 5e-5, 4 updates
    python benchmarks/bench_embedded_rl.py --steps 40 --prompts 8 --lr 1e-4 --updates 1

Not the trainer (no Ray, DeepSpeed or vLLM): it checks that the shipped model and this package's
reward / advantage / loss functions leave RL something to learn, and how fast a step is at its
smallest. Baseline = the same loop with the update switched off (same prompts, same sampling
seeds), so the difference is the learning and not the luck of the draw. Prints both.
"""
import argparse
import os
import sys
import time
from argparse import Namespace

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from openrlhf_ext.algo.advantages import compute_advantages  # noqa: E402
from openrlhf_ext.algo.losses import policy_loss  # noqa: E402
from openrlhf_ext.datasets.prompts import builtin_prompts  # noqa: E402
from openrlhf_ext.models.embedded import embedded_model_path, solve_rate  # noqa: E402
from openrlhf_ext.rewards import build_reward_fn  # noqa: E402


def response_mask(responses: torch.Tensor, eos_id: int, pad_id: int) -> torch.Tensor:
    """(B, A) bool: tokens up to and including the first eos (generate pads after it)."""
    is_eos = responses == eos_id
    after_eos = (is_eos.long().cumsum(1) - is_eos.long()) > 0
    return ~after_eos & ((responses != pad_id) | is_eos)


def run(args, learn: bool) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = args.model or embedded_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    reward_fn = build_reward_fn(Namespace(remote_rm_url=None), tok)
    prompts = builtin_prompts(args.steps * args.prompts, seed=42)
    held_out = builtin_prompts(256, seed=999)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    # held-out solve rate, sampled at temperature 1 (greedy decoding of the embedded model is ~always right)
    held_before = solve_rate(model, tok, held_out, temperature=1.0, seed=0)
    rewards, t0 = [], time.perf_counter()
    for step in range(args.steps):
        batch = prompts[step * args.prompts : (step + 1) * args.prompts]
        texts = [b["prompt"] for b in batch for _ in range(args.n)]
        labels = [b["label"] for b in batch for _ in range(args.n)]
        enc = tok(texts, return_tensors="pt", padding=True)
        torch.manual_seed(args.seed * 1000 + step)  # same draws in both runs while the models agree
        model.eval()
        with torch.no_grad():
            seq = model.generate(**enc, do_sample=True, temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)  # (B, S)
        P = enc["input_ids"].shape[1]
        resp = seq[:, P:]  # (B, A)
        mask = response_mask(resp, tok.eos_token_id, tok.pad_token_id)  # (B, A)
        queries = [tok.decode(s[s != tok.pad_token_id]) for s in seq]
        r = torch.tensor(reward_fn(queries, texts, labels))  # (B,)
        rewards.append(r.mean().item())
        if not learn:
            continue
        attn = torch.cat([enc["attention_mask"], mask.long()], 1)  # (B, S)
        pos = (attn.cumsum(1) - 1).clamp(min=0)

        def log_probs():  # (B, A) log-prob of each response token at the sampling temperature
            logits = model(input_ids=seq, attention_mask=attn, position_ids=pos).logits[:, P - 1 : -1].float()
            return torch.log_softmax(logits / args.temperature, -1).gather(-1, resp.unsqueeze(-1)).squeeze(-1)

        with torch.no_grad():
            old = log_probs()
        adv, _ = compute_advantages(r, mask, args.estimator, args.n)  # (B, A) over the whole step
        model.train()
        # --updates optimizer steps per rollout on mini-batches (OpenRLHF: train_batch_size < rollout batch)
        for rows in torch.arange(len(texts)).chunk(args.updates):
            logits = model(input_ids=seq[rows], attention_mask=attn[rows], position_ids=pos[rows]).logits
            lp = torch.log_softmax(logits[:, P - 1 : -1].float() / args.temperature, -1)
            lp = lp.gather(-1, resp[rows].unsqueeze(-1)).squeeze(-1)  # (b, A)
            loss, _ = policy_loss(lp, old[rows], adv[rows], mask[rows], eps_clip=0.2)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return {
        "step_s": (time.perf_counter() - t0) / args.steps,
        "rewards": rewards,
        "held_before": held_before,
        "held_after": solve_rate(model, tok, held_out, temperature=1.0, seed=0),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model folder (default: the embedded model)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--prompts", type=int, default=16, help="prompts per step")
    p.add_argument("--n", type=int, default=4, help="samples per prompt")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--updates", type=int, default=4, help="optimizer steps per rollout (mini-batches)")
    p.add_argument("--estimator", default="group_norm")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--max_new_tokens", type=int, default=48, help="a worked solution is 34-40 tokens")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"embedded-model GRPO loop: {args.steps} steps x {args.prompts} prompts x {args.n} samples, lr {args.lr}, "
          f"T {args.temperature}, {args.estimator}, {args.updates} update(s) per rollout")
    chunk = 5
    for name, learn in (("frozen (baseline)", False), ("trained", True)):
        out = run(args, learn)
        means = [sum(out["rewards"][i : i + chunk]) / len(out["rewards"][i : i + chunk]) for i in range(0, args.steps, chunk)]
        print(f"{name:18s} sampled reward per {chunk} steps: {' '.join(f'{m:.3f}' for m in means)} | "
              f"held-out sampled solve rate {out['held_before']:.3f} -> {out['held_after']:.3f} | {out['step_s']:.2f} s/step")


if __name__ == "__main__":
    main()
