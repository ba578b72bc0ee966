"""`python -m spidr_jax.aot`: the training step compiled for TPU slices and GPU nodes that are not attached.

Small configs (configs/tiny.py in bfloat16 with 0.5 s crops); each deviceless compilation takes tens of seconds on
2 CPU cores, so the module compiles each target once (module fixtures) and marks the rarer layouts slow.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from spidr_jax import accelerators
from spidr_jax.aot import check, parse_target
from spidr_jax.aot.compile import step_for_mesh
from spidr_jax.aot.hlo import KernelCount
from spidr_jax.aot.targets import UnknownTargetError
from spidr_jax.config import DinoSRConfig
from spidr_jax.config.cli import parse_config
from spidr_jax.sharding import data_mesh
from spidr_jax.train.workdir import abstract_batches

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--config=configs/tiny.py",
    "--config.optimizer.dtype=bfloat16",
    "--config.data.max_sample_size=8000",
    "--config.data.max_batch_length=32000",  # 4 rows of 0.5 s per device
]
pytestmark = pytest.mark.skipif(
    not all(importlib.util.find_spec(name) for name in ("libtpu", "jax_plugins.xla_cuda13")),
    reason='the aot extra is not installed (pip install -e ".[aot]")',
)


def tiny_config():
    return parse_config([arg.replace("configs/", f"{ROOT}/configs/") for arg in TINY])


def run_aot(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "spidr_jax.aot", "--no-progress", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env, check=False)


def assert_costs(record) -> None:
    assert record.fits, record.message
    assert record.flops > 0
    assert record.bytes_accessed > 0
    assert record.kernels["matmul"] > 0
    assert record.kernels["convolution"] > 0
    assert record.kernels["total"] == sum(
        record.kernels[k] for k in ("matmul", "convolution", "attention", "collective", "other")
    )
    assert 0 < record.memory["total"] <= record.memory["available"]
    assert record.bound["step_seconds"] >= record.flops / record.bound["peak_flops"]
    assert record.bound["step_seconds"] >= record.bytes_accessed / record.bound["bandwidth"]
    assert "not a measurement" in record.sources["bound"]


@pytest.fixture(scope="module")
def tpu_records() -> list:
    return check(tiny_config(), "v5p-8")


@pytest.fixture(scope="module")
def gpu_hlo(tmp_path_factory) -> Path:
    """Where the h100x8 compilation below writes its optimized program."""
    return tmp_path_factory.mktemp("gpu_hlo")


@pytest.fixture(scope="module")
def gpu_records(gpu_hlo: Path) -> list:
    return check(tiny_config(), "h100x8", hlo_dir=gpu_hlo)


# ---- targets and HLO reading (no compilation) ---------------------------------------------------------------


def test_target_names_and_layouts() -> None:
    v5p = parse_target("v5p-128")
    assert (v5p.num_devices, v5p.num_hosts, v5p.topology, v5p.chip_config) == (64, 16, "v5:4x4x4", "megacore")
    assert parse_target("v5litepod-8") == parse_target("v5e-8")
    assert parse_target("v5e-8").num_hosts == 1
    assert parse_target("v6e-16").num_hosts == 4
    assert parse_target("v5p-8", slices=2).num_devices == 8
    h100 = parse_target("h100x16")
    assert (h100.num_devices, h100.num_hosts, h100.topology) == (16, 2, "2x1x8")
    for bad in ("v5p-6", "v5e-2", "h100x4", "x100x8", "tpu-v5"):
        with pytest.raises(UnknownTargetError):
            parse_target(bad)


def test_kernel_count_multiplies_loop_bodies_by_their_trip_count() -> None:
    """XLA's cost analysis counts a scanned body once; the kernel count must not."""
    x = jnp.ones((64, 256), jnp.float32)
    weights = jnp.ones((12, 256, 256), jnp.float32)

    def scanned(x: jax.Array, weights: jax.Array) -> jax.Array:
        return jax.lax.scan(lambda h, w: (jnp.tanh(h @ w), None), x, weights)[0]

    def unrolled(x: jax.Array, weights: jax.Array) -> jax.Array:
        for i in range(12):
            x = jnp.tanh(x @ weights[i])
        return x

    counts = [KernelCount.of(jax.jit(f).lower(x, weights).compile().as_text()) for f in (scanned, unrolled)]
    assert counts[0].loops_without_trip_count == 0
    assert counts[0].launches["matmul"] == counts[1].launches["matmul"] == 12
    # Per layer: the 256 KiB weight slice and the 64 KiB activations in and out, however the loop is written.
    assert counts[0].bytes == pytest.approx(counts[1].bytes, rel=0.5)
    assert counts[0].bytes >= 12 * 256 * 256 * 4


def test_use_cpu_without_accelerator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    monkeypatch.setattr(accelerators, "has_accelerator", lambda: True)
    assert not accelerators.use_cpu_without_accelerator()
    assert "JAX_PLATFORMS" not in os.environ
    monkeypatch.setattr(accelerators, "has_accelerator", lambda: False)
    assert accelerators.use_cpu_without_accelerator()
    assert os.environ["JAX_PLATFORMS"] == "cpu"
    monkeypatch.setenv("JAX_PLATFORMS", "cuda")
    assert not accelerators.use_cpu_without_accelerator()  # an explicit choice is kept
    assert os.environ["JAX_PLATFORMS"] == "cuda"


