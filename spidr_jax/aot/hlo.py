"""A compiled program's HLO text, read for what one execution of it launches and moves.

`KernelCount.of(hlo_text)` walks the optimized module from its entry: every fusion, custom call (cuBLAS, cuDNN),
collective or unfused operation is one kernel launch, and the kernels of a loop body count once per iteration
(XLA's `known_trip_count`) — XLA's own cost analysis counts a loop body once, whatever its trip count. A kernel's
bytes are those it reads and writes in device memory (HBM): its operands and results, except that an operand only
sliced inside a fusion counts its slice, a buffer updated in place counts its update, a GPU library's scratch
workspace is left out, and on TPUs arrays placed in on-chip memory (memory space S(1) and up) count nothing.
Each kernel also gets a kind (matmul, convolution, attention, collective, other), whether its matrix product or
convolution reads float32, and the project function that traced it (from the module's stack-frame tables).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field

KINDS = ("matmul", "convolution", "attention", "collective", "other")
DTYPE_BYTES = {
    "pred": 1, "s4": 0.5, "u4": 0.5, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "s32": 4, "u32": 4, "s64": 8, "u64": 8,
    "f8e4m3fn": 1, "f8e5m2": 1, "bf16": 2, "f16": 2, "f32": 4, "f64": 8, "c64": 8, "c128": 16,
}  # fmt: skip
ARRAY = re.compile(r"\b(" + "|".join(DTYPE_BYTES) + r")\[([\d,]*)\](\{[^}]*\})?")
HEADER = re.compile(r"^(ENTRY )?%?([\w.\-]+) \(.*\) -> .* \{$")
NAME = re.compile(r"%([\w.\-]+)")
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute", "ragged-all-to-all")
NOT_KERNELS = {
    "parameter", "constant", "get-tuple-element", "tuple", "bitcast", "after-all", "partition-id", "replica-id",
    "opt-barrier", "add-dependency", "domain", "copy-done", "send-done", "recv-done", "async-done", "async-update",
    "all-reduce-done", "all-gather-done", "collective-permute-done", "while", "conditional", "call",
}  # fmt: skip
SLICING = {"slice", "dynamic-slice", "gather"}
PROJECT_FILE = re.compile(r"spidr_jax/(.+)\.py$")


@dataclass
class Instruction:
    """One HLO instruction: name, result type text, opcode, operand names and the rest of its line."""

    name: str
    type_text: str
    opcode: str
    operands: list[str]
    attributes: str
    argument: str = ""  # the text between the opcode's parentheses (a parameter's index)

    def called(self, key: str) -> list[str]:
        """The computations named by attribute `key` (calls, body, to_apply, branch_computations, ...)."""
        match = re.search(rf"\b{key}=(\{{[^}}]*\}}|%[\w.\-]+)", self.attributes)
        return NAME.findall(match.group(1)) if match else []


@dataclass
class Kernel:
    """One kernel of the program: what it is, how often it runs per execution and what it moves each time."""

    name: str
    kind: str
    launches: int
    bytes: float
    float32_product: bool
    source: str  # the innermost project function that traced it ("" when unknown)


@dataclass
class KernelCount:
    """The kernels one execution of a compiled program launches, with their bytes (loops counted in full)."""

    kernels: list[Kernel] = field(default_factory=list)
    loops_without_trip_count: int = 0

    @property
    def launches(self) -> Counter:
        """Kernel launches per execution, by kind."""
        counts: Counter = Counter(dict.fromkeys(KINDS, 0))
        for kernel in self.kernels:
            counts[kernel.kind] += kernel.launches
        return counts

    @property
    def bytes(self) -> float:
        """Bytes read and written in device memory per execution."""
        return sum(kernel.bytes * kernel.launches for kernel in self.kernels)

    def bytes_by(self, key: str) -> Counter:
        """Bytes per execution grouped by a kernel attribute ("kind", "source")."""
        counts: Counter = Counter()
        for kernel in self.kernels:
            counts[getattr(kernel, key)] += kernel.bytes * kernel.launches
        return counts

    @classmethod
    def of(cls, hlo_text: str) -> KernelCount:
        """Count the kernels of an optimized HLO module's text (`compiled.as_text()`)."""
        module = _Module.parse(hlo_text)
        count = cls()
        module.walk(module.entry, 1, count)
        return count


