"""TensorBoard event files (tensorboardX) and the running averages logged every `log_interval` steps."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import jax
import numpy as np

from spidr_jax.torch_hidden import torch_hidden


def summary_writer(logdir: str | Path):  # noqa: ANN201 - tensorboardX is imported here, not at module import
    """A tensorboardX writer for `logdir`, flushed every 30 s and after each `scalars`."""
    with torch_hidden():
        from tensorboardX import SummaryWriter  # noqa: PLC0415

    return SummaryWriter(str(logdir), flush_secs=30)


class MetricsWriter:
    """Scalars under `<prefix>/<name>`; a no-op on processes other than 0."""

    def __init__(self, logdir: str | Path, *, enabled: bool) -> None:
        self.writer = summary_writer(logdir) if enabled else None

    def scalars(self, prefix: str, values: Mapping[str, float], step: int) -> None:
        """Write one value per name and flush, so a crash loses nothing already logged."""
        if self.writer is None:
            return
        for name, value in values.items():
            self.writer.add_scalar(f"{prefix}/{name}", float(value), step)
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class MetricAverages:
    """Step metrics kept on device until the next log, then averaged on the host (one transfer per interval)."""

    def __init__(self) -> None:
        self.pending: list[Mapping[str, jax.Array]] = []

    def add(self, metrics: Mapping[str, jax.Array]) -> None:
        """Remember one step's metrics (no host synchronization)."""
        self.pending.append(metrics)

    def pop(self) -> dict[str, float]:
        """Mean of each metric since the last pop (non-finite values propagate, so they are noticed)."""
        if not self.pending:
            return {}
        host = jax.device_get(self.pending)
        self.pending = []
        return {name: float(np.mean([m[name] for m in host])) for name in host[0]}

    def first_non_finite(self, name: str = "loss") -> int | None:
        """The position among the pending steps of the first whose `name` is NaN or infinite (forces a transfer)."""
        finite = np.isfinite(np.asarray(jax.device_get([m[name] for m in self.pending]), dtype=np.float64))
        return None if finite.all() else int(np.argmin(finite))
