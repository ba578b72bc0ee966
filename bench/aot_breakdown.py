"""Where a compiled step's bytes and kernels go, from the HLO text `python -m spidr_jax.aot --hlo-dir DIR` writes.

    python -m spidr_jax.aot --config=configs/base.py --target=h100x8 --quick --hlo-dir=hlo
    python -m bench.aot_breakdown hlo/h100x8_11x320000_training.hlo.txt [--json out.json]

Per part of the model (the project function that traced each kernel, grouped: extractor, positional convolution,
attention, feed-forward, norms, GELU, optimizer, ...): kernel launches and bytes per step, with the share of the
step's bytes; then by kind (matmul, convolution, attention, collective, other), and every matrix product or
convolution that reads float32, named by its function. An analysis of the compiled program (loops counted in
full, see spidr_jax/aot/hlo.py), not a measurement of a device. Not a test.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from spidr_jax.aot.hlo import KernelCount

# Parts of the step by the project function that traced a kernel, first match wins.
PARTS = (
    ("extractor", ("models/conv_block", "models/extractor", "models/chunked_extractor")),
    ("positional conv", ("models/positional", "models/grouped_conv")),
    ("attention", ("SelfAttention", "attention_kernel", "blocked_attention", "attention_logits", "_logits_")),
    ("norms", ("layer_norm", "LayerNorm", "instance_norm", "GroupNorm")),
    ("GELU", ("gelu",)),
    ("linear layers", ("Linear",)),
    ("layer loop (stacking, scan)", ("layer_stack",)),
    ("codebooks and loss", ("codebooks", "objective", "heads")),
    ("optimizer and clipping", ("train/optimizer", "apply_update", "loss_scale", "train/schedules")),
    ("EMA teacher", ("train/ema",)),
)


def part_of(source: str) -> str:
    """The part of the step a kernel's function belongs to ("other" when none, "untraced" without a source)."""
    if not source:
        return "untraced (compiler-made)"
    return next((part for part, keys in PARTS if any(key in source for key in keys)), "other: " + source)


def breakdown(hlo_text: str) -> dict:
    """Launches and bytes per part and per kind, and the float32 products by function."""
    count = KernelCount.of(hlo_text)
    total = count.bytes
    parts: dict[str, Counter] = {}
    for kernel in count.kernels:
        entry = parts.setdefault(part_of(kernel.source), Counter())
        entry["launches"] += kernel.launches
        entry["bytes"] += kernel.bytes * kernel.launches
    float32: Counter = Counter()
    for kernel in count.kernels:
        if kernel.float32_product:
            float32[kernel.source or kernel.name] += kernel.launches
    return {
        "bytes": total,
        "launches": dict(count.launches),
        "bytes_by_kind": {kind: value / total for kind, value in count.bytes_by("kind").items()},
        "parts": {
            name: {"launches": c["launches"], "bytes": c["bytes"], "share": c["bytes"] / total}
            for name, c in sorted(parts.items(), key=lambda item: -item[1]["bytes"])
        },
        "float32_products": dict(float32.most_common()),
        "loops_without_trip_count": count.loops_without_trip_count,
    }


def main() -> None:
    """Print the breakdown of one or more HLO files."""
    parser = argparse.ArgumentParser(prog="python -m bench.aot_breakdown", description=__doc__.split("\n\n")[0])
    parser.add_argument("hlo", nargs="+", type=Path, help="HLO text files written by --hlo-dir")
    parser.add_argument("--json", type=Path, help="also write the breakdowns as one JSON object")
    args = parser.parse_args()
    results = {}
    for path in args.hlo:
        result = results[path.name] = breakdown(path.read_text(encoding="utf-8"))
        print(f"{path.name}: {result['bytes'] / 1e9:.2f} GB per step, launches {result['launches']}")
        print("  bytes by kind: " + ", ".join(f"{k} {v:.1%}" for k, v in result["bytes_by_kind"].items()))
        for name, part in result["parts"].items():
            print(f"  {name:<40} {part['launches']:>6} launches {part['bytes'] / 1e9:>8.3f} GB {part['share']:>6.1%}")
        print("  float32 matrix products and convolutions (launches per step, by function):")
        for source, launches in result["float32_products"].items():
            print(f"    {launches:>4}  {source}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
