#!/usr/bin/env bash
# The GPU comparison in at most 8 minutes from a bare machine: python -m bench.suite --gpu runs the parts, each
# under its own time limit (see bench/gpu_run.py for the parts, their limits and the results folder).
#
# Usage: bash bench/gpu.sh [--cpu-smoke] [RESULTS_DIR]     (from the repository root)
#   --cpu-smoke   the same parts on this CPU with configs/tiny.py's model, 2 x 2 s, and the tests only collected:
#                 checks that the run works end to end, measures nothing about GPUs
# Environment: PYTHON (default python3), WHEELS (default bench/wheels), STEP_ARGS (replaces the step flags),
#   LIMIT_<PART> (seconds, e.g. LIMIT_STEP_JAX=200; their total must stay within TOTAL_LIMIT, default 480).
#
# bash bench/gpu.sh --setup RESULTS_DIR SMOKE is the run's setup part: it installs the wheels of
# bench/fetch_wheels.sh where grain, ml_collections, tensorboardX, soundfile or spidr are missing, then records the
# machine and the versions into RESULTS_DIR/machine.jsonl (SMOKE: 1 for the CPU smoke run, else 0).
set -euo pipefail
py=${PYTHON:-python3}

if [[ ${1:-} != --setup ]]; then
  exec "$py" -m bench.suite --gpu "$@"
fi
out=$2 smoke=$3 wheels=${WHEELS:-bench/wheels}
if "$py" -c "import grain, ml_collections, tensorboardX, soundfile, spidr" 2>/dev/null; then
  echo "grain, ml_collections, tensorboardX, soundfile and spidr already importable"
else
  if [[ ! -d $wheels ]]; then
    echo "no $wheels: run bash bench/fetch_wheels.sh where a package index is reachable, and bring the folder" >&2
    exit 1
  fi
  export PIP_BREAK_SYSTEM_PACKAGES=1 # an image's system Python may be marked externally managed
  "$py" -m pip install --quiet --no-index --find-links "$wheels" grain ml-collections tensorboardX soundfile
  "$py" -m pip install --quiet --no-index --no-deps --find-links "$wheels" spidr
fi
"$py" -m bench.machine_info "$smoke" | tee -a "$out/machine.jsonl"