class _Module:
    def __init__(self) -> None:
        self.computations: dict[str, list[Instruction]] = {}
        self.entry = ""
        self.types: dict[str, str] = {}  # instruction name -> result type text (names are unique per module)
        self.sources: dict[str, str] = {}  # instruction name -> project function

    @classmethod
    def parse(cls, text: str) -> _Module:
        module, current = cls(), None
        frames = _frame_functions(text)
        for line in text.splitlines():
            if header := HEADER.match(line):
                current = module.computations.setdefault(header.group(2), [])
                if header.group(1):
                    module.entry = header.group(2)
                for name, type_text in _header_parameters(line):
                    module.types[name] = type_text
            elif current is not None and line.startswith("  ") and " = " in line:
                instruction = _instruction(line)
                if instruction is not None:
                    current.append(instruction)
                    module.types[instruction.name] = instruction.type_text
                    frame = re.search(r"stack_frame_id=(\d+)", instruction.attributes)
                    if frame and int(frame.group(1)) in frames:
                        module.sources[instruction.name] = frames[int(frame.group(1))]
        return module

    def walk(self, computation: str, launches: int, count: KernelCount) -> None:
        for instruction in self.computations.get(computation, []):
            opcode = instruction.opcode
            if opcode == "while":
                trip = self.trip_count(instruction)
                if trip is None:
                    count.loops_without_trip_count += 1
                for body in instruction.called("body"):
                    self.walk(body, launches * (trip or 1), count)
            elif opcode == "conditional":
                self._walk_costliest_branch(instruction, launches, count)
            elif opcode == "call":
                for called in instruction.called("to_apply"):
                    self.walk(called, launches, count)
            elif opcode not in NOT_KERNELS and not opcode.endswith("-done"):
                count.kernels.append(self.kernel(instruction, launches))

    def trip_count(self, loop: Instruction) -> int | None:
        """Iterations of a while loop: XLA's `known_trip_count`, else a condition `i < N` on a counter from 0.

        The GPU compiler writes the count; the TPU compiler does not, and its loops from `lax.scan` test their
        counter (starting at 0, step 1) against a constant.
        """
        known = re.search(r'"known_trip_count":\{"n":"(\d+)"', loop.attributes)
        if known:
            return int(known.group(1))
        for condition in loop.called("condition"):
            instructions = self.computations.get(condition, [])
            constants = {op.name: op.argument for op in instructions if op.opcode == "constant"}
            for op in instructions:
                if op.opcode == "compare" and "direction=LT" in op.attributes and len(op.operands) == 2:
                    bound = constants.get(op.operands[1], "")
                    if bound.isdigit():
                        return int(bound)
        return None

    def _walk_costliest_branch(self, instruction: Instruction, launches: int, count: KernelCount) -> None:
        """A step runs one branch: count the one that moves the most bytes (an upper bound)."""
        branches = instruction.called("branch_computations") + instruction.called("true_computation")
        branches += instruction.called("false_computation")
        best: KernelCount | None = None
        for branch in branches:
            trial = KernelCount()
            self.walk(branch, launches, trial)
            if best is None or trial.bytes > best.bytes:
                best = trial
        if best is not None:
            count.kernels.extend(best.kernels)
            count.loops_without_trip_count += best.loops_without_trip_count

    def kernel(self, instruction: Instruction, launches: int) -> Kernel:
        fused = instruction.called("calls")
        held = [inner for name in fused for inner in self.computations.get(name, [])]
        kind = _kind(instruction, [instruction, *held])
        products = [op for op in [instruction, *held] if op.opcode in ("dot", "convolution", "custom-call")]
        float32 = kind in ("matmul", "convolution") and any(
            _element_types([self.types.get(name, "") for name in op.operands]) == {"f32"} for op in products
        )
        return Kernel(
            name=instruction.name,
            kind=kind,
            launches=launches,
            bytes=self._bytes(instruction, held),
            float32_product=float32,
            source=self.sources.get(instruction.name, ""),
        )

    def _bytes(self, instruction: Instruction, held: list[Instruction]) -> float:
        operand_types = [self.types.get(name, "") for name in instruction.operands]
        output = _hbm_bytes(instruction.type_text, drop_workspace=instruction.opcode == "custom-call")
        if instruction.opcode in SLICING:
            return 2 * output
        if instruction.opcode == "copy-start":  # a prefetch between memory spaces: one read, one on-chip write
            return sum(_hbm_bytes(text) for text in operand_types)
        if instruction.opcode == "dynamic-update-slice" and len(operand_types) > 1:
            return 2 * _hbm_bytes(operand_types[1])
        if not held:
            return output + sum(_hbm_bytes(text) for text in operand_types)
        return self._fusion_bytes(operand_types, output, held)

    def _fusion_bytes(self, operand_types: list[str], output: float, held: list[Instruction]) -> float:
        """A fusion's bytes: parameters only sliced inside count their slices, a buffer updated in place its update."""
        parameters = {int(p.argument): p.name for p in held if p.opcode == "parameter" and p.argument.isdigit()}
        users: dict[str, list[Instruction]] = {}
        for inner in held:
            for operand in inner.operands:
                users.setdefault(operand, []).append(inner)
        updates = [op for op in held if op.opcode == "dynamic-update-slice" and len(op.operands) > 1]
        in_place = {op.operands[0] for op in updates}
        total = 0.0
        for index, text in enumerate(operand_types):
            parameter = parameters.get(index, "")
            uses = users.get(parameter, [])
            if parameter in in_place:
                continue
            sliced = uses and all(use.opcode in SLICING and use.operands[0] == parameter for use in uses)
            total += (
                min(_hbm_bytes(text), sum(_hbm_bytes(use.type_text) for use in uses)) if sliced else _hbm_bytes(text)
            )
        if in_place:
            return total + sum(_hbm_bytes(self.types.get(op.operands[1], "")) for op in updates)
        return total + output


