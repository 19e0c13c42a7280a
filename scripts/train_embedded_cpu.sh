#!/usr/bin/env bash
# The README's main command: the embedded tiny arithmetic model on a CPU, trajectories on.
# Hardware: any machine, 2 CPU cores are enough. 20 steps take a few minutes (see docs/training.md).
set -euo pipefail
python train_colocate.py --colocate_all_models --save_path ./ckpt/embedded \
  --save_trajectories --mark_high_entropy_tokens --num_trajectories_to_save 16 --save_entropy_trace "$@"
