"""Peak memory and time of extracting one long file through SpidR base (random weights), in a fresh process.

    python bench/long_file_memory.py --minutes 1 3 5
    python bench/long_file_memory.py --minutes 10 --units
    python bench/long_file_memory.py --minutes 10 30 60 --compile-only

For each length, a child process builds the model, extracts the file (features of --layer, or units) through
the same path as `python -m spidr_jax.extract` (spidr_jax.inference.model_outputs) and exits; the parent reports
the child's peak resident memory (ru_maxrss) and wall time. One line per length. `--compile-only` compiles the
same program for each length without running it and prints XLA's buffer plan (temporaries, arguments, outputs):
what the computation itself needs, for lengths too long to run here.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000


def child(path: Path, layer: int, *, units: bool) -> None:
    """Build SpidR base and extract the file at `path`; print its frames and the extraction time."""
    import jax.numpy as jnp
    import soundfile as sf
    from spidr_jax.extraction import units_at
    from spidr_jax.inference import features_at, model_outputs

    from spidr_jax.config import SpidRConfig
    from spidr_jax.data.manifest import ManifestRow
    from spidr_jax.models import build_model

    model = build_model(SpidRConfig(), dtype=jnp.float32)
    row = ManifestRow(fileid="long", path=str(path), num_samples=sf.info(path).frames)
    output = units_at(layer, model) if units else features_at(layer)
    start = time.perf_counter()
    (result,) = list(model_outputs(model, [row], output))
    if result.error is not None:
        raise SystemExit(f"failed: {result.error}")
    print(f"frames={result.value.shape[0]} seconds={time.perf_counter() - start:.1f}")


def compile_only(minutes: list[float], layer: int) -> None:
    """Print XLA's memory plan of the extraction program for files of these lengths (nothing runs)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from spidr_jax.inference import compiled_output, features_at

    from spidr_jax.config import SpidRConfig
    from spidr_jax.models import build_model

    graphdef, state = nnx.split(build_model(SpidRConfig()))
    run = compiled_output(graphdef, features_at(layer))
    for length in minutes:
        samples = jax.ShapeDtypeStruct((1, int(length * 60 * SAMPLE_RATE)), jnp.float32)
        plan = run.lower(state, samples, jax.ShapeDtypeStruct((1,), jnp.int32)).compile().memory_analysis()
        print(
            f"{length:g} min, features of layer {layer} (compiled, not run): XLA temporaries "
            f"{plan.temp_size_in_bytes / 2**30:.2f} GiB, arguments {plan.argument_size_in_bytes / 2**30:.2f} GiB, "
            f"outputs {plan.output_size_in_bytes / 2**30:.2f} GiB",
            flush=True,
        )


def measure(minutes: float, layer: int, *, units: bool, workdir: Path) -> str:
    """Run one child on a file of `minutes` of noise; its summary line."""
    path = workdir / f"long_{minutes:g}min.wav"
    if not path.exists():
        import soundfile as sf

        rng = np.random.default_rng(0)
        sf.write(path, (0.1 * rng.standard_normal(int(minutes * 60 * SAMPLE_RATE))).astype(np.float32), SAMPLE_RATE)
    cmd = [sys.executable, __file__, "--child", str(path), "--layer", str(layer), *(["--units"] if units else [])]
    start = time.perf_counter()
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    out, err = process.stdout.read(), process.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        return f"{minutes:g} min: child failed ({os.waitstatus_to_exitcode(status)}): {err.strip()[-500:]}"
    what = f"units of layer {layer}" if units else f"features of layer {layer}"
    peak_gb = usage.ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux
    return f"{minutes:g} min, {what}: peak RSS {peak_gb:.2f} GiB, {wall:.0f} s in all ({out.strip()})"


def main() -> None:
    """Parse arguments; run the children one after the other."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 3.0])
    parser.add_argument("--layer", type=int, default=12, help="1-based layer (12: every layer runs)")
    parser.add_argument("--units", action="store_true", help="extract units instead of features")
    parser.add_argument("--compile-only", action="store_true", help="print XLA's memory plan, run nothing")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.compile_only:
        compile_only(args.minutes, args.layer)
        return
    if args.child is not None:
        child(args.child, args.layer, units=args.units)
        return
    with tempfile.TemporaryDirectory() as workdir:
        for minutes in args.minutes:
            print(measure(minutes, args.layer, units=args.units, workdir=Path(workdir)), flush=True)


if __name__ == "__main__":
    main()