def _instruction(line: str) -> Instruction | None:
    """Parse `  [ROOT ]%name = TYPE opcode(operands), attributes`."""
    left, right = line.split(" = ", 1)
    name = left.strip().removeprefix("ROOT ").strip().lstrip("%")
    type_end = _balanced_end(right, 0) if right.startswith("(") else right.find(" ")
    if type_end < 0:
        return None
    type_text, rest = right[:type_end], right[type_end:].lstrip()
    opcode_end = rest.find("(")
    if opcode_end <= 0:
        return None
    operands_end = _balanced_end(rest, opcode_end)
    argument = rest[opcode_end + 1 : operands_end - 1]
    return Instruction(name, type_text, rest[:opcode_end], NAME.findall(argument), rest[operands_end:], argument)


def _balanced_end(text: str, start: int) -> int:
    """The index just after the bracket closing the one at `start`."""
    depth = 0
    for index in range(start, len(text)):
        depth += {"(": 1, "{": 1, ")": -1, "}": -1}.get(text[index], 0)
        if depth == 0:
            return index + 1
    return len(text)


def _header_parameters(line: str) -> list[tuple[str, str]]:
    """(name, type) of a computation header's parameters."""
    inside = line[line.index("(") + 1 : line.rindex(") -> ")]
    return [(name, text) for name, text in re.findall(r"([\w.\-]+): ((?:\([^)]*\))|[^,()]+)", inside)]


