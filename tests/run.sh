#!/usr/bin/env bash
# Set up everything the test suite needs and run it: a virtual environment in .venv with the package, CPU
# PyTorch 2.13.0 and the reference implementation (spidr 0.2.0, the oracle of the parity tests).
# Needs only Python >= 3.11, pip and a C compiler. Extra arguments go to pytest (e.g. -k parity, -x, -n 0).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
VENV_PYTHON=.venv/bin/python

# CPU build of torch for the reference; elsewhere add: --index-url https://download.pytorch.org/whl/cpu
"$VENV_PYTHON" -m pip install --quiet "torch==2.13.0" ${TORCH_PIP_ARGS:-}
"$VENV_PYTHON" -m pip install --quiet -e ".[test,aot]"  # aot: TPU and GPU compilers for tests/test_aot.py
# The reference declares Python >= 3.12 and heavy training extras; its model code runs on 3.11 without them.
"$VENV_PYTHON" -m pip install --quiet --no-deps --ignore-requires-python "spidr==0.2.0"

# Two workers (pytest-xdist), each taking whole test modules (their module fixtures are built once); -n 0 runs
# everything in this process.
exec "$VENV_PYTHON" -m pytest -q --numprocesses="${TEST_WORKERS:-2}" --dist=loadfile --no-loadscope-reorder "$@"
