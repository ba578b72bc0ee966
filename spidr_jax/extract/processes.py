"""Extraction over several processes (srun, or JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/JAX_PROCESS_ID).

Every process reads the whole manifest and takes its share: rows are dealt longest first to the process with the
least audio so far, which depends only on the manifest and the process count, so every process computes the
same split without talking to the others. Each runs on its own devices; they meet only at a few barriers (the
output directory prepared by process 0, the end of all shares before process 0 merges the units shards).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

import jax
import numpy as np

from spidr_jax.data.manifest import ManifestRow
from spidr_jax.runtime import initialize_distributed


@dataclass(frozen=True)
class Processes:
    """The place of this process among the processes of the launch."""

    index: int = 0
    count: int = 1

    @property
    def is_first(self) -> bool:
        """Process 0 prepares the output directory, prints the shared lines and merges the units."""
        return self.index == 0

    def prefix(self) -> str:
        """`process 1/4: ` before this process's own lines when there are several, else nothing."""
        return f"process {self.index}/{self.count}: " if self.count > 1 else ""

    def barrier(self, name: str) -> None:
        """Wait until every process got here (a no-op for one process)."""
        if self.count > 1:
            from jax.experimental import multihost_utils  # noqa: PLC0415 (only multi-process runs need it)

            multihost_utils.sync_global_devices(name)

    def gather(self, *values: int) -> np.ndarray:
        """Every process's `values`, (processes, values) int64 (every process must call this at the same point)."""
        if self.count == 1:
            return np.array([values], np.int64)
        from jax.experimental import multihost_utils  # noqa: PLC0415 (only multi-process runs need it)

        gathered = multihost_utils.process_allgather(np.array(values, np.int64))
        return np.asarray(gathered).reshape(self.count, len(values))

    def all_ok(self, ok: bool) -> list[bool]:
        """Each process's `ok`, in process order."""
        return [bool(v) for v in self.gather(int(ok))[:, 0]]

    def totals(self, *counts: int) -> list[int]:
        """Each of `counts` summed over the processes."""
        return [int(v) for v in self.gather(*counts).sum(axis=0)]


def join_processes() -> Processes:
    """Join the other processes of this launch (SLURM, JAX variables, TPU pod), if there are others."""
    initialize_distributed()
    return Processes(jax.process_index(), jax.process_count())


def split_rows(rows: Sequence[ManifestRow], count: int) -> list[list[int]]:
    """Row indices of each of `count` processes, balanced by audio length; deterministic, in manifest order."""
    shares: list[list[int]] = [[] for _ in range(count)]
    loads = [(0, process) for process in range(count)]  # (samples so far, process): ties go to the lower index
    for index in sorted(range(len(rows)), key=lambda i: (-rows[i].num_samples, i)):
        samples, process = heapq.heappop(loads)
        shares[process].append(index)
        heapq.heappush(loads, (samples + rows[index].num_samples, process))
    return [sorted(share) for share in shares]
