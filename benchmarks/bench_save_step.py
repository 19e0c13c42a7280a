"""TrajectorySaver.save_step on a realistic step: 256 responses x 1,024 tokens.

    python benchmarks/bench_save_step.py

Saves 10 trajectories with marks plus the npz trace of all 256 responses, and compares, in the
same run, writing the same records with orjson (what the saver does) and with
json.dump(..., indent=2) (what a simple saver does). Target: save_step under 0.5 s on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from openrlhf_ext.trajectory import TrajectorySaver, load_trajectories  # noqa: E402
from openrlhf_ext.trajectory.files import dumps_records  # noqa: E402
from tests.conftest import make_byte_level_tokenizer  # noqa: E402


def make_step(tokenizer, n_resp=256, resp_len=1024, prompt_len=128, micro=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    vocab = len(tokenizer)
    exps = []
    for e in range(n_resp // micro):
        seqs = torch.randint(2, vocab, (micro, prompt_len + resp_len), generator=g)  # (B, S)
        lengths = torch.randint(resp_len // 4, resp_len + 1, (micro,), generator=g)
        action_mask = torch.arange(resp_len)[None, :] < lengths[:, None]  # (B, A)
        attn = torch.cat([torch.ones(micro, prompt_len, dtype=torch.bool), action_mask], 1)  # (B, S)
        adv = torch.randn(micro, resp_len, generator=g)
        exps.append(types.SimpleNamespace(
            sequences=seqs, attention_mask=attn, action_mask=action_mask,
            action_entropy=torch.rand(micro, resp_len, generator=g) * 4,
            action_log_probs=-torch.rand(micro, resp_len, generator=g),
            advantages=adv, returns=adv,
            info={"reward": torch.randint(0, 2, (micro,), generator=g).float(), "response_length": lengths.float()},
            group_index=torch.arange(micro) // 8 + e * micro // 8,
        ))
    return exps


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    tokenizer = make_byte_level_tokenizer(vocab_size=2000)
    exps = make_step(tokenizer)
    out = Path(tempfile.mkdtemp(prefix="bench_save_step_"))
    saver = TrajectorySaver(out, tokenizer, num_to_save=10, mark_high_entropy=True, ratio=0.2, save_trace=True)
    saver.strict = True
    times = []
    for step in range(1, args.repeats + 1):
        t0 = time.perf_counter()
        saver.save_step(step, exps)
        times.append(time.perf_counter() - t0)
    records = load_trajectories(out / "trajectories_step_1.json")
    t0 = time.perf_counter()
    for _ in range(args.repeats):
        dumps_records(records)
    t_orjson = (time.perf_counter() - t0) / args.repeats
    t0 = time.perf_counter()
    for _ in range(args.repeats):
        json.dumps(records, indent=2)
    t_json = (time.perf_counter() - t0) / args.repeats
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"save_step, 256 x 1024 tokens, 10 saved + npz of all: best {min(times):.3f} s (runs: {', '.join(f'{t:.3f}' for t in times)})")
    print(f"write 10 records: orjson {t_orjson * 1e3:.1f} ms, json.dumps(indent=2) {t_json * 1e3:.1f} ms ({t_json / t_orjson:.0f}x slower)")
    print(f"files in {out}")


if __name__ == "__main__":
    main()
