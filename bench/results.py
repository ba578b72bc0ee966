"""Gather the parts of a GPU run's results folder (`python -m bench.suite --gpu`) into one table and one JSON line.

    python -m bench.results RESULTS_DIR

Reads what the parts left there (each may be missing when its part ran out of time): `step.jsonl` (one line per
side, from bench.step_speed --json), `step_cudnn.jsonl` (ours with run.attention=cudnn), `compile.jsonl`
(bench.compile_time, unrolled layers), `compile_no_autotune.jsonl` (the same, scanned layers, XLA's autotuning
off), `extract.jsonl` (bench.extraction throughput --json), `profile/profile.json` (bench.step_profile: the
step's time by kind of operation) and `parts.jsonl` (exit status, wall time, limit and last output line of every
part). Writes `summary.json` (the JSON line) and `table.md` next to them and prints both. Also holds the table of
device peak rates that MFU is computed against.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.step_profile import telling_functions

# Dense peak rates (FLOP/s) from the vendors' data sheets, by a substring of jax's device_kind (lowercased).
# 16-bit entries are tensor-core bf16 without sparsity; float32 entries are the plain float32 (non-TF32) rate.
PEAK_FLOPS: dict[str, dict[str, float]] = {
    "h200": {"bfloat16": 989e12, "float16": 989e12, "float32": 67e12},
    "h100": {"bfloat16": 989e12, "float16": 989e12, "float32": 67e12},
    "a100": {"bfloat16": 312e12, "float16": 312e12, "float32": 19.5e12},
    "l4": {"bfloat16": 121e12, "float16": 121e12, "float32": 30.3e12},
    "tpu v4": {"bfloat16": 275e12, "float32": 275e12 / 4},
    "tpu v5 lite": {"bfloat16": 197e12, "float32": 197e12 / 4},
    "tpu v5e": {"bfloat16": 197e12, "float32": 197e12 / 4},
    "tpu v5p": {"bfloat16": 459e12, "float32": 459e12 / 4},
    "tpu v6": {"bfloat16": 918e12, "float32": 918e12 / 4},
}
# A measured matrix rate that may stand in for the data sheet (labelled as such where used).
MEASURED_NOTE = {"h200": "about 790e12 bf16 FLOP/s measured for large matmuls on one H200"}


def datasheet_peak(device_kind: str, dtype: str) -> float | None:
    """The data-sheet peak for a device kind and compute dtype, or None for devices not in the table (CPUs)."""
    kind = device_kind.lower()
    for key, rates in PEAK_FLOPS.items():
        if key in kind:
            return rates.get(dtype)
    return None


def read_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a file (none if it is missing); a line cut short by a kill is skipped."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def summarize(folder: Path) -> dict[str, Any]:
    """All figures of a results folder as one flat-ish dict."""
    steps = read_lines(folder / "step.jsonl")
    extracts = read_lines(folder / "extract.jsonl")
    parts = read_lines(folder / "parts.jsonl")
    meta = (read_lines(folder / "machine.jsonl") or [{}])[-1]
    ours = next((s for s in reversed(steps) if s["side"] == "jax"), None)
    # The compiled reference if it finished, else its eager figure (labelled by torch_compile).
    references = [s for s in steps if s["side"] == "reference"]
    reference = next((s for s in references if s["torch_compile"] != "eager"), None) or (
        references[-1] if references else None
    )
    out: dict[str, Any] = {"machine": meta, "parts": {p["part"]: p for p in parts}}
    if ours:
        out["step"] = {
            "shape": {k: ours[k] for k in ("model", "batch", "seconds", "samples_per_device", "dtype")},
            "jax_ms": ours["median_s"] * 1e3,
            "jax_min_max_ms": [ours["min_s"] * 1e3, ours["max_s"] * 1e3],
            "jax_compile_s": ours["compile_s"],
            "jax_peak_memory_bytes": ours["peak_memory_bytes"],
            "jax_memory_kind": ours["memory_kind"],
            "jax_flops_per_step": ours["flops"],
            "device": ours["device"],
        }
        peak = datasheet_peak(ours["device"], ours["dtype"])
        if peak and ours["flops"]:
            out["step"]["mfu_datasheet"] = ours["flops"] / ours["median_s"] / peak
            out["step"]["peak_flops_datasheet"] = peak
    if reference:
        out.setdefault("step", {})
        out["step"].update(
            reference_ms=reference["median_s"] * 1e3,
            reference_min_max_ms=[reference["min_s"] * 1e3, reference["max_s"] * 1e3],
            reference_mode=reference["torch_compile"],
            reference_warmup_s=reference["warmup_s"],
            reference_peak_memory_bytes=reference["peak_memory_bytes"],
        )
        if ours:
            out["step"]["speedup"] = reference["median_s"] / ours["median_s"]
    if extracts:
        out["extract"] = extracts[-1]
    cudnn = read_lines(folder / "step_cudnn.jsonl")
    if cudnn:
        out["step_cudnn"] = {"jax_ms": cudnn[-1]["median_s"] * 1e3, "jax_compile_s": cudnn[-1]["compile_s"]}
    untuned = read_lines(folder / "compile_no_autotune.jsonl")
    if untuned:
        out["compile_no_autotune_s"] = untuned[-1]["compile_s"][0] + untuned[-1]["lower_s"][0]
    profile = read_lines(folder / "profile" / "profile.json")
    if profile:
        kinds, step_s = profile[-1]["kinds"], profile[-1]["step_s"]
        functions = {  # inclusive shares of the step, forward and backward
            name: (times["forward_s"] / step_s, times["backward_s"] / step_s)
            for name, times in telling_functions(profile[-1]).items()
        }
        out["profile"] = {
            "step_ms": step_s * 1e3,
            "busy_share": profile[-1]["busy_s_per_step"] / step_s,
            "kinds_share": {kind: seconds / step_s for kind, seconds in kinds.items()},
            "top_functions_forward_backward_share": dict(list(functions.items())[:15]),
            "top_operations": profile[-1]["operations"][:10],
        }
    unrolled = read_lines(folder / "compile.jsonl")
    if unrolled:
        out["compile_unrolled_s"] = unrolled[-1]["compile_s"][0] + unrolled[-1]["lower_s"][0]
    return out


def extraction_rows(extract: dict[str, Any] | None) -> list[tuple[str, str, str, str]]:
    """The extraction's throughputs, and its whole commands as a user times them (when measured)."""
    if not extract:
        return []
    rows = [
        (
            f"extraction, {extract['files']} files, layer {extract['layer']}",
            f"{extract['jax_audio_s_per_s']:.1f} audio s/s",
            f"{extract['reference_audio_s_per_s']:.1f} audio s/s",
            f"x{extract['speedup']:.2f}",
        )
    ]
    if "reference_process_s" in extract:
        ours = f"{extract['jax_process_cold_s']:.1f} s (empty cache) / {extract['jax_process_s']:.1f} s"
        ratio = f"x{extract['process_speedup_cold']:.2f} / x{extract['process_speedup']:.2f}"
        rows.append(("extraction, whole processes", ours, f"{extract['reference_process_s']:.1f} s", ratio))
    return rows


