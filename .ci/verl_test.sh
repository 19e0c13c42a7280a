#!/usr/bin/env bash
# Runs the verl drop-in's test (tests/test_integration_verl.py) in its own virtual environment.
#
# Why a separate venv: verl pins transformers < 5.11 (and numpy >= 2, tensordict <= 0.10), which
# would rewrite the main interpreter's packages. torch is installed first, at the CPU build this
# machine has: verl does not pin torch, but pip resolving it from scratch would fetch a CUDA build.
#
# Usage: .ci/verl_test.sh [VENV_DIR]     (default /tmp/openrlhf-ext-verl-venv; reused when present)
# Cost measured on a 2-core CPU machine: see docs/integrations.md ("verl").
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/venv.sh
new_venv "${1:-${OPENRLHF_EXT_VERL_VENV:-/tmp/openrlhf-ext-verl-venv}}"
# verl 0.9.1 imports cachetools, fastapi and uvicorn in RayPPOTrainer's module without requiring them.
"$PY" -m pip install -q "verl==0.9.1" cachetools fastapi uvicorn   # the version the tests ran on (0.7.0 passed by hand too)
# The project itself; its requirements (transformers >= 4.46, ...) are already met by verl's.
"$PY" -m pip install -q -e . "pytest>=8"
installed=$(date +%s)
echo "verl venv ready in $((installed - start)) s"
"$PY" -c "import verl, transformers; print('verl', verl.__version__, 'transformers', transformers.__version__)"
"$PY" -m pytest tests/test_integration_verl.py -x -q -p no:cacheprovider "${@:2}"
echo "verl test total $(( $(date +%s) - start )) s (install $((installed - start)) s)"
