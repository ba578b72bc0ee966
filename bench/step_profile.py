"""Where a compiled step's time goes: a jax.profiler trace of a few steps, summed by operation, kind and function.

    python -m bench.step_speed --side jax --profile DIR     # after the timed steps, traces 2 more into DIR

The trace is JAX's Perfetto JSON (`create_perfetto_trace=True`), read with the standard library. The operations
are taken from one timeline of the trace: the device's "XLA Ops" line on GPUs and TPUs, else its kernel streams,
else (CPU) the host threads that run XLA's compiled code. Each operation gets a kind (matmul, convolution,
attention, ...) and the project's functions that traced it, forward or backward, from the compiled program's HLO
(bench.hlo_index); a name that is no HLO instruction (a kernel) gets a kind from a pattern over its name. So
the step's time reads by kind and by function (inclusive: ConvBlock.convolve, SelfAttention.__call__, adamw, ...)
on every backend. `DIR/profile.json` keeps every name with its time; the trace file stays in DIR too. Not a test.
"""

from __future__ import annotations

import gzip
import json
import re
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.hlo_index import HloIndex, kind_of

# The CPU runtime's own events beside the operations on host timelines (waiting, dispatch, markers: C++ names such
# as ThunkExecutor::Execute, which HLO instruction names never are), not computing.
HOST_RUNTIME_EVENTS = re.compile(r"::|wait for completion|^end: ")


def read_trace(directory: Path) -> list[dict[str, Any]]:
    """The events of the newest Perfetto trace under `directory`."""
    paths = sorted(directory.glob("**/perfetto_trace.json.gz"), key=lambda path: path.stat().st_mtime)
    if not paths:
        raise FileNotFoundError(f"{directory}: the profiler wrote no perfetto_trace.json.gz")
    with gzip.open(paths[-1], "rt", encoding="utf-8") as trace:
        data = json.load(trace)
    return data["traceEvents"] if isinstance(data, dict) else data


def timelines(events: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Complete events ("X") by (process name, thread name)."""
    processes = {e["pid"]: e["args"]["name"] for e in events if e.get("ph") == "M" and e["name"] == "process_name"}
    threads = {
        (e["pid"], e["tid"]): e["args"]["name"] for e in events if e.get("ph") == "M" and e["name"] == "thread_name"
    }
    lines: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        if event.get("ph") == "X" and "dur" in event:
            key = (processes.get(event["pid"], str(event["pid"])), threads.get((event["pid"], event.get("tid")), ""))
            lines[key].append(event)
    return lines


def operation_lines(lines: dict[tuple[str, str], list[dict[str, Any]]]) -> list[tuple[str, str]]:
    """The timeline(s) that list the compiled step's operations, most specific first (see the module docstring)."""
    device = [key for key in lines if key[0].startswith("/device:")]
    for wanted in (r"^xla ops$", r"stream"):
        chosen = [key for key in device if re.search(wanted, key[1].lower())]
        if chosen:
            return chosen
    return [key for key in lines if key[1].startswith("tf_XLA")]


def self_times(events: list[dict[str, Any]]) -> list[tuple[str, float]]:
    """(name, seconds) of one thread's events, each less the events nested in it (wrappers would count twice)."""
    timed = [[event["name"], float(event["dur"]), event] for event in events if event["dur"] > 0]
    timed.sort(key=lambda item: (item[2]["ts"], -item[1]))
    open_events: list[list[Any]] = []
    for item in timed:
        start = item[2]["ts"]
        while open_events and open_events[-1][2]["ts"] + open_events[-1][2]["dur"] <= start:
            open_events.pop()
        if open_events:
            open_events[-1][1] -= item[2]["dur"]
        open_events.append(item)
    return [(name, max(micros, 0.0) * 1e-6) for name, micros, _ in timed]


def summarize(events: list[dict[str, Any]], steps: int, wall_s: float, index: HloIndex | None = None) -> dict[str, Any]:
    """Seconds per step of the operation timeline by operation, kind and function, and each thread's busy time.

    Functions are the project's functions that traced each operation (inclusive: an operation counts for each
    function on its stack), split into forward and backward; `index` holds them and the kinds (the program's HLO).
    """
    index = index or HloIndex()
    lines = timelines(events)
    chosen = operation_lines(lines)
    by_name: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for key in chosen:
        on_host = not key[0].startswith("/device:")
        for name, seconds in self_times(lines[key]):
            if on_host and HOST_RUNTIME_EVENTS.search(name):
                continue
            by_name[name][0] += seconds / steps
            by_name[name][1] += 1
    by_kind: dict[str, float] = defaultdict(float)
    by_function: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])  # [forward, backward] seconds
    operations = []
    for name, (seconds, count) in sorted(by_name.items(), key=lambda item: -item[1][0]):
        kind = index.kinds.get(name) or kind_of(name)
        functions = index.functions.get(name, ())
        backward = name in index.backward
        by_kind[kind] += seconds
        for function in dict.fromkeys(functions) or ["(no source)"]:  # once per operation, outermost first
            by_function[function][int(backward)] += seconds
        operations.append(
            {
                "name": name,
                "kind": kind,
                "s_per_step": seconds,
                "count_per_step": count / steps,
                "backward": backward,
                "function": functions[-1] if functions else "",
            }
        )
    return {
        "steps": steps,
        "step_s": wall_s / steps,
        "timeline": sorted({f"{process} / {re.sub(r'/-?[0-9]+$', '', thread)}" for process, thread in chosen}),
        "busy_s_per_step": sum(seconds for seconds, _ in by_name.values()),
        "kinds": dict(sorted(by_kind.items(), key=lambda item: -item[1])),
        "functions": {
            function: {"forward_s": forward, "backward_s": backward}
            for function, (forward, backward) in sorted(by_function.items(), key=lambda item: -sum(item[1]))
        },
        "operations": operations,
        "threads": sorted(
            (
                {"timeline": " / ".join(key), "busy_s_per_step": sum(s for _, s in self_times(ev)) / steps}
                for key, ev in lines.items()
            ),
            key=lambda thread: -thread["busy_s_per_step"],
        ),
    }


