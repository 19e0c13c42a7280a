#!/usr/bin/env python
"""Build the embedded default model shipped in openrlhf_ext/assets/tiny-arith/ (seeded, CPU, a few minutes).

    python scripts/make_embedded_model.py                      # rebuild the shipped folder
    python scripts/make_embedded_model.py --out /tmp/tiny-arith --seed 1 --sum_slip 0.2

A character-level tokenizer and a 2-layer Llama are trained on a careless student's worked
solutions of 3-digit additions (column by column, right to left, carries brought in as +1, the
answer boxed), whose carries and column sums slip at the given rates while the form never does.
So RL starts from a policy that is right about half the time and unsure exactly at its decisions.
The result depends on the seed only (one thread). The logic lives in
openrlhf_ext/models/embedded.py (so an installed package can rebuild the model on first use); this
script is its command line.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from openrlhf_ext.models.embedded import (  # noqa: E402
    ASSET_DIR, CARRY_SLIP, SUM_SLIP, WARMUP_BATCH, WARMUP_STEPS, build_embedded_model,
)

__all__ = ["build_embedded_model", "main"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=ASSET_DIR, help="model folder to write (default: the package's shipped copy)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=WARMUP_STEPS, help="supervised warm-up steps")
    p.add_argument("--batch_size", type=int, default=WARMUP_BATCH, help="worked solutions per warm-up step")
    p.add_argument("--carry_slip", type=float, default=CARRY_SLIP,
                   help="per column after the first: how often the student gets the carry wrong")
    p.add_argument("--sum_slip", type=float, default=SUM_SLIP, help="per column: how often a sum is off by 1 or 2")
    args = p.parse_args(argv)
    info = build_embedded_model(args.out, seed=args.seed, steps=args.steps, carry_slip=args.carry_slip,
                                sum_slip=args.sum_slip, batch_size=args.batch_size)
    print(json.dumps(info, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
