"""Admitting the next batch before the previous one is recorded.

The notary appends batch k to LEDGER and, while nats-server makes it durable,
already admits batch k+1: :func:`begin_after` gives a :class:`Batch` that sees
the state as it will be once batch k is recorded (k's aggregates and event
records over the recorded state), without touching either. The state thread
then records k, then k+1, in that order; if k never reaches LEDGER, k+1 is
dropped unrecorded and admitted again on the state LEDGER really has.

Nothing here decides anything: the admission is :class:`Batch`'s, unchanged;
only where it reads aggregates from is layered.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TypeVar, cast
from uuid import UUID

from eventsourcing.domain import Aggregate

from ledger.formats.trust import TrustPolicy
from ledger.state.application import Batch, LedgerState
from ledger.state.domain import EventRecord

__all__ = ["StateAfter", "begin_after"]

A = TypeVar("A", bound=Aggregate)


class StateAfter:
    """The state as it will be once ``batch`` is recorded: what a :class:`Batch`
    reads (``get``, ``checked``, ``recorded``, ``trust``), layered."""

    def __init__(self, batch: Batch) -> None:
        self.batch = batch
        self.base = cast("LedgerState | StateAfter", batch.state)

    @property
    def trust(self) -> TrustPolicy | None:
        return self.base.trust

    @staticmethod
    def checked(cls: type[A], aggregate_id: UUID, agg: Aggregate) -> A:
        return LedgerState.checked(cls, aggregate_id, agg)

    def get(self, cls: type[A], aggregate_id: UUID) -> A | None:
        agg: Aggregate | None = self.batch.overlay.get(aggregate_id)
        if agg is None:
            return self.base.get(cls, aggregate_id)
        # A copy without the pending events: those are the previous batch's to
        # record; the new batch's events continue from its versions.
        mine = copy.deepcopy(agg)
        mine.collect_events()
        return self.checked(cls, aggregate_id, mine)

    def recorded(self, aggregate_ids: Sequence[UUID]) -> set[UUID]:
        mine = {i for i in aggregate_ids if i in self.batch.records}
        rest = [i for i in aggregate_ids if i not in mine]
        return mine | (self.base.recorded(rest) if rest else set())

    def record(self, record_id: UUID) -> EventRecord | None:
        record = self.batch.records.get(record_id)
        return record if record is not None else self.base.record(record_id)

    def event_record(self, event_id: str) -> EventRecord | None:
        return self.record(EventRecord.create_id(event_id))


def begin_after(batch: Batch) -> Batch:
    """A batch whose first entry follows ``batch``'s last, admitted on the state as
    it will be once ``batch`` is recorded. Record ``batch`` first."""
    after = StateAfter(batch)
    return Batch(cast(LedgerState, after), batch.last_sequence, batch.next_index)
