#!/usr/bin/env bash
# The GPU measurements of BENCHMARKS.md in one go, each part under its own time limit:
#   1. the training step of SpidR base against the reference (torch.compile, bf16 autocast), near the paper's
#      per-GPU batch (3.6 M of its 3.8 M samples budget);
#   2. the model parity tests with JAX on the GPU (the reference on the CPU);
#   3. feature extraction throughput against the reference;
#   4. the step again with XLA's own grouped-convolution weight gradient (for grouped_conv.py's choice).
# Compilation dominates the time; the limits below add up to 42 minutes.
# Usage: bash bench/gpu_suite.sh [LOG_DIR]   (run from the repository root; spidr_jax and spidr importable)
set -u
logs=${1:-bench-logs}
mkdir -p "$logs"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

part() {  # part NAME SECONDS COMMAND...: run with a limit, keep its log, report its exit status
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit} s)"
    timeout "$limit" "$@" 2>&1 | tee "$logs/$name.log" | grep -v "^\s*$" | tail -n 8
    echo "== $name: exit ${PIPESTATUS[0]}"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import jax, jaxlib, flax, torch; print('jax', jax.__version__, jax.devices(), '| flax', flax.__version__, '| torch', torch.__version__)"

step_args=(--batch 15 --seconds 15 --dtype bfloat16 --warmup 3 --repeats 10)
part step 900 env XLA_PYTHON_CLIENT_MEM_FRACTION=0.4 python3 bench/step_speed.py "${step_args[@]}"
part parity 600 env JAX_PLATFORMS=cuda python3 -m pytest -x -q -p no:cacheprovider tests/test_model_parity.py
part extract 600 python3 bench/extract_speed.py --files 100
part xla_conv_grad 400 python3 bench/step_speed.py --jax-only --xla-conv-grad "${step_args[@]}"