@pytest.mark.skipif(accelerators.has_accelerator(), reason="this machine has an accelerator for JAX to start")
def test_spidr_jax_starts_jax_quietly_on_a_cpu_only_machine_with_the_compilers_installed() -> None:
    """libtpu and the CUDA plugin installed: importing spidr_jax keeps JAX from trying them (no warnings)."""
    env = {key: value for key, value in os.environ.items() if key != "JAX_PLATFORMS"}
    code = "import spidr_jax, jax; print(jax.devices()[0].platform)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "cpu"
    assert result.stderr == ""


def test_bad_target_is_one_line_and_exit_2() -> None:
    result = run_aot("--config=configs/tiny.py", "--target=v5q-8")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "v5q-8" in result.stderr
    listing = run_aot("--list-targets")
    assert listing.returncode == 0
    assert "v5p-128" in listing.stdout
    assert "h100x8" in listing.stdout


# ---- compiled for targets ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_single_host_tpu_slice(tpu_records: list) -> None:
    (record,) = tpu_records  # one shape (no manifest), one phase (tiny's freeze_step is beyond max_steps)
    assert (record.target, record.devices, record.hosts, record.platform) == ("v5p-8", 4, 1, "tpu")
    assert record.shape["batch_per_device"] == 4
    assert record.shape["global_batch"] == 16
    assert_costs(record)


@pytest.mark.slow
def test_one_gpu_node(gpu_records: list, gpu_hlo: Path) -> None:
    (record,) = gpu_records
    assert (record.target, record.devices, record.hosts, record.platform) == ("h100x8", 8, 1, "gpu")
    assert_costs(record)
    assert record.kernels["collective"] > 0  # the all-reduces of the gradients and codebook statistics
    # Every device convolves its own rows: no batch gathered onto every GPU (the positional convolution's was).
    (program,) = gpu_hlo.glob("h100x8_*_training.hlo.txt")
    assert "all-gather" not in program.read_text()


@pytest.mark.slow
def test_flops_agree_with_the_cpu_compiled_step(tpu_records: list, gpu_records: list) -> None:
    """The FLOPs of a record are those XLA counts for the same step compiled on a CPU for one device's rows."""
    cfg = tiny_config()
    mesh = data_mesh(jax.devices("cpu")[:1])
    state, step_fn = step_for_mesh(cfg, mesh, "cpu")  # layers unrolled on CPUs: every layer counted
    shape = tpu_records[0].shape
    (batch,) = abstract_batches(
        cfg, [(shape["batch_per_device"], shape["samples"])], {shape["samples"]: shape["frames"]}, mesh
    )
    cpu_flops = step_fn.lower(state, batch, extractor_frozen=False).compile().cost_analysis()["flops"]
    for record in (*tpu_records, *gpu_records):
        assert record.flops == pytest.approx(cpu_flops, rel=0.05)


@pytest.mark.slow
def test_over_budget_on_a_tpu_is_the_compilers_refusal_in_one_line() -> None:
    result = run_aot(*TINY[:-1], "--config.data.max_batch_length=640000000", "--target=v5e-8")
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "v5e-8" in errors[0]
    assert "80000 x 8000" in errors[0]
    assert "15.75 GiB available" in errors[0]
    assert "data.max_batch_length=" in errors[0]
    assert "run.remat" in errors[0]


@pytest.mark.slow
def test_over_budget_on_a_gpu_is_the_memory_comparison_in_one_line() -> None:
    env = dict(os.environ, XLA_PYTHON_CLIENT_MEM_FRACTION="0.00002")  # 1.7 MB of an 80 GB H100: nothing fits
    result = run_aot(*TINY, "--target=h100x8", env=env)
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "h100x8" in errors[0]
    assert "4 x 8000" in errors[0]
    assert "GiB available" in errors[0]


@pytest.mark.slow
def test_multi_host_tpu_slice() -> None:
    (record,) = check(tiny_config(), "v5e-16")
    assert (record.devices, record.hosts) == (16, 4)
    assert_costs(record)


@pytest.mark.slow
def test_multi_slice_tpu_run() -> None:
    (record,) = check(tiny_config(), "v5p-8", slices=2)
    assert (record.devices, record.hosts, record.slices) == (8, 2, 2)
    assert record.shape["global_batch"] == 32
    assert_costs(record)


@pytest.mark.slow
def test_two_gpu_nodes() -> None:
    (record,) = check(tiny_config(), "h100x16")
    assert (record.devices, record.hosts) == (16, 2)
    assert_costs(record)


@pytest.mark.slow
def test_dinosr_compiles() -> None:
    cfg = tiny_config()
    spidr_only = {"ema_timescale", "ema_threshold", "encoder_layer_drop"}
    fields = {f.name: getattr(cfg.model, f.name) for f in dataclasses.fields(DinoSRConfig) if f.name not in spidr_only}
    dinosr = dataclasses.replace(
        cfg, run=dataclasses.replace(cfg.run, model_type="dinosr"), model=DinoSRConfig(**fields)
    )
    (record,) = check(dinosr, "v5e-8")
    assert_costs(record)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("nvidia.cudnn") is None, reason="nvidia-cudnn-cu13 is not installed")
def test_cudnn_attention_compiles_to_cudnns_fused_kernel() -> None:
    """run.attention=cudnn on a GPU node: every attention (tiny has no attention dropout) is cuDNN's fused kernel."""
    cfg = tiny_config()
    cudnn = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, attention="cudnn"))
    (record,) = check(cudnn, "h100x8")
    assert_costs(record)
    layers = cfg.model.encoder_num_layers
    assert record.kernels["attention"] == 3 * layers  # student and teacher forward, student backward
