"""What a compiled program's HLO text says about each of its instructions: kind, source functions, pass.

    index = HloIndex.parse(jax.jit(f).lower(*args).compile().as_text())
    index.kinds["fusion.12"], index.functions["fusion.12"], "fusion.12" in index.backward

- kind: matmul, convolution, attention, collective, copy, reduction, fusion (elementwise) or other; a fusion by
  the operations it holds, a custom call (cuBLAS, cuDNN) by its target.
- functions: the project's functions on the Python stack that traced the instruction, outermost first, from the
  HLO's stack-frame tables (e.g. train_step, DinoSR.masked_prediction, ConvBlock.convolve).
- backward: instructions of the gradient (JAX's op_name says `transpose(...)`).

Read by bench.step_profile. A fusion carries the metadata of one of the operations it holds, so its functions
are those of that one.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

# Kinds by name, first match wins: "fprop"/"dgrad"/"wgrad" are cuDNN convolution kernels, which also contain
# "gemm"; "convert" fusions are elementwise casts, not convolutions.
NAME_KINDS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern))
    for kind, pattern in (
        ("attention", r"attention|fmha|flash|sdpa|softmax"),
        ("convolution", r"conv(?!ert)|fprop|dgrad|wgrad"),
        ("matmul", r"gemm|\bdot|matmul|cublas|xmma|cutlass|nvjet"),
        ("collective", r"all-reduce|all-gather|reduce-scatter|nccl|collective"),
        ("copy", r"memcpy|memset|copy|transpose|dynamic-update-slice"),
        ("reduction", r"reduce"),
        ("fusion", r"fusion|ynn"),
    )
)
# HLO opcodes that give an instruction (or the fusion holding them) its kind, in order of precedence.
OPCODE_KINDS = (
    ("convolution", "convolution"),
    ("dot", "matmul"),
    ("all-reduce", "collective"),
    ("all-gather", "collective"),
    ("reduce-scatter", "collective"),
    ("reduce", "reduction"),
    ("transpose", "copy"),
    ("copy", "copy"),
)
INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*.*?\s([a-z][\w\-]*)\(")
COMPUTATION = re.compile(r"^\s*(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
TABLE_ROW = re.compile(r"^(\d+) (.*)$")
PROJECT_FILE = re.compile(r"[/\\]spidr_jax[/\\]")


def kind_of(name: str) -> str:
    """The kind of an operation or kernel name by its text ("other" when no pattern matches)."""
    lowered = name.lower()
    return next((kind for kind, pattern in NAME_KINDS if pattern.search(lowered)), "other")


def _field(text: str, key: str) -> str | None:
    match = re.search(rf"\b{key}=(\"[^\"]*\"|[\w.\-%]+)", text)
    return match.group(1).strip('"').lstrip("%") if match else None


def _tables(hlo_text: str) -> dict[str, dict[int, str]]:
    """The numbered tables after the computations (FileNames, FunctionNames, FileLocations, StackFrames)."""
    tables: dict[str, dict[int, str]] = {}
    current: dict[int, str] | None = None
    for line in hlo_text.splitlines():
        if line in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
            current = tables.setdefault(line, {})
            continue
        row = TABLE_ROW.match(line) if current is not None else None
        if row and current is not None:
            current[int(row.group(1))] = row.group(2)
        elif current is not None and line.strip():
            current = None
    return tables


def _stack_functions(tables: dict[str, dict[int, str]]) -> dict[int, tuple[str, ...]]:
    """Each stack frame id -> the project's function names on its stack, outermost first."""
    files = {k: v.strip('"') for k, v in tables.get("FileNames", {}).items()}
    functions = {k: v.strip('"') for k, v in tables.get("FunctionNames", {}).items()}
    locations = {}
    for key, text in tables.get("FileLocations", {}).items():
        file_id, function_id = _field(text, "file_name_id"), _field(text, "function_name_id")
        if file_id and function_id and PROJECT_FILE.search(files.get(int(file_id), "")):
            locations[key] = functions.get(int(function_id), "?")
    parents = {}
    frame_locations = {}
    for key, text in tables.get("StackFrames", {}).items():
        # XLA prints a frame's parent (its caller) as the parent's id + 1: 1 is "no parent".
        parents[key] = int(_field(text, "parent_frame_id") or 1) - 1
        frame_locations[key] = int(_field(text, "file_location_id") or 0)
    stacks: dict[int, tuple[str, ...]] = {}
    for frame in frame_locations:
        names, current, seen = [], frame, set()
        while current and current not in seen:  # parents are older frames; 0 (or a loop) ends the chain
            seen.add(current)
            if frame_locations.get(current) in locations:
                names.append(locations[frame_locations[current]])
            current = parents.get(current, 0)
        stacks[frame] = tuple(reversed(names))
    return stacks


@dataclass
class HloIndex:
    """Per instruction name: its kind, the project's functions that traced it, and whether it is of the gradient."""

    kinds: dict[str, str] = field(default_factory=dict)
    functions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    backward: set[str] = field(default_factory=set)

    @classmethod
    def parse(cls, hlo_text: str) -> HloIndex:
        """Index the instructions of every computation of an HLO module's text (empty text: an empty index)."""
        opcodes: dict[str, set[str]] = defaultdict(set)  # computation -> the opcodes in it
        instructions: list[tuple[str, str, str]] = []  # (name, opcode, the whole line)
        computation = ""
        for line in hlo_text.splitlines():
            match = INSTRUCTION.match(line)
            if match:
                opcodes[computation].add(match.group(2))
                instructions.append((match.group(1), match.group(2), line))
            elif header := COMPUTATION.match(line):
                computation = header.group(1)
        stacks = _stack_functions(_tables(hlo_text))
        sources = _sources(instructions)
        index = cls()
        for name, opcode, line in instructions:
            index.kinds[name] = _kind(opcode, line, opcodes)
            frame, op_name = sources.get(name, (None, ""))
            index.functions[name] = stacks.get(int(frame), ()) if frame else ()
            if "transpose(" in op_name:
                index.backward.add(name)
        return index


def _sources(instructions: list[tuple[str, str, str]]) -> dict[str, tuple[str | None, str]]:
    """(stack frame id, op_name) of each instruction.

    One that XLA created without them (a convolution rewritten for the backend, say) takes those of a user that
    has them (users follow their operands in the text, so a reverse pass carries them down a chain).
    """
    sources = {}
    for name, _, line in instructions:
        frame = _field(line, "stack_frame_id")
        if frame:
            sources[name] = (frame, _field(line, "op_name") or "")
    for name, _, line in reversed(instructions):
        if name not in sources:
            continue
        for operand in re.findall(r"%([\w.\-]+)", line.split(", metadata=")[0]):
            sources.setdefault(operand, sources[name])
    return sources


def _kind(opcode: str, line: str, opcodes: dict[str, set[str]]) -> str:
    """The kind of one instruction: by custom-call target, else by its opcode and those of what it calls."""
    target = _field(line, "custom_call_target")
    if target:
        return kind_of(target)
    called = _field(line, "calls")
    held = opcodes.get(called, set()) if called else set()
    ops = held | {opcode}
    kind = next((kind for op, kind in OPCODE_KINDS if op in ops), "fusion" if held else "other")
    if kind in ("fusion", "other") and "custom-call" in held:
        return kind_of(line)
    return kind