def table(summary: dict[str, Any]) -> str:
    """A Markdown table of the figures of `summarize`."""
    rows = [("figure", "spidr-jax", "reference", "ratio / note")]
    step = summary.get("step", {})
    if step:
        shape = step.get("shape", {})
        label = f"train step, {shape.get('model', '?')} {shape.get('batch', '?')} x {shape.get('seconds', '?')} s"
        label += f" {shape.get('dtype', '')}"
        ours = f"{step['jax_ms']:.0f} ms" if "jax_ms" in step else "not obtained"
        ref = f"{step['reference_ms']:.0f} ms ({step['reference_mode']})" if "reference_ms" in step else "not obtained"
        ratio = f"x{step['speedup']:.2f}" if "speedup" in step else "-"
        rows.append((label, ours, ref, ratio))
        if "jax_compile_s" in step:
            note = "run.layer_loop=auto: scanned on GPUs, unrolled on CPUs"
            rows.append(("step compile time", f"{step['jax_compile_s']:.1f} s", "", note))
        if "compile_no_autotune_s" in summary:
            figure = f"{summary['compile_no_autotune_s']:.1f} s"
            rows.append(("step compile time, autotuning off", figure, "", "--xla_gpu_autotune_level=0"))
        if "compile_unrolled_s" in summary:
            rows.append(("step compile time, unrolled layers", f"{summary['compile_unrolled_s']:.1f} s", "", ""))
        cudnn = summary.get("step_cudnn")
        if cudnn:
            note = "run.attention=cudnn (the teacher; the student has attention dropout)"
            note += f", compiled in {cudnn['jax_compile_s']:.0f} s"
            rows.append(("train step, cuDNN attention", f"{cudnn['jax_ms']:.0f} ms", "", note))
        if "mfu_datasheet" in step:
            rows.append(("MFU (data-sheet peak)", f"{step['mfu_datasheet']:.1%}", "", ""))
    profile = summary.get("profile")
    if profile:
        shares = ", ".join(f"{kind} {share:.0%}" for kind, share in list(profile["kinds_share"].items())[:6])
        busy = f"operations busy {profile['busy_share']:.0%} of {profile['step_ms']:.0f} ms"
        rows.append(("step time by kind (profile)", busy, "", shares))
    rows += extraction_rows(summary.get("extract"))
    for name, part in summary.get("parts", {}).items():
        last = part.get("last_line", "").replace("|", "/")[:80]
        rows.append((f"part {name}", f"exit {part['rc']}", f"{part['wall_s']:.0f} s of {part['limit_s']} s", last))
    lines = ["| " + " | ".join(rows[0]) + " |", "|---|---:|---:|---:|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(lines)


def write_whole(path: Path, text: str) -> None:
    """Write `text` and a newline to `path` through a temporary name: a reader never sees half of it."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text + "\n", encoding="utf-8")
    partial.replace(path)


def write_summary(folder: Path) -> None:
    """Write `summary.json` and `table.md` into a results folder, and print both."""
    summary = summarize(folder)
    text = table(summary)
    line = json.dumps(summary)
    write_whole(folder / "summary.json", line)
    write_whole(folder / "table.md", text)
    print(text)
    print(line)


def main(argv: list[str] | None = None) -> None:
    """Print and write the table and the JSON line of the folder on the command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.results", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a results folder of python -m bench.suite --gpu")
    folder = parser.parse_args(argv).folder
    if not folder.is_dir():
        parser.error(f"{folder}: no such results folder")
    write_summary(folder)


if __name__ == "__main__":
    main()
