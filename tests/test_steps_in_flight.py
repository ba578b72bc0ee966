"""The training loop's bound on dispatched, unfinished steps."""

from __future__ import annotations

import pytest

from spidr_jax.train.steps_in_flight import StepsInFlight


class FakeOutput:
    """Stands for a step's output array; records when the loop waits for it."""

    def __init__(self, waited: list[int], index: int) -> None:
        self.waited, self.index = waited, index

    def block_until_ready(self) -> FakeOutput:
        self.waited.append(self.index)
        return self


def test_the_oldest_step_is_waited_for_once_more_than_the_limit_are_pending():
    waited: list[int] = []
    in_flight = StepsInFlight(limit=2)
    for index in range(5):
        in_flight.dispatched(FakeOutput(waited, index))
        assert len(in_flight) == min(index + 1, 2)
    assert waited == [0, 1, 2]  # steps 3 and 4 may still run while the next batch is prepared


def test_a_limit_below_one_is_refused():
    with pytest.raises(ValueError, match="limit must be >= 1"):
        StepsInFlight(limit=0)
