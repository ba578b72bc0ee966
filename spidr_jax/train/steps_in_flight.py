"""How far the training loop may run ahead of the device.

JAX dispatches a step and returns at once, so the loop prepares the next batch (decoding is already done by the
pipeline; this is the copy to the devices) while the device still computes the current step: the next batch is
prefetched to the device. Without a bound the loop could queue steps until the next log (hundreds of steps),
each holding its batch in device memory. With `limit` steps in flight, dispatching one more first waits for the
oldest: the devices never idle for lack of a batch, and at most `limit` + 1 batches sit in device memory.
"""

from __future__ import annotations

from collections import deque

import jax


class StepsInFlight:
    """Waits for the oldest dispatched step once more than `limit` are unfinished."""

    def __init__(self, limit: int = 2) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.limit = limit
        self._pending: deque[jax.Array] = deque()

    def dispatched(self, output: jax.Array) -> None:
        """Record one step by one of its outputs; block until the oldest step is done if too many are pending."""
        self._pending.append(output)
        while len(self._pending) > self.limit:
            self._pending.popleft().block_until_ready()

    def __len__(self) -> int:
        return len(self._pending)
