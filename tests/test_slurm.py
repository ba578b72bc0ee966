"""The launcher and launch/slurm_gpu.sbatch on a real one-node SLURM cluster (tests/slurm_cluster.py).

Jobs are submitted with `python -m spidr_jax.launch --cpu`: 2 tasks of 1 CPU device each, joined by JAX's own SLURM
detection under srun (no JAX_* variables). A 2-task job must end with the train state of 1 process over the same
global batch; a job whose time limit comes mid-run must save, requeue itself and finish with the state of the
uninterrupted job; a plain `scancel` must save and not requeue. Every wait is bounded and every job is cancelled
at the end of its test.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from spidr_jax.pretrained import read_pretrained
from tests.processes import cpu_env, gloo_available
from tests.run_outputs import leaves, logged_steps
from tests.slurm_cluster import SlurmCluster
from tests.train_cli import small_batches

pytestmark = pytest.mark.slow  # minutes on 2 CPU cores: left out of the quick tier (-m "not slow")

ROOT = Path(__file__).resolve().parents[1]
TINY = "configs/tiny.py"
STEPS = 80
SIGNAL_LEAD = 120  # seconds (launcher --signal-lead) for the time-limit test
OVERRIDES = small_batches(2)  # 2 rows per device: a global batch of 4 rows over 2 devices
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}
JOB_TIMEOUT = 400  # seconds for one job of 80 steps (start, compilation, steps, saves) on a busy 2-core machine


def job_env(cluster: SlurmCluster, cache: Path, devices: int = 1) -> dict[str, str]:
    """The launcher's environment (sbatch passes it on to the jobs): this cluster, CPU devices, a shared cache."""
    # The log shows each line when it is printed (PYTHONUNBUFFERED).
    # cluster.env comes last: cpu_env drops every SLURM_ variable, SLURM_CONF included.
    return cluster.env(cpu_env(cache, devices, PYTHONUNBUFFERED="1"))


def train_overrides(manifest: Path, workdir: Path, max_steps: int) -> list[str]:
    return [f"--config.data.manifest={manifest}", f"--config.run.workdir={workdir}", *OVERRIDES,
            f"--config.optimizer.max_steps={max_steps}"]  # fmt: skip


