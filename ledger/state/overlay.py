"""The overlay of a :class:`~ledger.state.application.Batch`: the aggregates its
admissions loaded or created, not yet recorded, and the rollback of a refused one."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar
from uuid import UUID

from eventsourcing.domain import Aggregate

from ledger.state.domain import (
    Actor,
    AISystem,
    EventRecord,
    InsurancePolicy,
    KeyBinding,
    LedgerInfo,
    Rulebook,
    SubjectAggregate,
    project,
)

if TYPE_CHECKING:
    from ledger.state.application import Admitted, LedgerState

__all__ = ["Overlay"]

A = TypeVar("A", bound=Aggregate)


class Overlay:
    """Aggregates loaded or created here live in ``overlay`` (copies: the
    repository hands out deep copies), so a batch that is never committed
    leaves the state untouched. A refused admission is rolled back: every
    aggregate it touched returns to what it was before, whatever the handler
    did before raising.
    """

    def __init__(self, state: LedgerState, position: int, first_index: int | None = None) -> None:
        self.state = state
        #: The LEDGER stream sequence of the batch's first entry.
        self.first_sequence = position + 1
        #: The ledger index of the batch's first entry. Foreign messages in LEDGER
        #: (ledger.bus.sealed) make it differ from the sequence minus one.
        self.first_index = position if first_index is None else first_index
        self.overlay: dict[UUID, Aggregate] = {}
        self.records: dict[UUID, EventRecord] = {}
        self.admitted: list[Admitted] = []
        # Indexes and sequences passed over by :meth:`continue_at`.
        self._index_gap = 0
        self._sequence_gap = 0
        # Aggregates touched by the admission in progress, with how many
        # pending events each had before it (None: not in the overlay before).
        self._touched: dict[UUID, int | None] = {}

    @property
    def next_index(self) -> int:
        return self.first_index + len(self.admitted) + self._index_gap

    @property
    def last_sequence(self) -> int:
        return self.first_sequence - 1 + len(self.admitted) + self._sequence_gap

    def continue_at(self, sequence: int, index: int) -> None:
        """The batch's next entry is at LEDGER ``sequence`` and ledger ``index``, past
        what lies between (a sealed chunk's next run of consecutive indexes: heads
        leaves and foreign messages are not applied). Never backwards."""
        if sequence <= self.last_sequence or index < self.next_index:
            raise ValueError(
                f"sequence {sequence}, index {index} is not after {self.last_sequence}, "
                f"{self.next_index - 1}"
            )
        self._sequence_gap += sequence - self.last_sequence - 1
        self._index_gap += index - self.next_index

    # --- aggregates through the overlay ----------------------------------

    def _get(self, cls: type[A], aggregate_id: UUID) -> A | None:
        agg = self.overlay.get(aggregate_id)
        if agg is not None:
            self._touched.setdefault(aggregate_id, len(agg.pending_events))
        else:
            agg = self.state.get(cls, aggregate_id)
            if agg is None:
                return None
            self._touched.setdefault(aggregate_id, None)
            self.overlay[aggregate_id] = agg
        return self.state.checked(cls, aggregate_id, agg)

    def _add(self, *aggregates: Aggregate) -> None:
        for agg in aggregates:
            self._touched.setdefault(agg.id, None)
            self.overlay[agg.id] = agg

    def _roll_back(self) -> None:
        """Return every aggregate the failed admission touched to its state before it."""
        for agg_id, before in self._touched.items():
            agg = self.overlay.get(agg_id)
            if agg is None:
                continue
            if before is None:
                del self.overlay[agg_id]  # reloaded from the state when needed
            elif len(agg.pending_events) > before:
                kept = list(agg.pending_events[:before])
                base = self.state.get(type(agg), agg_id)  # None if created in this batch
                restored = project(base, kept)
                assert restored is not None
                restored.pending_events.extend(kept)
                self.overlay[agg_id] = restored
        self._touched.clear()

    def actor(self, actor_id: str) -> Actor | None:
        return self._get(Actor, Actor.create_id(actor_id))

    def reads_policy(self, policy_id: str) -> bool:
        """A ``policy/<id>`` the rules read has its rulebook, which only the genesis creates."""
        return self._get(Rulebook, Rulebook.create_id(policy_id)) is not None

    def system(self, system_id: str) -> AISystem | None:
        return self._get(AISystem, AISystem.create_id(system_id))

    def key_binding(self, key_fingerprint: str) -> KeyBinding | None:
        return self._get(KeyBinding, KeyBinding.create_id(key_fingerprint))

    def _subject_aggregate(self, subject: str) -> SubjectAggregate | None:
        kind, _, ident = subject.partition("/")
        cls: type[SubjectAggregate]
        if kind == "actor":
            cls, agg_id = Actor, Actor.create_id(ident)
        elif kind == "system":
            cls, agg_id = AISystem, AISystem.create_id(ident)
        elif kind == "policy":
            cls, agg_id = Rulebook, Rulebook.create_id(ident)
        else:
            cls, agg_id = LedgerInfo, LedgerInfo.create_id()
        return self._get(cls, agg_id)

    def insurance_policy(self, system_id: str, policy_number: str) -> InsurancePolicy | None:
        return self._get(InsurancePolicy, InsurancePolicy.create_id(system_id, policy_number))
