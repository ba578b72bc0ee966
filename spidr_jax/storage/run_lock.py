"""One writer per directory: a lock file naming its holder (host, pid, start time), refreshed while it runs.

Two trainings writing one workdir mix their checkpoints, config and TensorBoard events; two extractions writing one
output directory write every file twice. So the second is refused. The lock (`<workdir>/run.lock` for training,
`<output>/extraction.lock` for extraction) is created exclusively. It is stale, and taken over, when its holder is gone:
on the same host when its process no longer exists (or is another process with the same pid), on another host
(a shared filesystem) when it has not been refreshed for `STALE_AFTER` seconds, and in a SLURM job when it was
left by an earlier run of the same job (a requeued job restarts on another node at once).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from spidr_jax.errors import UserError

REFRESH_EVERY = 30.0  # seconds between two refreshes of the lock's modification time
STALE_AFTER = 180.0  # a lock of another host not refreshed for this long is stale (allows for clock skew)


class LockedError(UserError, RuntimeError):
    """Another run holds the directory."""


def _process_start(pid: int) -> str | None:
    """The start time of a local process (clock ticks since boot), or None when it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        try:
            os.kill(pid, 0)  # no /proc (macOS): existence only
        except ProcessLookupError:
            return None
        except PermissionError:
            return "unknown"
        return "unknown"
    return stat.rsplit(")", 1)[1].split()[19]  # field 22 of proc(5), counted after the command name


def _holder() -> dict:
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "pid": pid,
        "process_start": _process_start(pid),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "slurm_job": os.environ.get("SLURM_JOB_ID"),
    }


class RunLock:
    """Context manager holding `directory/name`; raises LockedError when a live run holds it.

    `what` names the kind of run ("training"), `instead` what a second one should use ("another run.workdir").
    """

    def __init__(self, directory: Path, name: str, *, what: str, instead: str) -> None:
        self.path = directory / name
        self.what, self.instead = what, instead
        self.holder = _holder()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # a stale lock is removed, then the creation is tried again
            if self._create():
                self._thread = threading.Thread(target=self._refresh, name="workdir-lock", daemon=True)
                self._thread.start()
                return self
            current = self._read()
            if current is not None and not self._is_stale(current):
                raise LockedError(self._refusal(current))
            self._remove_stale(current)
        raise LockedError(f"{self.path}: could not take the lock (another run is starting?)")

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()

    def release(self) -> None:
        """Remove the lock if it is still this process's (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._read() == self.holder:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(self.holder, file)
            file.write("\n")
        return True

    def _read(self) -> dict | None:
        """The holder in the lock file; {} for an unreadable one (a holder that died while writing it)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            holder = json.loads(text)
        except json.JSONDecodeError:
            return {}
        return holder if isinstance(holder, dict) else {}

    def _is_stale(self, holder: dict) -> bool:
        if not holder:
            return self._age() > STALE_AFTER
        job = os.environ.get("SLURM_JOB_ID")
        if job is not None and holder.get("slurm_job") == job:
            return True  # an earlier run of this job (requeued), which no longer runs
        if holder.get("host") == self.holder["host"]:
            start = _process_start(int(holder.get("pid", -1)))
            return start is None or start not in {holder.get("process_start"), "unknown"}
        return self._age() > STALE_AFTER

    def _age(self) -> float:
        try:
            return time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return float("inf")

    def _remove_stale(self, holder: dict | None) -> None:
        # Rename first: of two runs removing the same stale lock, only one succeeds, and neither removes a
        # fresh lock that a third just created (the renamed file is checked to be the stale one).
        aside = self.path.with_name(f"{self.path.name}.stale-{os.getpid()}")
        try:
            self.path.rename(aside)
        except FileNotFoundError:
            return
        try:
            moved = json.loads(aside.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            moved = {}
        if holder and moved != holder:
            with contextlib.suppress(OSError):
                aside.rename(self.path)  # not the lock judged stale: put it back
            return
        with contextlib.suppress(FileNotFoundError):
            aside.unlink()

    def _refusal(self, holder: dict) -> str:
        return (
            f"{self.path.parent} is in use by another {self.what} (pid {holder.get('pid')} on {holder.get('host')}, "
            f"started {holder.get('started')}); stop it first or use {self.instead} (if it is gone, remove {self.path})"
        )

    def _refresh(self) -> None:
        while not self._stop.wait(REFRESH_EVERY):
            with contextlib.suppress(OSError):
                os.utime(self.path)
