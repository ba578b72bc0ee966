#!/usr/bin/env bash
# The GPU comparison in at most 8 minutes from a bare machine, each part under its own time limit, in this order:
#   setup         install the wheels of bench/fetch_wheels.sh where grain, soundfile, ... or spidr are missing
#   step_jax      spidr_jax's compiled training step, SpidR base, 15 x 15 s (3.6 M samples, within the
#                 reference's 3.8 M per GPU), bf16; then 2 more steps traced (bench/step_profile.py): where the
#                 step's time goes, by operation and kind, into profile/ (the step's figure is out before)
#   step_ref      the reference's step on the same batch under torch.compile(dynamic=False) and bf16 autocast
#   step_eager    only if step_ref gave no figure: the reference's eager bf16 step (labelled eager)
#   extract       feature extraction throughput, both implementations, the same files
#   parity_bf16   tests/test_mixed_precision.py's bf16 run against the reference's float32 run, JAX on the GPU
#                 (the bf16 tolerances: loss rtol 2e-3, grad norm 5e-2, perplexities 3e-2 and 1e-3)
#   parity_f32    tests/test_model_parity.py's small variants, JAX on the GPU, at its float32 tolerance
#   step_cudnn    only with 100 s or more of the 8 left: step_jax with run.attention=cudnn (cuDNN's fused kernel
#                 where attention has no dropout: the teacher), to choose run.attention=auto's kernel on GPUs
#   compile_no_autotune  only with a minute or more of the 8 left: step_jax's step compiled again with XLA's
#                 autotuning off (--xla_gpu_autotune_level=0, bench/compile_time.py): how much of the compile time
#                 goes to trying kernels and cuDNN convolution algorithms rather than to the graph's size
#   compile_unroll  only with a minute or more of the 8 left: the same step compiled with unrolled layers
#                 (bench/compile_time.py), against step_jax's compilation with scanned ones (run.layer_loop=auto)
# The table and the JSON line are printed after the step parts (so a run cut short still reports the step) and at
# the end; both are written into the results folder (summary.json, table.md, one log per part).
#
# Usage: bash bench/gpu.sh [--cpu-smoke] [RESULTS_DIR]     (from the repository root)
#   --cpu-smoke   the same parts on this CPU with configs/tiny.py's model, 2 x 2 s, and the tests only collected:
#                 checks that the script runs end to end, measures nothing about GPUs
# Environment: PYTHON (default python3), WHEELS (default bench/wheels), STEP_ARGS (replaces the step flags),
#   LIMIT_<PART> (seconds, e.g. LIMIT_STEP_JAX=200; their total must stay within TOTAL_LIMIT, default 480).
set -euo pipefail

smoke=0
if [[ ${1:-} == --cpu-smoke ]]; then
  smoke=1
  shift
fi
out=${1:-bench/results/$([[ $smoke == 1 ]] && echo cpu-smoke || echo gpu)-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
py=${PYTHON:-python3}
wheels=${WHEELS:-bench/wheels}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# Seconds per part. The smoke run's step is small but its extraction runs the base model on a CPU.
if [[ $smoke == 1 ]]; then step_default=100 extract_default=120; else step_default=170 extract_default=70; fi
declare -A limit=(
  [setup]=${LIMIT_SETUP:-35} [step_jax]=${LIMIT_STEP_JAX:-$step_default} [step_ref]=${LIMIT_STEP_REF:-90}
  [step_eager]=${LIMIT_STEP_EAGER:-35} [extract]=${LIMIT_EXTRACT:-$extract_default}
  [parity_bf16]=${LIMIT_PARITY_BF16:-50} [parity_f32]=${LIMIT_PARITY_F32:-30}
)
total=0
for name in "${!limit[@]}"; do total=$((total + limit[$name])); done
if ((total > ${TOTAL_LIMIT:-480})); then
  echo "the part limits add up to ${total} s, more than ${TOTAL_LIMIT:-480} s" >&2
  exit 2
fi

if [[ $smoke == 1 ]]; then
  export JAX_PLATFORMS=cpu CUDA_VISIBLE_DEVICES=""
  read -r -a step_args <<<"${STEP_ARGS:---tiny --batch 2 --seconds 2 --dtype bfloat16 --warmup 3 --repeats 3}"
  extract_args=(--files 3 --max-shapes 1 --runs 2)
  compile_args=(--models tiny --batch 2 --seconds 2 --dtype bfloat16)
  pytest_mode=(--collect-only)  # the suite is not run here; the GPU run executes these tests
  jax_cuda=cpu
else
  read -r -a step_args <<<"${STEP_ARGS:---batch 15 --seconds 15 --dtype bfloat16 --warmup 3 --repeats 5}"
  extract_args=(--files 40 --max-shapes 2 --runs 2 --no-reference-process)  # its 70 s hold no more
  compile_args=(--models base --batch 15 --seconds 15 --dtype bfloat16)
  pytest_mode=()
  jax_cuda=cuda
fi

part() { # part NAME COMMAND...: run under the part's limit, stream and keep its output, record how it went
  local name=$1 rc=0 start pid last
  shift
  echo "== $name (limit ${limit[$name]} s)"
  start=$(date +%s%N)
  # timeout signals the command's whole process group (compiler workers included) when the limit is reached.
  : >"$out/$name.log"  # exists before tail opens it
  timeout --kill-after=5 "${limit[$name]}" "$@" >>"$out/$name.log" 2>&1 &
  pid=$!
  tail -n +1 -f --pid="$pid" "$out/$name.log" || true
  wait "$pid" || rc=$?
  last=$(grep -v '^\s*$' "$out/$name.log" | tail -n 1 | cut -c1-200 || true)
  "$py" -c 'import json, sys, time; print(json.dumps({"part": sys.argv[1], "rc": int(sys.argv[2]),
    "limit_s": int(sys.argv[3]), "wall_s": round((time.time_ns() - int(sys.argv[4])) / 1e9, 1),
    "last_line": sys.argv[5]}))' "$name" "$rc" "${limit[$name]}" "$start" "$last" >>"$out/parts.jsonl"
  echo "== $name: exit $rc"
}

