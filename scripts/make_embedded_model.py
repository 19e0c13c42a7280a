#!/usr/bin/env python
"""Build the embedded default model shipped in openrlhf_ext/assets/tiny-arith/ (seeded, CPU, ~1 minute).

    python scripts/make_embedded_model.py                      # rebuild the shipped folder
    python scripts/make_embedded_model.py --out /tmp/tiny-arith --seed 1 --target_accuracy 0.3

A character-level tokenizer and a 2-layer Llama get a short supervised warm-up on "a+b=" prompts
until greedy accuracy on held-out problems first reaches --target_accuracy, so RL starts with
rewards above zero and room to grow. The logic lives in openrlhf_ext/models/embedded.py (so an
installed package can rebuild the model on first use); this script is its command line.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from openrlhf_ext.models.embedded import ASSET_DIR, build_embedded_model  # noqa: E402

__all__ = ["build_embedded_model", "main"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=ASSET_DIR, help="model folder to write (default: the package's shipped copy)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target_accuracy", type=float, default=0.35, help="stop the warm-up at this held-out greedy accuracy")
    p.add_argument("--max_steps", type=int, default=3000, help="upper bound on warm-up steps")
    args = p.parse_args(argv)
    info = build_embedded_model(args.out, seed=args.seed, target_accuracy=args.target_accuracy, max_steps=args.max_steps)
    print(json.dumps(info, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
