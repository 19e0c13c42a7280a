#!/usr/bin/env python
"""Where the embedded job's forks fall: per step, the roles of the step's high-entropy tokens.

    python train_colocate.py --colocate_all_models --save_trajectories --mark_high_entropy_tokens --save_entropy_trace
    python scripts/fork_roles.py ckpt/openrlhf-ext/trajectories

Reads the npz traces (every response of a step, from --save_entropy_trace), marks each step's top
--ratio tokens by the saver's rule (`high_entropy_mask`, step scope) and reads every token's role
off the worked solution's grammar (`openrlhf_ext.datasets.column_addition.token_roles`): decision
(a sum digit, a carry), copy, format, end, other (off the grammar). Prints one line per step, e.g.

    step   1  reward 0.514  marked 3506  decision 86.6%  copy 9.0%  format 0.5%  end 0.0%  other 3.9%

For the built-in task only (the roles are its grammar's); the tokenizer is the embedded model's.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ROLES = ("decision", "copy", "format", "end", "other")


def step_role_shares(npz_path: str, tokenizer, ratio: float = 0.2) -> dict:
    """``{"step", "reward", "marked", <role>: share}`` for one npz trace file."""
    import numpy as np
    import torch

    from openrlhf_ext.datasets.column_addition import id_roles
    from openrlhf_ext.trajectory import high_entropy_mask

    with np.load(npz_path) as z:
        entropy = torch.from_numpy(z["entropies"].astype(np.float32))  # (R, L)
        mask = torch.from_numpy(z["response_mask"])  # (R, L) bool
        responses, rewards = z["responses"], z["rewards"]  # (R, L) int32, (R,)
    marks, _ = high_entropy_mask(entropy, mask, ratio, scope="step")  # (R, L) bool
    counts: Counter = Counter()
    for i in range(len(responses)):
        m = mask[i].numpy()
        roles = id_roles(responses[i][m].tolist(), tokenizer)
        counts.update(r for r, hot in zip(roles, marks[i][mask[i]].tolist()) if hot)
    total = max(sum(counts.values()), 1)
    step = int(os.path.basename(npz_path).split("_")[1].split(".")[0])
    return {"step": step, "reward": float(rewards.mean()), "marked": total,
            **{r: counts[r] / total for r in ROLES}}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("trajectories", help="a run's trajectories/ folder, written with --save_entropy_trace")
    p.add_argument("--ratio", type=float, default=0.2, help="the top ratio marked (the saver's --high_entropy_token_ratio)")
    a = p.parse_args(argv)
    from transformers import AutoTokenizer

    from openrlhf_ext.models.embedded import embedded_model_path

    files = sorted(glob.glob(os.path.join(a.trajectories, "steps", "step_*.npz")))
    if not files:
        p.error(f"no npz traces in {a.trajectories}/steps: train with --save_entropy_trace")
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_path())
    rows = []
    for f in files:
        r = step_role_shares(f, tokenizer, a.ratio)
        rows.append(r)
        print(f"step {r['step']:>3}  reward {r['reward']:.3f}  marked {r['marked']:>5}  "
              + "  ".join(f"{k} {r[k]:.1%}" for k in ROLES))
    return rows


if __name__ == "__main__":
    main()