def profile_steps(run_step: Callable[[], None], steps: int, directory: Path, hlo_text: str = "") -> dict[str, Any]:
    """Trace `steps` calls of `run_step` (each waiting for its step) into `directory`; write and return the summary.

    `hlo_text`: the compiled program's HLO (`compiled.as_text()`): the kinds and functions of its operations.
    """
    import jax  # here, so that reading a summary (bench.results) needs no jax

    directory.mkdir(parents=True, exist_ok=True)
    with jax.profiler.trace(str(directory), create_perfetto_trace=True):
        start = time.perf_counter()
        for _ in range(steps):
            run_step()
        wall_s = time.perf_counter() - start
    summary = summarize(read_trace(directory), steps, wall_s, HloIndex.parse(hlo_text))
    (directory / "profile.json").write_text(json.dumps(summary) + "\n", encoding="utf-8")
    return summary


def telling_functions(summary: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The summary's functions less those on (nearly) every operation's stack (train_step, ...): they say nothing."""
    busy = summary["busy_s_per_step"]
    return {
        name: times
        for name, times in summary["functions"].items()
        if times["forward_s"] + times["backward_s"] < 0.99 * busy
    }


def describe(summary: dict[str, Any], top: int = 12) -> str:
    """A few lines: the kinds' shares of the step, the functions that take most of it, the longest operations."""
    step_s, busy = summary["step_s"], summary["busy_s_per_step"]
    timeline = ", ".join(summary["timeline"]) or "no timeline"
    launched = sum(op["count_per_step"] for op in summary["operations"])
    head = (
        f"profile of {summary['steps']} steps ({step_s * 1e3:.1f} ms each while traced), {launched:.0f} operations "
        f"per step ({len(summary['operations'])} distinct), busy {busy * 1e3:.1f} ms per step ({busy / step_s:.0%}), "
        f"from {timeline}"
    )
    kinds = "  by kind: " + ", ".join(f"{kind} {seconds / step_s:.0%}" for kind, seconds in summary["kinds"].items())
    parts = list(telling_functions(summary).items())
    functions = ["  by function (inclusive, share of the step: forward + backward):"] + [
        f"    {(times['forward_s'] + times['backward_s']) / step_s:6.1%} ({times['forward_s'] / step_s:.1%} + "
        f"{times['backward_s'] / step_s:.1%})  {function}"
        for function, times in parts[:top]
    ]
    operations = ["  longest operations:"] + [
        f"    {op['s_per_step'] * 1e3:8.2f} ms {op['s_per_step'] / step_s:5.1%}  x{op['count_per_step']:<5g} "
        f"{op['kind']:<11} {'bwd' if op['backward'] else 'fwd'} {op['name'][:60]}  {op['function']}"
        for op in summary["operations"][:top]
    ]
    return "\n".join([head, kinds, *functions, *operations])