setup() { # install only what the image lacks, then record the machine and the versions
  if "$py" -c "import grain, ml_collections, tensorboardX, soundfile, spidr" 2>/dev/null; then
    echo "grain, ml_collections, tensorboardX, soundfile and spidr already importable"
  else
    if [[ ! -d $wheels ]]; then
      echo "no $wheels: run bash bench/fetch_wheels.sh where a package index is reachable, and bring the folder" >&2
      return 1
    fi
    export PIP_BREAK_SYSTEM_PACKAGES=1  # an image's system Python may be marked externally managed
    "$py" -m pip install --quiet --no-index --find-links "$wheels" grain ml-collections tensorboardX soundfile
    "$py" -m pip install --quiet --no-index --no-deps --find-links "$wheels" spidr
  fi
  "$py" bench/machine_info.py "$smoke" | tee -a "$out/machine.jsonl"
}

begin=$(date +%s)
export -f setup
export py wheels out smoke
part setup bash -c 'set -euo pipefail; setup'
part step_jax "$py" bench/step_speed.py --side jax "${step_args[@]}" --json "$out/step.jsonl" \
  --profile "$out/profile"
part step_ref "$py" bench/step_speed.py --side reference --torch-compile static "${step_args[@]}" \
  --json "$out/step.jsonl"
if ! grep -q '"side": "reference"' "$out/step.jsonl" 2>/dev/null; then
  part step_eager "$py" bench/step_speed.py --side reference --torch-compile eager "${step_args[@]}" \
    --json "$out/step.jsonl"
fi
"$py" bench/collect.py "$out" || true
part extract "$py" bench/extract_speed.py "${extract_args[@]}" --json "$out/extract.jsonl"
part parity_bf16 env JAX_PLATFORMS="$jax_cuda" "$py" -m pytest -q -p no:cacheprovider "${pytest_mode[@]}" \
  tests/test_mixed_precision.py -k bfloat16_run_stays_close
part parity_f32 env JAX_PLATFORMS="$jax_cuda" "$py" -m pytest -q -p no:cacheprovider "${pytest_mode[@]}" \
  tests/test_model_parity.py -k small_variants
left=$((${TOTAL_LIMIT:-480} - ($(date +%s) - begin) - 15))
if ((left >= 100)) && [[ $smoke == 0 ]]; then  # cuDNN needs the GPU
  limit[step_cudnn]=$((left < 150 ? left : 150))
  part step_cudnn "$py" bench/step_speed.py --side jax --attention cudnn "${step_args[@]}" \
    --json "$out/step_cudnn.jsonl"
fi
left=$((${TOTAL_LIMIT:-480} - ($(date +%s) - begin) - 15))
if ((left >= 60)); then
  limit[compile_no_autotune]=$((left < 150 ? left : 150))
  part compile_no_autotune env XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }--xla_gpu_autotune_level=0" \
    "$py" bench/compile_time.py --layers scan --runs 1 "${compile_args[@]}" --json "$out/compile_no_autotune.jsonl"
fi
left=$((${TOTAL_LIMIT:-480} - ($(date +%s) - begin) - 15))
if ((left >= 60)); then
  limit[compile_unroll]=$left
  part compile_unroll "$py" bench/compile_time.py --layers unroll --runs 1 "${compile_args[@]}" \
    --json "$out/compile.jsonl"
fi
echo "== all parts: $(($(date +%s) - begin)) s"
"$py" bench/collect.py "$out"
