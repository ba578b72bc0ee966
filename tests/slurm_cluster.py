"""A real one-node SLURM cluster on this machine, for the launcher's tests: munged, slurmctld and slurmd.

Everything lives under one temporary directory (config, munge key and socket, state, spool, logs, pid files) and
the daemons listen on ports picked free at start, so the cluster never touches a system SLURM or munge. Commands
reach it through `SLURM_CONF` (see `SlurmCluster.env`). The daemons need root (slurmd runs jobs as their user),
the SLURM and munge binaries, and a resolvable short host name; `start_cluster` raises `ClusterUnavailable`
naming what is missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "scancel", "scontrol", "sinfo")
START_TIMEOUT = 60.0  # seconds for the node to become idle
STOP_TIMEOUT = 15.0  # seconds for a daemon to exit after SIGTERM


class ClusterUnavailable(RuntimeError):  # noqa: N818 (read as "the cluster is unavailable: <reason>")
    """The daemons cannot run here; the message says why."""


@dataclass
class SlurmCluster:
    """A running cluster: its directory, config file, node and the daemons' processes."""

    root: Path
    conf: Path
    node: str
    cpus: int
    processes: list[subprocess.Popen] = field(default_factory=list)

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """`base` (default: this environment) without the variables of any enclosing job, pointed at this cluster."""
        env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith("SLURM_")}
        env["SLURM_CONF"] = str(self.conf)
        return env

    def command(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
        """Run a SLURM client command (sbatch, squeue, scontrol, ...) against this cluster."""
        return subprocess.run(args, env=self.env(), capture_output=True, text=True, timeout=timeout, check=False)

    def job_state(self, job_id: str) -> str:
        """The job's state (PENDING, RUNNING, COMPLETED, CANCELLED, ...), from the controller."""
        out = self.command("scontrol", "-o", "show", "job", job_id).stdout
        for word in out.split():
            if word.startswith("JobState="):
                return word.split("=", 1)[1]
        return "UNKNOWN"

    def job_field(self, job_id: str, name: str) -> str:
        """One `Name=value` field of `scontrol show job`."""
        out = self.command("scontrol", "-o", "show", "job", job_id).stdout
        for word in out.split():
            if word.startswith(f"{name}="):
                return word.split("=", 1)[1]
        return ""

    def wait_for_state(self, job_id: str, states: set[str], timeout: float) -> str:
        """Poll until the job is in one of `states` (or `timeout` seconds pass); the last state seen."""
        deadline = time.monotonic() + timeout
        state = self.job_state(job_id)
        while state not in states and time.monotonic() < deadline:
            time.sleep(0.5)
            state = self.job_state(job_id)
        return state

    def cancel(self, *job_ids: str) -> None:
        """Cancel jobs (cleanup: errors are ignored)."""
        if job_ids:
            self.command("scancel", *job_ids)

    def cancel_all(self, timeout: float = 60.0) -> None:
        """Cancel every job and wait (bounded) until none is left, so that no job step outlives the daemons."""
        self.command("scancel", "--user", str(os.geteuid()))
        deadline = time.monotonic() + timeout
        # squeue lists only the jobs not yet ended (pending, running, completing).
        while self.command("squeue", "-h", "-o", "%i").stdout.split() and time.monotonic() < deadline:
            time.sleep(0.5)

    def stop(self) -> None:
        """Stop the daemons, newest first, by their process ids."""
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self.processes.clear()


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports nobody listens on now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def memory_mb() -> int:
    """Memory this machine can give jobs, in MB (slurmd refuses a node that declares more than it has)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return max(int(line.split()[1]) // 1024 - 512, 256)
    return 1024


def check_prerequisites() -> str:
    """The node's short host name; raises `ClusterUnavailable` when the daemons cannot start here."""
    if os.geteuid() != 0:
        raise ClusterUnavailable("the SLURM test cluster needs root (slurmd starts jobs as their user)")
    missing = [name for name in BINARIES if shutil.which(name) is None]
    if missing:
        raise ClusterUnavailable(f"not installed: {', '.join(missing)} (apt-get install slurm-wlm munge)")
    node = socket.gethostname().split(".")[0]
    try:
        socket.gethostbyname(node)
    except OSError as error:
        raise ClusterUnavailable(f"host name {node!r} does not resolve ({error})") from None
    return node


def write_config(root: Path, node: str, cpus: int, ports: list[int], munge_socket: Path) -> Path:
    """slurm.conf for a one-node cluster whose every file is under `root`."""
    conf = root / "slurm.conf"
    lines = [
        f"ClusterName=spidrtest{ports[0]}",
        f"SlurmctldHost={node}(127.0.0.1)",
        "SlurmUser=root",
        "SlurmdUser=root",
        f"SlurmctldPort={ports[0]}",
        f"SlurmdPort={ports[1]}",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        # cred_expire also delays the start of a requeued job (120 s by default); 5 s is the minimum.
        f"AuthInfo=socket={munge_socket},cred_expire=5",
        f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'run' / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'run' / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
        # No cgroups here: processes are tracked by their parent ids, tasks are not bound to cores.
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "MpiDefault=none",
        "SwitchType=switch/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "SchedulerType=sched/backfill",
        # Schedule every second (default: every 30-60 s), so that a requeued job starts again at once.
        "SchedulerParameters=bf_interval=1,sched_interval=1",
        "ReturnToService=2",
        "JobRequeue=1",
        # Seconds between SIGTERM and SIGKILL when a job is cancelled or reaches its limit: time to save.
        "KillWait=30",
        "MinJobAge=600",  # finished jobs stay visible to scontrol while the tests read their state
        "SlurmctldTimeout=30",
        "SlurmdTimeout=30",
        # Two GPUs that exist only as a count (no device files), for the GPU-side checks of the job script.
        "GresTypes=gpu",
        f"NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb()} Gres=gpu:2 State=UNKNOWN",
        f"PartitionName=test Nodes={node} Default=YES MaxTime=INFINITE State=UP",
    ]
    conf.write_text("\n".join(lines) + "\n")
    # Read from the directory of slurm.conf. Any existing files stand for the devices: no job here uses them.
    gres = [f"NodeName={node} Name=gpu File={device} Count=1" for device in ("/dev/null", "/dev/zero")]
    (root / "gres.conf").write_text("\n".join(gres) + "\n")
    return conf


def start_daemon(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """Start a daemon in the foreground as a child process (so it is stopped by its pid)."""
    with log.open("w") as out:
        return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start_cluster(root: Path) -> SlurmCluster:
    """Write the config and start munged, slurmctld and slurmd under `root`; return once the node is idle.

    Raises `ClusterUnavailable` when the prerequisites are missing, `RuntimeError` when a daemon fails.
    """
    node = check_prerequisites()
    for name in ("munge", "state", "spool", "log", "run"):
        (root / name).mkdir(parents=True, exist_ok=True)
    munge_dir = root / "munge"
    munge_dir.chmod(0o755)  # clients must reach the socket
    key = munge_dir / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    munge_socket = munge_dir / "munge.socket"
    cpus = os.cpu_count() or 1
    conf = write_config(root, node, cpus, free_ports(2), munge_socket)
    cluster = SlurmCluster(root=root, conf=conf, node=node, cpus=cpus)
    env = cluster.env()
    log = root / "log"
    try:
        munged = [
            "munged", "--foreground", "--force", f"--socket={munge_socket}", f"--key-file={key}",
            f"--pid-file={munge_dir / 'munged.pid'}", f"--log-file={log / 'munged.log'}",
            f"--seed-file={munge_dir / 'munged.seed'}",
        ]  # fmt: skip
        cluster.processes.append(start_daemon(munged, log / "munged.out", env))
        _wait_for(munge_socket.exists, 10.0, "munged did not create its socket", log / "munged.log")
        cluster.processes.append(start_daemon(["slurmctld", "-D", "-i"], log / "slurmctld.out", env))
        cluster.processes.append(start_daemon(["slurmd", "-D"], log / "slurmd.out", env))

        def idle() -> bool:
            check_alive(cluster)
            out = cluster.command("sinfo", "-h", "-N", "-o", "%T", timeout=10).stdout.strip()
            return out == "idle"

        _wait_for(idle, START_TIMEOUT, "the node did not become idle", log / "slurmd.log")
    except BaseException:
        cluster.stop()
        raise
    return cluster


def check_alive(cluster: SlurmCluster) -> None:
    """Raise RuntimeError when a daemon has exited."""
    for process in cluster.processes:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode}")


def _wait_for(ready: object, timeout: float, message: str, log: Path) -> None:
    """Poll `ready()` until true; after `timeout` seconds raise RuntimeError with the message and the log's tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ready():  # type: ignore[operator]
                return
        except RuntimeError as error:
            raise RuntimeError(f"{error}\n{tail(log)}") from None
        except subprocess.TimeoutExpired:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{message} within {timeout:.0f} s\n{tail(log)}")


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> object:
    """The running test cluster for the whole session; skipped only where the daemons cannot run."""
    try:
        cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
    except ClusterUnavailable as reason:
        pytest.skip(f"no SLURM test cluster: {reason}")
    try:
        yield cluster
    finally:
        try:
            cluster.cancel_all()
        finally:
            cluster.stop()
