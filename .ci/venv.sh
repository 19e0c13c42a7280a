# Sourced by .ci/vllm_test.sh and .ci/verl_test.sh: a venv of its own for a package that pins
# torch or transformers, reused when present, with torch at the CPU build this machine has
# installed first (pip resolving torch from scratch would fetch a multi-GB CUDA build).
#   new_venv DIR      -> sets PY to the venv's python, and start (seconds) for the timings
new_venv() {
  VENV="$1"
  start=$(date +%s)
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
  fi
  PY="$VENV/bin/python"
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q "torch==2.13.0"
}