def _hbm_bytes(type_text: str, *, drop_workspace: bool = False) -> float:
    """Bytes of the arrays of a type in device memory (on-chip memory spaces S(1) and up count nothing)."""
    arrays = ARRAY.findall(type_text)
    if drop_workspace and len(arrays) > 1 and arrays[-1][0] in ("s8", "u8"):
        arrays = arrays[:-1]  # a cuBLAS/cuDNN call's scratch workspace
    total = 0.0
    for dtype, dims, layout in arrays:
        if re.search(r"S\([1-9]", layout):
            continue
        total += DTYPE_BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d)
    return total


def _element_types(type_texts: list[str]) -> set[str]:
    return {dtype for text in type_texts for dtype, _, _ in ARRAY.findall(text) if dtype not in ("s8", "u8")}


LIBRARY_KINDS = (
    ("attention", ("fmha", "attention", "flash")),
    ("convolution", ("conv",)),
    ("matmul", ("matmul", "gemm", "cublas")),
)


def _kind(instruction: Instruction, held: list[Instruction]) -> str:
    opcodes = {op.opcode for op in held}
    if "custom-call" in opcodes:
        target = re.search(r'custom_call_target="([^"]*)"', instruction.attributes)
        name = (target.group(1) if target else "").lower()
        library = next((kind for kind, words in LIBRARY_KINDS if any(word in name for word in words)), None)
        if library:
            return library
    if any(op.removesuffix("-start") in COLLECTIVES for op in opcodes):
        return "collective"
    if "convolution" in opcodes:
        return "convolution" if any(_is_convolution(op) for op in held) else "matmul"
    if "dot" in opcodes or '"__triton_gemm"' in instruction.attributes:
        return "matmul"
    return "other"


def _tables(text: str) -> dict[str, dict[int, str]]:
    """The numbered tables after the computations (FileNames, FunctionNames, FileLocations, StackFrames)."""
    tables: dict[str, dict[int, str]] = {}
    current = None
    for line in text.splitlines():
        if line in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
            current = tables.setdefault(line, {})
        elif current is not None and (row := re.match(r"^(\d+) (.*)$", line)):
            current[int(row.group(1))] = row.group(2)
        elif line.strip():
            current = None
    return tables


def _frame_functions(text: str) -> dict[int, str]:
    """Stack frame id -> the innermost project function on its stack ("models/conv_block:ConvBlock.convolve")."""
    tables = _tables(text)
    files = {k: v.strip('"') for k, v in tables.get("FileNames", {}).items()}
    functions = {k: v.strip('"') for k, v in tables.get("FunctionNames", {}).items()}
    locations: dict[int, str] = {}
    for key, row in tables.get("FileLocations", {}).items():
        file_id, function_id = _number(row, "file_name_id"), _number(row, "function_name_id")
        if project := PROJECT_FILE.search(files.get(file_id, "")):
            locations[key] = f"{project.group(1)}:{functions.get(function_id, '?')}"
    # Each frame: (its location, its caller); XLA writes the caller's id + 1 (0: none).
    frames = {key: (_number(row, "file_location_id"), _number(row, "parent_frame_id") - 1) for key, row in
              tables.get("StackFrames", {}).items()}  # fmt: skip
    innermost: dict[int, str] = {}
    for key in frames:
        frame, seen = key, set()
        while frame in frames and frame not in seen and key not in innermost:
            seen.add(frame)
            location, frame = frames[frame]
            if location in locations:
                innermost[key] = locations[location]
    return innermost


def _number(row: str, key: str) -> int:
    match = re.search(rf"{key}=(\d+)", row)
    return int(match.group(1)) if match else 0


def _is_convolution(op: Instruction) -> bool:
    """A convolution with a window; the TPU compiler also writes matrix products as window-less convolutions."""
    if op.opcode != "convolution":
        return False
    window = re.search(r"window=\{size=([\dx]+)", op.attributes)
    return (
        window is not None and "dot_general" not in op.attributes and any(s != "1" for s in window.group(1).split("x"))
    )
