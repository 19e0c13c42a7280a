#!/usr/bin/env bash
# The GPU checks of the chunked actor forward (issue 13), as one run:
#   1. the chunked head against float64 on the device (fp32 and bf16 inputs, values and gradients),
#   2. bench_actor_memory.py in CUDA at bf16 with a random-init model of Qwen2.5-1.5B's shape
#      (28 layers, hidden 1536, vocab 151,936, tied), 8 x 4,096 response tokens, chunked against full
#      logits, without grad and with forward + backward (gradient checkpointing on),
#   3. bench_token_entropy.py on CUDA (token_entropy, Categorical, verl's formula, a bare logsumexp).
# Needs torch and transformers only (no Ray, DeepSpeed or vLLM). Writes text and JSON under $OUT
# (default ./bench_out/gpu_check). Without CUDA it says so, skips the CUDA parts and runs the same
# checks on the CPU at small sizes, so the script itself is tested wherever it is edited.
#
#   bash scripts/gpu_check.sh                # ~3 minutes on one H200 (estimate: not yet run there)
#   MAX_GIB=120 bash scripts/gpu_check.sh    # device-memory budget for one case (skips the rest)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-$PWD/bench_out/gpu_check}"
mkdir -p "$OUT"

python - <<'EOF'
import torch, transformers
print(f"torch {torch.__version__}, transformers {transformers.__version__}, CUDA available: {torch.cuda.is_available()}")
if torch.cuda.is_available():
    print(torch.cuda.get_device_name(), f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
EOF

if python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  MAX_GIB="${MAX_GIB:-120}"
  set -x
  python benchmarks/bench_actor_memory.py --exactness --device cuda --json "$OUT/exactness_cuda.json" \
    | tee "$OUT/exactness_cuda.txt"
  python benchmarks/bench_actor_memory.py --device cuda --dtype bf16 --preset qwen2.5-1.5b --shapes 8x4096 \
    --gradient_checkpointing --max_gib "$MAX_GIB" --repeats 3 --json "$OUT/actor_memory_cuda.json" \
    | tee "$OUT/actor_memory_cuda.txt"
  python benchmarks/bench_token_entropy.py --device cuda --repeats 5 | tee "$OUT/token_entropy_cuda.txt"
else
  echo "No CUDA device: the CUDA parts (exactness, actor memory at Qwen2.5-1.5B's shape, token entropy) are SKIPPED."
  echo "Running the same checks on the CPU at small sizes instead (these are not GPU figures)."
  set -x
  python benchmarks/bench_actor_memory.py --exactness --json "$OUT/exactness_cpu.json" | tee "$OUT/exactness_cpu.txt"
  python benchmarks/bench_actor_memory.py --shapes 1x512 --repeats 1 --max_gib "${MAX_GIB:-6}" \
    --json "$OUT/actor_memory_cpu.json" | tee "$OUT/actor_memory_cpu.txt"
  python benchmarks/bench_token_entropy.py --quick --repeats 2 | tee "$OUT/token_entropy_cpu.txt"
fi
