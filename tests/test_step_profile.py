"""bench.step_profile: the step's time by operation, kind and function, from a profiler trace and the HLO."""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from bench import step_profile
from bench.hlo_index import HloIndex, kind_of
from spidr_jax.models.conv_block import ConvBlock


def metadata(pid: int, process: str, threads: dict[int, str]) -> list[dict]:
    events = [{"ph": "M", "pid": pid, "name": "process_name", "args": {"name": process}}]
    events += [
        {"ph": "M", "pid": pid, "tid": tid, "name": "thread_name", "args": {"name": name}}
        for tid, name in threads.items()
    ]
    return events


def op(pid: int, tid: int, name: str, ts: float, dur: float) -> dict:
    return {"ph": "X", "pid": pid, "tid": tid, "name": name, "ts": ts, "dur": dur}


def test_a_gpu_trace_is_read_from_its_xla_ops_line_with_nested_events_counted_once():
    events = metadata(1, "/device:GPU:0", {10: "XLA Ops", 11: "Stream #7(Compute)"})
    events += metadata(2, "/host:CPU", {20: "python"})
    events += [
        op(1, 10, "fusion.3", 0, 100),  # holds a nested event of 30 us: 70 us of its own
        op(1, 10, "custom-call.1", 10, 30),
        op(1, 10, "custom-call.1", 200, 50),
        op(1, 10, "convolution.2", 300, 20),
        op(1, 11, "sm90_xmma_gemm_bf16", 0, 500),  # the kernel stream is not summed beside the XLA Ops line
        op(2, 20, "PjitFunction(step)", 0, 1000),
    ]
    index = HloIndex(
        kinds={"fusion.3": "fusion", "custom-call.1": "matmul"},  # convolution.2: a kind from its name
        functions={"fusion.3": ("train_step", "gelu"), "custom-call.1": ("train_step", "Linear.__call__")},
        backward={"custom-call.1"},
    )
    summary = step_profile.summarize(events, steps=2, wall_s=0.002, index=index)
    assert summary["timeline"] == ["/device:GPU:0 / XLA Ops"]
    seconds = {o["name"]: o["s_per_step"] for o in summary["operations"]}
    assert seconds == pytest.approx({"fusion.3": 35e-6, "custom-call.1": 40e-6, "convolution.2": 10e-6})
    assert summary["kinds"] == pytest.approx({"matmul": 40e-6, "fusion": 35e-6, "convolution": 10e-6})
    functions = summary["functions"]
    assert functions["train_step"] == pytest.approx({"forward_s": 35e-6, "backward_s": 40e-6})
    assert functions["Linear.__call__"] == pytest.approx({"forward_s": 0.0, "backward_s": 40e-6})
    assert functions["(no source)"] == pytest.approx({"forward_s": 10e-6, "backward_s": 0.0})
    assert summary["busy_s_per_step"] == pytest.approx(85e-6)
    assert summary["step_s"] == pytest.approx(0.001)


def test_kernel_names_get_their_kind_from_the_name():
    assert kind_of("sm90_xmma_fprop_implicit_gemm_bf16") == "convolution"
    assert kind_of("sm90_xmma_gemm_bf16bf16_bf16f32") == "matmul"
    assert kind_of("loop_convert_fusion_12") == "fusion"
    assert kind_of("cudnn_generated_fort_native_sdpa_sm90") == "attention"
    assert kind_of("ncclDevKernel_AllReduce_Sum_f32") == "collective"
    assert kind_of("something else") == "other"


def test_a_compiled_gradient_is_profiled_by_kind_and_by_the_functions_that_traced_it(tmp_path):
    block = ConvBlock(64, (64, 3, 2), "layer_norm", bias=False, dtype=jnp.float32, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(block)
    x = jnp.ones((2, 4001, 64))

    def loss(params, x):
        return jnp.sum(jnp.square(nnx.merge(graphdef, params)(x, None)) @ jnp.ones((64, 64)))

    compiled = jax.jit(jax.grad(loss)).lower(params, x).compile()
    index = HloIndex.parse(compiled.as_text())
    convolutions = [name for name, kind in index.kinds.items() if kind == "convolution"]
    assert convolutions
    assert "matmul" in index.kinds.values()
    assert any("ConvBlock.convolve" in index.functions[name] for name in convolutions)
    assert any(name in index.backward for name in convolutions), "the weight gradient is a convolution too"

    summary = step_profile.profile_steps(lambda: jax.block_until_ready(compiled(params, x)), 2, tmp_path,
                                         compiled.as_text())  # fmt: skip
    assert (tmp_path / "profile.json").exists()
    assert summary["operations"], summary["timeline"]
    assert summary["busy_s_per_step"] > 0
    assert {o["name"] for o in summary["operations"]} <= set(index.kinds), "operations of the trace not in the HLO"
    assert summary["kinds"]["convolution"] > 0
    convolve = summary["functions"]["ConvBlock.convolve"]
    assert convolve["forward_s"] > 0
    assert convolve["backward_s"] > 0
    assert step_profile.describe(summary).startswith("profile of 2 steps")