def launcher(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spidr_jax.launch", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, check=False)  # fmt: skip


def submit(args: list[str], env: dict[str, str]) -> tuple[str, Path]:
    """Launch one job; its id and log, from the launcher's line `JOBID  CONFIG  LOG`."""
    done = launcher(args, env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout
    job_id, _config, log = lines[0].split()
    assert job_id.isdigit()
    return job_id, Path(log)


def read_log(log: Path) -> str:
    return log.read_text(errors="replace") if log.exists() else "(no log)"


def wait_ended(cluster: SlurmCluster, job_id: str, log: Path, timeout: float = JOB_TIMEOUT) -> str:
    state = cluster.wait_for_state(job_id, ENDED, timeout)
    assert state in ENDED, f"job {job_id} still {state} after {timeout} s:\n{read_log(log)[-3000:]}"
    return state


def assert_same_state(got: Path, expected: Path, rtol: float) -> None:
    _, tree_got = read_pretrained(got)
    _, tree_expected = read_pretrained(expected)
    for a, b in zip(leaves(tree_expected), leaves(tree_got), strict=True):
        np.testing.assert_allclose(b, a, rtol=rtol, atol=rtol * float(np.max(np.abs(a), initial=1.0)))


CPU_JOB = ["--cpu", "-N", "1", "-G", "2", "-c", "1"]


def saved_step(text: str) -> int:
    """The step of the checkpoint a stopped run saved, from its log."""
    saved = re.search(r"saved a checkpoint at step (\d+)", text)
    assert saved, text[-3000:]
    return int(saved.group(1))


def wait_beside(
    cluster: SlurmCluster, job_id: str, log: Path, single_args: list[str], *, env: dict[str, str], single_log: Path
) -> str:
    """Run `single_args` (the one-process reference) while the job runs; the job's final state.

    The job is cancelled at the end, and the reference killed if still running.
    """
    reference = start_single(single_args, env, single_log)
    try:
        state = wait_ended(cluster, job_id, log)
        finish_single(reference, single_log)
    finally:
        cluster.cancel(job_id)
        if reference.poll() is None:
            os.killpg(reference.pid, signal.SIGKILL)
    return state


def start_single(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """A plain process next to the jobs (the reference they are compared with); output to `log`."""
    with log.open("w") as out:
        return subprocess.Popen(args, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def finish_single(process: subprocess.Popen, log: Path, timeout: float = JOB_TIMEOUT) -> None:
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == 0, read_log(log)[-3000:]


@pytest.fixture(scope="module")
def two_task_run(slurm_cluster, manifest, cache, tmp_path_factory) -> tuple[Path, str, Path]:
    """An uninterrupted 2-task job of STEPS steps, and 1 process over the same global batch (run meanwhile).

    (the job's workdir, its log, the single process's workdir)
    """
    if not gloo_available():
        pytest.skip("this jaxlib has no Gloo CPU collectives")
    root = tmp_path_factory.mktemp("two_tasks")
    workdir, single = root / "run", root / "single"
    args = [*CPU_JOB, "-t", "10", "--dump", str(root / "dump"), TINY, *train_overrides(manifest, workdir, STEPS)]
    job_id, log = submit(args, job_env(slurm_cluster, cache))
    # 1 process, 1 device with the budget of 2: the global batch of the job (2 rows on each of its 2 devices).
    single_args = [sys.executable, "-m", "spidr_jax.train", f"--config={TINY}",
                   *train_overrides(manifest, single, STEPS), "--config.data.max_batch_length=64000"]  # fmt: skip
    env = job_env(slurm_cluster, cache)
    state = wait_beside(slurm_cluster, job_id, log, single_args, env=env, single_log=root / "single.log")
    text = read_log(log)
    assert state == "COMPLETED", f"job {job_id} {state}:\n{text[-3000:]}"
    return workdir, text, single


def test_a_two_task_cpu_job_trains_as_one_process(two_task_run):
    workdir, text, single = two_task_run
    assert "(2 devices, 2 processes)" in text  # JAX joined the two tasks from SLURM's variables
    assert "training finished" in text
    assert (workdir / "checkpoints" / str(STEPS)).is_dir()
    folder = next((workdir.parent / "dump").iterdir())
    assert json.loads((folder / "config.json").read_text())["run"]["workdir"] == str(workdir)
    assert (folder / "slurm_gpu.sbatch").read_text() == (ROOT / "launch" / "slurm_gpu.sbatch").read_text()
    # Sums over devices (gradients, codebook statistics) are reduced in another order across processes.
    assert_same_state(workdir, single, rtol=1e-4)


def run_time(cluster: SlurmCluster, job_id: str) -> int:
    """Seconds the job has run (scontrol's RunTime, [D-]HH:MM:SS)."""
    days, _, clock = cluster.job_field(job_id, "RunTime").rpartition("-")
    hours, minutes, seconds = (int(part) for part in clock.split(":"))
    return ((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds


def trainer_pids(workdir: Path) -> list[int]:
    """The job's training processes (not srun's, whose command lines contain theirs)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if args[1:3] == [b"-m", b"spidr_jax.train"] and f"--config.run.workdir={workdir}".encode() in args:
            pids.append(int(cmdline.parent.name))
    return pids


def signalled_while_stopped(pid: int) -> bool:
    """Whether the stopped `pid` got SIGTERM: pending on it, or it runs again (slurmstepd sends SIGCONT with it)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True  # it has run and exited since
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    pending = int(fields["SigPnd"], 16) | int(fields["ShdPnd"], 16)
    return bool(pending & (1 << (signal.SIGTERM - 1))) or not fields["State"].strip().startswith("T")


def wait_for_steps(cluster: SlurmCluster, job_id: str, log: Path, workdir: Path, deadline: float) -> None:
    """Until the job's run has logged 2 steps (the job must not end meanwhile)."""
    while max(logged_steps(workdir), default=0) < 2 and time.monotonic() < deadline:
        assert cluster.job_state(job_id) not in ENDED, read_log(log)[-3000:]
        time.sleep(0.1)


def test_the_time_limit_saves_requeues_and_resumes(two_task_run, slurm_cluster, manifest, cache, tmp_path):
    workdir = tmp_path / "run"
    args = [*CPU_JOB, "-t", "10", "--signal-lead", str(SIGNAL_LEAD), "--dump", str(tmp_path / "dump"), TINY,
            *train_overrides(manifest, workdir, STEPS)]  # fmt: skip
    job_id, log = submit(args, job_env(slurm_cluster, cache))
    try:
        # Once the trainers have taken a few steps, they are paused (SIGSTOP), so that the run is still in the
        # middle when the time limit's signal comes, however fast the steps are. The time limit is brought
        # forward: SLURM checks limits every 30 s and sends the signal at the first check less than
        # SIGNAL_LEAD + 30 s before the end; the end itself stays 1.5-2.5 minutes away. slurmstepd sends SIGCONT
        # with the signal; the test's own SIGCONT afterwards is for safety.
        deadline = time.monotonic() + JOB_TIMEOUT
        wait_for_steps(slurm_cluster, job_id, log, workdir, deadline)
        pids = trainer_pids(workdir)
        assert len(pids) == 2, pids
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            minutes = (run_time(slurm_cluster, job_id) + SIGNAL_LEAD + 30) // 60
            update = slurm_cluster.command("scontrol", "update", f"JobId={job_id}", f"TimeLimit={minutes}")
            assert update.returncode == 0, update.stderr
            signalled = time.monotonic() + 120
            while not all(signalled_while_stopped(pid) for pid in pids) and time.monotonic() < signalled:
                time.sleep(0.5)
            assert all(signalled_while_stopped(pid) for pid in pids), "no SIGTERM from the time limit within 120 s"
        finally:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        while slurm_cluster.job_field(job_id, "Restarts") in {"", "0"} and time.monotonic() < deadline:
            assert slurm_cluster.job_state(job_id) not in ENDED, read_log(log)[-3000:]
            time.sleep(0.5)
        assert slurm_cluster.job_field(job_id, "Restarts") == "1", read_log(log)[-3000:]
        # The second run gets the original limit back: time to finish.
        update = slurm_cluster.command("scontrol", "update", f"JobId={job_id}", "TimeLimit=10")
        assert update.returncode == 0, update.stderr
        state = wait_ended(slurm_cluster, job_id, log)
    finally:
        slurm_cluster.cancel(job_id)
    text = read_log(log)
    assert state == "COMPLETED", text[-3000:]
    assert 0 < saved_step(text) < STEPS
    assert f"job {job_id} (run 1)" in text
    assert "requeueing" in text
    assert f"job {job_id} (run 2)" in text
    assert "resumed" in text
    assert "training finished" in text
    uninterrupted, _, _ = two_task_run
    assert_same_state(workdir, uninterrupted, rtol=1e-6)


def test_scancel_saves_a_checkpoint_and_does_not_requeue(slurm_cluster, manifest, cache, tmp_path):
    if not gloo_available():
        pytest.skip("this jaxlib has no Gloo CPU collectives")
    workdir = tmp_path / "run"
    args = [*CPU_JOB, "-t", "10", "--dump", str(tmp_path / "dump"), TINY, *train_overrides(manifest, workdir, 100_000)]
    job_id, log = submit(args, job_env(slurm_cluster, cache))
    try:
        wait_for_steps(slurm_cluster, job_id, log, workdir, time.monotonic() + JOB_TIMEOUT)
        cancel = slurm_cluster.command("scancel", job_id)  # what a user types
        assert cancel.returncode == 0, cancel.stderr
        state = wait_ended(slurm_cluster, job_id, log, timeout=90)  # KillWait (30 s) bounds the save
    finally:
        slurm_cluster.cancel(job_id)
    text = read_log(log)
    assert state == "CANCELLED", text[-3000:]
    assert (workdir / "checkpoints" / str(saved_step(text))).is_dir()
    assert slurm_cluster.job_field(job_id, "Restarts") == "0"
    assert "requeueing" not in text
    assert "not requeued" in text


def run_script(cluster: SlurmCluster, tmp_path: Path, options: list[str], args: list[str]) -> str:
    """Submit launch/slurm_gpu.sbatch directly with sbatch; wait for it; its log."""
    log = tmp_path / f"script-{len(list(tmp_path.iterdir()))}.out"
    done = cluster.command("sbatch", "--parsable", f"--output={log}", f"--chdir={ROOT}", "-c", "1", *options,
                           str(ROOT / "launch" / "slurm_gpu.sbatch"), *args)  # fmt: skip
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip().split(";")[0]
    try:
        state = wait_ended(cluster, job_id, log, timeout=60)
    finally:
        cluster.cancel(job_id)
    assert state == "FAILED"
    assert cluster.job_field(job_id, "ExitCode") == "2:0"
    return read_log(log)


def test_the_job_script_refuses_bad_requests(slurm_cluster, tmp_path):
    no_config = run_script(slurm_cluster, tmp_path, ["--gpus-per-node=0", "--ntasks-per-node=1"], [])
    assert "usage: sbatch" in no_config
    missing = run_script(slurm_cluster, tmp_path, ["--gpus-per-node=0", "--ntasks-per-node=1"], ["configs/nope.py"])
    assert "error: config file 'configs/nope.py' not found" in missing
    # The cluster's node has 2 (count-only) GPUs: 1 GPU for 2 tasks leaves a process without one.
    mismatch = run_script(slurm_cluster, tmp_path, ["--gpus-per-node=1", "--ntasks-per-node=2"], [TINY])
    assert "error: --ntasks-per-node (2) must equal --gpus-per-node (1)" in mismatch


def test_launcher_refuses_a_bad_config_before_submitting(slurm_cluster, manifest, tmp_path):
    env = slurm_cluster.env()
    before = slurm_cluster.command("squeue", "-h", "-t", "all", "-o", "%i").stdout.split()
    for bad, message in [
        ("--config.optimizer.lrr=1", "error: configs/tiny.py: unknown field optimizer.lrr (did you mean 'lr'?)"),
        ("--config.optimizer.lr=fast", "error: configs/tiny.py: optimizer.lr must be a number, got 'fast'"),
        ("--config.data.manifest=", "error: configs/tiny.py: data.manifest is required"),
    ]:
        args = ["--cpu", "--dump", str(tmp_path / "dump"), TINY, *train_overrides(manifest, tmp_path / "w", 4), bad]
        done = launcher(args, env)
        assert done.returncode == 2
        assert done.stdout == ""
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert done.stderr.startswith(message), done.stderr
    done = launcher(["-N", "two", TINY], env)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: argument -N/--nodes: expected a positive integer, got 'two'"
    assert slurm_cluster.command("squeue", "-h", "-t", "all", "-o", "%i").stdout.split() == before
    assert not (tmp_path / "dump").exists() or not any((tmp_path / "dump").iterdir())


def test_launcher_dry_run_prints_the_sbatch_command(manifest, tmp_path):
    args = ["--dry-run", "-A", "acct", "-N", "2", "-G", "4", "-c", "6", "--mem-per-gpu", "40G", "-t", "90",
            "-C", "h100", "-p", "gpu", "-q", "high", "--signal-lead", "300", "--dump", str(tmp_path / "dump"),
            TINY, "configs/demo.py", *train_overrides(manifest, tmp_path / "w", 4)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    done = launcher(args, env)
    assert done.returncode == 2  # the two configs would share one workdir
    assert "run.workdir" in done.stderr
    assert "also the workdir of configs/tiny.py" in done.stderr
    done = launcher(args[: -len(train_overrides(manifest, tmp_path / "w", 4)) - 1]
                    + train_overrides(manifest, tmp_path / "w", 4), env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    commands = [line for line in done.stdout.splitlines() if " sbatch --parsable " in line]
    assert len(commands) == 1
    for option in ["--parsable", "--account=acct", "--nodes=2", "--gpus-per-node=4", "--ntasks-per-node=4",
                   "--cpus-per-task=6", "--mem-per-gpu=40G", "--time=90", "--constraint=h100", "--partition=gpu",
                   "--qos=high", "--signal=TERM@300", "slurm_gpu.sbatch train configs/tiny.py"]:  # fmt: skip
        assert option in commands[0], (option, commands[0])
    assert "#SBATCH --requeue" in done.stdout  # the script is printed too
    assert not (tmp_path / "dump").exists()  # nothing written, nothing submitted

    cpu = launcher(["--dry-run", "--cpu", "-G", "3", TINY, *train_overrides(manifest, tmp_path / "w", 4)], env)
    assert cpu.returncode == 0, cpu.stderr
    assert "--gpus-per-node=0 --ntasks-per-node=3" in cpu.stdout
    assert "slurm_gpu.sbatch --cpu train configs/tiny.py" in cpu.stdout


def test_an_extraction_job_writes_what_one_process_writes(two_task_run, slurm_cluster, manifest, cache, tmp_path):
    checkpoint, _, _ = two_task_run
    common = ["--checkpoint", str(checkpoint), "--manifest", str(manifest), "--layer", "2", "--quiet"]
    single, shared = tmp_path / "single", tmp_path / "shared"
    env = job_env(slurm_cluster, cache)
    args = ["extract", *CPU_JOB, "-t", "10", "--dump", str(tmp_path / "dump"), *common, "--output", str(shared)]
    job_id, log = submit(args, env)
    single_args = [sys.executable, "-m", "spidr_jax.extract", *common, "--output", str(single)]
    state = wait_beside(slurm_cluster, job_id, log, single_args, env=env, single_log=tmp_path / "single.log")
    text = read_log(log)
    assert state == "COMPLETED", text[-3000:]
    assert "extraction finished" in text
    expected = sorted(path.name for path in single.glob("*.npy"))
    assert len(expected) == 24
    assert sorted(path.name for path in shared.glob("*.npy")) == expected
    for name in expected:
        np.testing.assert_allclose(np.load(shared / name), np.load(single / name), rtol=1e-5, atol=1e-5)


def test_tpu_pod_dry_run_prints_its_commands(tmp_path):
    script = ROOT / "launch" / "tpu_pod.sh"
    args = ["--name", "pod", "--zone", "us-central2-b", "--project", "proj", "--dry-run", "--env", "A=1", TINY,
            "--config.run.workdir=/mnt/runs/tiny", "--config.data.manifest=/mnt/train.csv"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("TPU_")} | {"TMPDIR": str(tmp_path)}
    done = subprocess.run(["bash", str(script), *args], env=env, capture_output=True, text=True, timeout=60,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    commands = [line for line in done.stdout.splitlines() if line.startswith("+ ")]
    assert commands[0].startswith(f"+ git -C {ROOT} archive --format=tar.gz")
    assert commands[1].startswith("+ gcloud compute tpus tpu-vm scp ")
    assert "pod:spidr_jax.tar.gz --zone us-central2-b --project proj --worker=all" in commands[1]
    install, train = commands[2], commands[3]
    assert install.startswith("+ gcloud compute tpus tpu-vm ssh pod --zone us-central2-b --project proj --worker=all")
    assert "pip install --quiet -e" in install
    assert "jax[tpu]" in install
    assert "bash launch/tpu_pod.sh --on-host python3 8482 0 A=1 -- --config=configs/tiny.py" in train
    assert "--config.run.workdir=/mnt/runs/tiny --config.data.manifest=/mnt/train.csv" in train
    assert len(commands) == 4

    stop = subprocess.run(["bash", str(script), "--name", "pod", "--zone", "z", "--dry-run", "--stop"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert stop.returncode == 0, stop.stderr
    assert "kill -TERM" in stop.stdout
    assert "--worker=all" in stop.stdout

    url = subprocess.run(["bash", str(script), "--name", "pod", "--zone", "z", "--dry-run", TINY,
                          "--config.run.workdir=gs://bucket/run"], env=env, capture_output=True, text=True,
                         timeout=60, check=False)  # fmt: skip
    assert url.returncode == 2
    assert "not a URL" in url.stderr
