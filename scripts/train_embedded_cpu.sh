#!/usr/bin/env bash
# The README's main command: the embedded tiny model on its worked 3-digit additions, on a CPU,
# trajectories on, plus the npz trace of every response (for scripts/fork_roles.py).
# Hardware: any machine, 2 CPU cores are enough. 30 steps take ~2 minutes (see docs/training.md).
set -euo pipefail
python train_colocate.py --colocate_all_models --save_path ./ckpt/embedded \
  --save_trajectories --mark_high_entropy_tokens --num_trajectories_to_save 16 --save_entropy_trace "$@"
