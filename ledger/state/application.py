"""The ledger's domain state: an eventsourcing projection of the LEDGER stream.

:class:`LedgerState` is an ``EventSourcedProjection``: aggregates change only
when ledger entries are integrated, and they are recorded together with
``Tracking("LEDGER", <stream sequence>)`` in one transaction, so every entry is
applied exactly once. The notary uses it to decide what to accept (a
:class:`Batch` admits submissions one by one against the state plus the
batch's own earlier admissions) and the projector uses it to replay LEDGER
(:meth:`LedgerState.replay`), through the very same handlers.

Persistence is chosen by the environment, as eventsourcing does it:
``PERSISTENCE_MODULE=eventsourcing.sqlite`` with ``SQLITE_DBNAME``,
``eventsourcing.postgres`` with the ``POSTGRES_*`` variables, or in-memory
(``eventsourcing.popo``, the default here).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import functools
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, TypeVar, cast
from uuid import UUID

import msgspec
from eventsourcing.application import AggregateNotFoundError, Cache, LRUCache, ProcessingEvent
from eventsourcing.domain import Aggregate, DomainEventProtocol, Snapshot
from eventsourcing.persistence import IntegrityError, JSONTranscoder, Mapper, Tracking, Transcoder
from eventsourcing.projection import EventSourcedProjection

from ledger.formats.dsse import EnvelopeError, ParsedEnvelope, parse_envelope
from ledger.formats.entry import Entry, MalformedEntryError
from ledger.formats.errors import CHECK_FAILED, LedgerError
from ledger.formats.keys import decode_public_key, fingerprint
from ledger.formats.trust import TrustPolicy
from ledger.law import events as ev
from ledger.law import rejections as errors
from ledger.law.admission import Request, judge, judge_root_quorum
from ledger.state.domain import (
    RECORD_TOPIC,
    Actor,
    AISystem,
    EventRecord,
    LedgerInfo,
    Provenance,
    ProvenanceAsDict,
    project,
)
from ledger.state.recording import Recording
from ledger.state.stored import events_in_order, latest_event, recorded_ids, stored_events
from ledger.state.transcoding import FastJSONTranscoder, StateMapper

__all__ = [
    "AlreadyIntegrated",
    "Batch",
    "LedgerCorrupt",
    "LedgerState",
    "SignatureCheck",
    "verify_now",
]

TRACKING_NAME = "LEDGER"
#: Versions between two snapshots of an AI system's aggregate.
SNAPSHOT_EVERY = 8

#: Decides whether an envelope's signature verifies with a public key. The
#: notary passes one backed by signatures already verified in parallel.
SignatureCheck = Callable[[ParsedEnvelope, bytes], bool]

A = TypeVar("A", bound=Aggregate)


def verify_now(env: ParsedEnvelope, public_key: bytes) -> bool:
    return env.verify(public_key)


@functools.lru_cache(maxsize=4096)
def _enrolled_key(encoded: str) -> tuple[bytes, str]:
    """An enrolled key's raw bytes and fingerprint, decoded once (every entry an
    actor signs tries its keys)."""
    public = decode_public_key(encoded)
    return public, fingerprint(public)


_fingerprint = functools.lru_cache(maxsize=4096)(fingerprint)


def trust_hinted_key(env: ParsedEnvelope, public_key: bytes) -> bool:
    """For replays: LEDGER entries were verified when integrated; only a wrong
    key-id hint needs a real verification to tell which key signed."""
    if _fingerprint(public_key) == env.keyid_fingerprint:
        return True
    return env.verify(public_key)


#: How every stored event's state begins (eventsourcing's ``timestamp`` first, as
#: the JSON transcoders write it).
_TIMESTAMP = b'{"timestamp":{"_type_":"datetime_iso","_data_":"'


def _without_timestamp(state: bytes) -> bytes:
    """A stored event's state without its wall-clock ``timestamp``: the bytes after
    it where the state begins with it (always, as this state writes them), else the
    state's JSON without it, keys sorted."""
    if state.startswith(_TIMESTAMP):
        end = state.find(b'"}', len(_TIMESTAMP))
        if end > 0:
            return state[end + 2 :]
    doc = json.loads(state)
    doc.pop("timestamp", None)
    return b"?" + json.dumps(doc, sort_keys=True).encode()


class AlreadyIntegrated(Exception):
    """The exact envelope is already in the ledger: answer with its receipt."""

    def __init__(self, record: EventRecord) -> None:
        super().__init__(f"event {record.event_id} is entry {record.index}")
        self.record = record


class LedgerCorrupt(LedgerError, RuntimeError):
    """A LEDGER entry that breaks the ledger's own rules (gap, bad prev, bad bytes)."""

    code = "ledger_corrupt"
    exit_status = CHECK_FAILED


@dataclass(frozen=True)
class _Stored:
    """A LEDGER message parsed: the entry, its envelope and its event."""

    sequence: int
    entry: Entry
    env: ParsedEnvelope
    event: ev.AnyEvent


#: The payload decoder of sealed replays (:func:`_parse_stored`).
_SEALED_EVENTS = msgspec.json.Decoder(ev.AnyEvent)


def _parse_stored(sequence: int, data: bytes, *, sealed: bool = False) -> _Stored:
    """A LEDGER message parsed. ``sealed``: an entry of a batch whose seal and root were
    checked (or that this state recorded itself), so its payload is one the notary
    decoded with :func:`ledger.law.events.decode_event` when it admitted it: it is
    decoded by msgspec alone, which gives that very event for every payload that
    passes decode_event's first, stricter pass (no duplicate keys, floats or times
    not in ``Z``); that pass is not repeated, as the signature is not
    (:func:`trust_hinted_key`). Every rule the state applies is still applied."""
    try:
        entry = Entry.parse(data)
        env = parse_envelope(entry.envelope)
        if sealed:
            try:
                event: ev.AnyEvent = _SEALED_EVENTS.decode(env.payload)
            except (msgspec.ValidationError, msgspec.DecodeError) as e:
                raise ev.SchemaError(str(e)) from None
        else:
            event = ev.decode_event(env.payload)
    except (MalformedEntryError, EnvelopeError, ev.SchemaError) as e:
        raise LedgerCorrupt(f"LEDGER #{sequence}: {e}") from None
    return _Stored(sequence, entry, env, event)


@dataclass(frozen=True)
class Admitted:
    """A submission that passed every check, with the entry that will carry it."""

    entry: Entry
    event: ev.AnyEvent
    record: EventRecord


class LedgerState(EventSourcedProjection[UUID]):
    """Actors, keys, systems, incidents, audits, insurance and rulebooks, from LEDGER."""

    name = "LedgerState"
    #: Systems are the subjects with long histories (and there may be 10^5 of
    #: them, more than the cache holds): one loaded from the store is its latest
    #: snapshot and the few events after it, not its whole history.
    snapshotting_intervals: ClassVar[dict[Any, int]] = {AISystem: SNAPSHOT_EVERY}
    env: ClassVar[dict[str, str]] = {
        "AGGREGATE_CACHE_MAXSIZE": "20000",
        # One writer per state store, so recorded aggregates go straight into
        # the cache instead of being fast-forwarded from stored events.
        "AGGREGATE_CACHE_FASTFORWARD": "n",
    }

    def __init__(
        self, env: Mapping[str, str] | None = None, *, trust: TrustPolicy | None = None
    ) -> None:
        super().__init__(env)
        #: The settings it was opened with (for a worker process opening the same store).
        self.store_env: dict[str, str] = dict(env or {})
        self.trust = trust
        #: Entries applied (the next index), once known: LEDGER may hold foreign
        #: messages, so it is not the position minus anything. Set by whoever
        #: reads LEDGER through its seals (ledger.bus.sealed), kept by commits.
        self.size: int | None = None
        #: After :meth:`assume_fresh`: every aggregate this object has recorded
        #: (or tried to); the store holds no other.
        self._fresh: set[UUID] | None = None

    def assume_fresh(self) -> None:
        """Declare this object the only writer of a store that held nothing when it was
        opened (a rebuild, right after ``drop_stores``, under the read model's writer
        lock): an aggregate it has not recorded itself is then known absent without a
        query. Raises :class:`LedgerCorrupt` if the store holds anything."""
        if self.position() or self.recorder.max_notification_id():
            raise LedgerCorrupt("the state store is not empty: it cannot be assumed fresh")
        self._fresh = set()

    def forget(self) -> None:
        """Drop what this object holds in memory about the store (its cached aggregates
        and size), after another process recorded entries in it."""
        repository = self.repository
        cache = repository.cache
        # a new one: LRUCache.clear() resets its order but keeps what it holds
        if isinstance(cache, LRUCache):
            repository.cache = LRUCache(cache.maxsize)
        elif cache is not None:
            repository.cache = Cache()
        self.size = None

    @property
    def shareable(self) -> bool:
        """Whether another process can open this store (a file or a database, not memory)."""
        module = self.store_env.get("PERSISTENCE_MODULE", "")
        if module in ("ledger.state.sqlite", "eventsourcing.sqlite"):
            name = self.store_env.get("SQLITE_DBNAME", "")
            return bool(name) and ":memory:" not in name and "mode=memory" not in name
        return module == "eventsourcing.postgres"

    def construct_mapper(self) -> Mapper[UUID]:
        return self.factory.mapper(transcoder=self.construct_transcoder(), mapper_class=StateMapper)

    def construct_transcoder(self) -> Transcoder:
        # JSONTranscoder's format (so its bytes), written by msgspec.
        transcoder = FastJSONTranscoder()
        self.register_transcodings(transcoder)
        return transcoder

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        transcoder.register(ProvenanceAsDict())

    # --- reading -------------------------------------------------------

    def position(self) -> int:
        """The LEDGER stream sequence of the last applied entry (0 when empty)."""
        return self.recorder.max_tracking_id(TRACKING_NAME) or 0

    def get(self, cls: type[A], aggregate_id: UUID) -> A | None:
        """The aggregate (a copy: the batch's changes stay out of the cache until
        recorded), or None.

        What ``Repository.get`` does with this application's settings (a cache, no
        fast-forwarding, copies from the cache, snapshots), with cheaper misses
        (:meth:`_load`)."""
        repository = self.repository
        cache = repository.cache
        if cache is None or repository.fastforward or not repository.deepcopy_from_cache:
            try:
                agg: Aggregate = repository.get(aggregate_id, projector_func=project)
            except AggregateNotFoundError:
                return None
            return self.checked(cls, aggregate_id, agg)
        try:
            agg = cast(Aggregate, cache.get(aggregate_id))
        except KeyError:
            loaded = self._load(aggregate_id)
            if loaded is None:
                return None
            cache.put(aggregate_id, loaded)
            agg = loaded
        return self.checked(cls, aggregate_id, copy.deepcopy(agg))

    def _load(self, aggregate_id: UUID) -> Aggregate | None:
        """An aggregate from the store: its latest snapshot, if any, and the events
        after it, found with one query each (no transaction; most misses are new
        subjects, keys and records, which one query finds absent; a fresh store's,
        see :meth:`assume_fresh`, none), projected without eventsourcing's
        per-event Protocol check."""
        if self._fresh is not None and aggregate_id not in self._fresh:
            return None
        base: Aggregate | None = None
        if self.snapshots is not None:
            snapshot = latest_event(self.snapshots.recorder, aggregate_id)
            if snapshot is not None:
                base = self.mapper.to_domain_event(snapshot).mutate(None)  # type: ignore[attr-defined]
        stored = stored_events(
            self.recorder, aggregate_id, gt=None if base is None else base.version
        )
        if not stored:
            return base
        return cast("Aggregate | None", project(base, map(self.mapper.to_domain_event, stored)))

    @staticmethod
    def checked(cls: type[A], aggregate_id: UUID, agg: Aggregate) -> A:
        """``agg``, if it is a ``cls``: an aggregate of another kind under that id is corrupt."""
        if not isinstance(agg, cls):
            raise LedgerCorrupt(
                f"aggregate {aggregate_id} is a {type(agg).__name__}, not {cls.__name__}"
            )
        return agg

    def recorded(self, aggregate_ids: Sequence[UUID]) -> set[UUID]:
        """Which of ``aggregate_ids`` have been recorded: one query for all of them,
        much cheaper than a ``get`` that finds nothing (see :mod:`ledger.state.stored`)."""
        return recorded_ids(self.recorder, aggregate_ids)

    def actor(self, actor_id: str) -> Actor | None:
        return self.get(Actor, Actor.create_id(actor_id))

    def system(self, system_id: str) -> AISystem | None:
        return self.get(AISystem, AISystem.create_id(system_id))

    def event_record(self, event_id: str) -> EventRecord | None:
        return self.record(EventRecord.create_id(event_id))

    def record(self, record_id: UUID) -> EventRecord | None:
        """The event record under ``record_id`` (its one stored row), or None."""
        stored = stored_events(self.recorder, record_id)
        if not stored:
            return None
        record: object = self.mapper.to_domain_event(stored[0])
        if type(record) is not EventRecord:
            raise LedgerCorrupt(
                f"aggregate {record_id} is a {type(record).__name__}, not an EventRecord"
            )
        return record

    def ledger_info(self) -> LedgerInfo | None:
        return self.get(LedgerInfo, LedgerInfo.create_id())

    # --- writing -------------------------------------------------------

    def begin(self, first_sequence: int | None = None) -> Batch:
        """Start admitting submissions after the last applied entry; the batch's
        first entry lands at stream sequence ``first_sequence`` (default: right
        after the position)."""
        position = self.position()
        batch = Batch(self, position, self.size)
        if first_sequence is not None:
            batch.first_sequence = first_sequence
        return batch

    def commit(self, batch: Batch) -> None:
        """Record the batch's aggregate events with its tracking, in one transaction."""
        if not batch.admitted:
            return
        # The "domain event" processed here is a whole batch of ledger entries:
        # policy() collects its aggregates' events under one tracking record.
        self.process_event(
            cast("DomainEventProtocol[UUID]", batch), Tracking(TRACKING_NAME, batch.last_sequence)
        )
        self.size = batch.next_index

    def policy(self, domain_event: Any, processing_event: ProcessingEvent[UUID]) -> None:
        batch = cast(Batch, domain_event)
        # Collected by hand: ProcessingEvent.collect_events() checks each object
        # against runtime Protocols, which dominates the cost of a large batch.
        intervals = self.snapshotting_intervals or {}
        due: list[Aggregate] = []
        self._snapshots_due = due
        if self._fresh is not None:
            # before the transaction: an id here that did not get recorded only costs a query
            self._fresh.update(batch.overlay)
        for agg in batch.overlay.values():
            events = agg.collect_events()
            processing_event.events.extend(events)
            processing_event.aggregates[agg.id] = agg
            interval = intervals.get(type(agg))
            if interval and agg.version // interval > (agg.version - len(events)) // interval:
                due.append(agg)
        # Event records are read only to answer duplicates: recorded (one row
        # each, see StateMapper), but kept out of the aggregate cache.
        processing_event.events.extend(
            cast("list[DomainEventProtocol[UUID]]", list(batch.records.values()))
        )

    def _take_snapshots(self, processing_event: ProcessingEvent[UUID]) -> None:
        """Snapshots of the aggregates whose versions passed a multiple of their
        interval in the batch just recorded, taken from the aggregates in memory
        (eventsourcing's ``take_snapshot`` loads each from the store again). In a
        transaction of their own: a snapshot lost in a crash only makes a later
        load read more events."""
        due, self._snapshots_due = self._snapshots_due, []
        if self.snapshots is None or not due:
            return
        # IntegrityError: another process on this store took them first (the same state)
        with contextlib.suppress(IntegrityError):
            self.snapshots.put([Snapshot.take(agg) for agg in due])

    def replay(
        self,
        messages: Iterable[tuple[int, bytes]],
        *,
        commit_every: int = 500,
        on_entry: Callable[[Entry], None] | None = None,
        first_index: int | None = None,
        signatures: SignatureCheck | None = None,
    ) -> int:
        """Apply stored LEDGER entries ``(stream sequence, bytes)`` in order.

        Entries already applied (sequence <= :meth:`position`) are skipped, so
        a redelivery changes nothing. Returns the number applied. With
        ``first_index`` (a sealed batch: consecutive sequences, the first
        holding that index) the index is not derived from the sequence.
        ``signatures``: how envelopes are checked (default
        :func:`trust_hinted_key`, for sealed entries, whose payloads are then decoded
        without decode_event's stricter first pass, see :func:`_parse_stored`; a
        monitor, which trusts no seal, verifies them and decodes strictly).
        """
        check = signatures or trust_hinted_key
        position = self.position()
        if first_index is not None:
            messages = list(messages)
            self.size = first_index + sum(1 for seq, _ in messages if seq <= position)
        applied = 0
        run: list[tuple[int, bytes]] = []
        last = position
        for seq, data in messages:
            if seq <= last:
                continue
            if run and (seq != last + 1 or len(run) >= commit_every):
                # A full batch, or a gap (foreign messages): the next batch
                # starts at this sequence.
                applied += self._replay_run(run, check, on_entry)
                run = []
            run.append((seq, data))
            last = seq
        if run:
            applied += self._replay_run(run, check, on_entry)
        return applied

    def replay_runs(self, runs: Sequence[tuple[int, Sequence[tuple[int, bytes]]]]) -> int:
        """Sealed runs of consecutive indexes, ``(first index, [(stream sequence,
        bytes)])``, in order (a projector's chunk: a heads leaf or a foreign message
        between two sealed batches starts a new run), applied as one batch and
        recorded in one transaction; entries already applied are skipped. Returns
        the number applied. As :meth:`replay` of each run (``first_index``), but a
        transaction, a duplicate query and a snapshot write per chunk rather than per
        run: where batches are small, heads leaves make runs of a few entries."""
        position = self.position()
        todo: list[tuple[int, int, bytes]] = []  # (index, sequence, bytes)
        for first_index, run in runs:
            todo.extend(
                (first_index + k, seq, data) for k, (seq, data) in enumerate(run) if seq > position
            )
        if not todo:
            if runs and runs[-1][1]:
                self.size = runs[-1][0] + len(runs[-1][1])  # as far as they go
            return 0
        self.size = todo[0][0]
        batch = self.begin(first_sequence=todo[0][1])
        parsed: list[_Stored] = []
        broken: LedgerCorrupt | None = None
        for _, seq, data in todo:
            try:
                parsed.append(_parse_stored(seq, data, sealed=True))
            except LedgerCorrupt as e:
                broken = e
                break
        batch.prefetch([p.event.event_id for p in parsed])
        for (index, seq, _), p in zip(todo, parsed, strict=False):
            if seq != batch.last_sequence + 1 or index != batch.next_index:
                try:
                    batch.continue_at(seq, index)
                except ValueError as e:
                    raise LedgerCorrupt(f"LEDGER #{seq}: {e}") from None
            batch._apply_parsed(p, trust_hinted_key)
        if broken is not None:
            raise broken
        self._commit_replayed(batch)
        return len(parsed)

    def _replay_run(
        self,
        run: list[tuple[int, bytes]],
        signatures: SignatureCheck,
        on_entry: Callable[[Entry], None] | None,
    ) -> int:
        """Consecutive stored entries as one batch: parsed first, so that one query
        tells which of their event ids are recorded already; applied in order
        (``on_entry`` after each), then committed. An entry that does not parse
        stops the run where it stands, after the entries before it."""
        batch = self.begin(first_sequence=run[0][0])
        parsed: list[_Stored] = []
        broken: LedgerCorrupt | None = None
        # trust_hinted_key: sealed entries (a monitor, trusting no seal, checks everything)
        sealed = signatures is trust_hinted_key
        for seq, data in run:
            try:
                parsed.append(_parse_stored(seq, data, sealed=sealed))
            except LedgerCorrupt as e:
                broken = e
                break
        batch.prefetch([p.event.event_id for p in parsed])
        for p in parsed:
            batch._apply_parsed(p, signatures)
            if on_entry is not None:
                on_entry(batch.admitted[-1].entry)
        if broken is not None:
            raise broken
        self._commit_replayed(batch)
        return len(parsed)

    def digest(self) -> str:
        """SHA-256 over every recorded domain event (by aggregate id and version),
        without eventsourcing's wall-clock ``timestamp``: equal for equal histories,
        however and whenever they were rebuilt. Not a published format: it compares
        two states of the same code (the notary's and a projector's)."""
        h = hashlib.sha256()
        for oid, version, topic, state in events_in_order(self.recorder):
            body = state if topic == RECORD_TOPIC else _without_timestamp(state)
            h.update(b"%s %d %s %d\n" % (oid.encode(), version, topic.encode(), len(body)))
            h.update(body)
        h.update(f"position {self.position()}".encode())
        return h.hexdigest()

    def _commit_replayed(self, batch: Batch) -> None:
        try:
            self.commit(batch)
        except IntegrityError:
            # Fine only if another process recorded these very entries first.
            if self.position() < batch.last_sequence:
                raise


class Batch(Recording):
    """Submissions admitted after the state's position, not yet recorded.

    Admission (here) decides each submission: duplicates, the genesis rule,
    who signed and whether :func:`~ledger.law.admission.judge` admits it, the
    ``prev`` of its subject's chain. The aggregates it reads and changes live
    in the batch's overlay (:class:`~ledger.state.overlay.Overlay`: a refused
    admission is rolled back there); the changes themselves are the handlers of
    :class:`~ledger.state.recording.Recording`.
    """

    #: Whether the records of event ids (their aggregate ids) are recorded in the
    #: state, as :meth:`prefetch` found.
    _prefetched: dict[UUID, bool] | None = None

    def prefetch(self, event_ids: Sequence[str]) -> None:
        """Ask the store once which of these event ids it has recorded, so that
        admitting them needs no query each (the duplicate check). Optional: an
        event id not prefetched is looked up when admitted."""
        ids = set()
        for event_id in event_ids:
            try:
                ids.add(EventRecord.create_id(event_id))
            except ValueError:
                continue
        ids.difference_update(self.records)
        found = self.state.recorded(list(ids))
        if self._prefetched is None:
            self._prefetched = {}
        self._prefetched.update((i, i in found) for i in ids)

    def _recorded_event(self, record_id: UUID) -> EventRecord | None:
        """The record of an event id: of this batch, else of the state."""
        record = self.records.get(record_id)
        if record is not None:
            return record
        known = self._prefetched.get(record_id) if self._prefetched is not None else None
        if known is None:
            known = bool(self.state.recorded([record_id]))
        return self.state.record(record_id) if known else None

    # --- admission -------------------------------------------------------

    def admit(
        self,
        env: ParsedEnvelope,
        event: ev.AnyEvent,
        integrated: datetime,
        *,
        signatures: SignatureCheck = verify_now,
    ) -> Admitted:
        """Check a new submission against everything and stage its entry.

        Raises a :class:`~ledger.law.rejections.Rejection`, or
        :class:`AlreadyIntegrated` for an exact resubmission.
        """
        return self._integrate(env, event, self.next_index, integrated, signatures, None)

    def apply_stored(
        self, sequence: int, data: bytes, *, signatures: SignatureCheck | None = None
    ) -> Admitted:
        """Apply an entry read from LEDGER, checking the ledger's own structure
        (signatures with ``signatures``, default :func:`trust_hinted_key`)."""
        return self._apply_parsed(_parse_stored(sequence, data), signatures or trust_hinted_key)

    def _apply_parsed(self, stored: _Stored, signatures: SignatureCheck) -> Admitted:
        entry = stored.entry
        if stored.sequence != self.last_sequence + 1 or entry.index != self.next_index:
            raise LedgerCorrupt(
                f"LEDGER #{stored.sequence} holds index {entry.index}, expected {self.next_index}"
            )
        try:
            return self._integrate(
                stored.env, stored.event, entry.index, entry.integrated, signatures, entry
            )
        except (errors.Rejection, AlreadyIntegrated) as e:
            raise LedgerCorrupt(f"LEDGER entry {entry.index} breaks a rule: {e}") from None

    def _integrate(
        self,
        env: ParsedEnvelope,
        event: ev.AnyEvent,
        index: int,
        integrated: datetime,
        signatures: SignatureCheck,
        stored: Entry | None,
    ) -> Admitted:
        envelope_sha256 = hashlib.sha256(env.raw).hexdigest()
        record_id = EventRecord.create_id(event.event_id)
        record = self._recorded_event(record_id)
        if record is not None:
            if record.envelope_sha256 == envelope_sha256:
                raise AlreadyIntegrated(record)
            raise errors.DuplicateEventId(
                f"event id {event.event_id} is already entry {record.index} with other bytes"
            )
        is_genesis = isinstance(event, ev.LedgerGenesis)
        if index == 0 and not is_genesis:
            raise errors.GenesisViolation("the first entry of a ledger must be LedgerGenesis")
        if index > 0 and is_genesis:
            raise errors.GenesisViolation("this ledger already has its genesis entry")
        if self.admitted and integrated < self.admitted[-1].entry.integrated:
            raise LedgerCorrupt("integration time went backwards")

        self._touched.clear()
        try:
            key_fp = self._signing_key(env, event, integrated, signatures)
            request = Request(
                event.type_name,
                event.actor,
                event.subject,
                key_fp,
                integrated,
                event,
                index,
                env.keyid,
            )
            judgement = judge(self, request)
            if not judgement.admitted:
                raise judgement.rejection()
            trust = self.state.trust
            if stored is None and trust is not None:
                # new admissions only: what LEDGER holds was judged when integrated
                quorum = judge_root_quorum(request, env, trust)
                if not quorum.admitted:
                    raise quorum.rejection()
            head = self._subject_aggregate(event.subject)
            prev = head.chain_head if head is not None else None
            if stored is not None and stored.prev != prev:
                raise LedgerCorrupt(
                    f"entry {index} says prev {stored.prev}, the {event.subject} chain says {prev}"
                )
            prov = Provenance(
                index,
                event.event_id,
                event.actor,
                key_fp,
                event.signed_at,
                integrated,
                event.subject,
            )
            self._apply_event(event, prov)
        except BaseException:
            self._roll_back()
            raise
        self._touched.clear()

        entry = stored or Entry(index, integrated, event.subject, prev, env.raw)
        new_record = EventRecord(
            event.event_id,
            index,
            event.subject,
            integrated,
            base64.b64encode(entry.leaf_hash).decode(),
            envelope_sha256,
            record_id=record_id,
        )
        self.records[record_id] = new_record
        admitted = Admitted(entry, event, new_record)
        self.admitted.append(admitted)
        return admitted

    # --- who signed --------------------------------------------------------

    def _signing_key(
        self,
        env: ParsedEnvelope,
        event: ev.AnyEvent,
        at: datetime,
        signatures: SignatureCheck,
    ) -> str:
        """The fingerprint of the key that made the signature, for :func:`judge` to
        weigh: one of ``payload.actor``'s keys that verifies; else the envelope's
        key id, when it names no enrolled key or another actor's key that verifies.
        A signature no candidate key verifies is a bad signature."""
        if isinstance(event, ev.LedgerGenesis):
            return self._authenticate_genesis(env, event, at, signatures)
        hint = env.keyid_fingerprint
        actor = self.actor(event.actor)
        if actor is None:
            return hint  # unknown_actor
        hinted = actor.keys.get(hint)
        candidates = [hinted] if hinted is not None else []
        candidates += [k for fp, k in actor.keys.items() if fp != hint]
        for key in candidates:
            public, key_fp = _enrolled_key(key.public_key)
            if signatures(env, public):
                return key_fp
        if hinted is not None:
            raise errors.BadSignature(f"signature does not verify with {event.actor}/{hint}")
        binding = self.key_binding(hint)
        if binding is None or signatures(env, decode_public_key(binding.public_key)):
            return hint  # unknown_key, or signer_not_actor
        raise errors.BadSignature(f"no key of {event.actor} verifies the signature")

    # --- the facts of ledger.law.admission.judge ----------------------------

    def key_owner(self, key_fingerprint: str) -> str | None:
        binding = self.key_binding(key_fingerprint)
        return None if binding is None else binding.actor_id

    def policy_insurer(self, system_id: str, policy_number: str) -> str | None:
        policy = self.insurance_policy(system_id, policy_number)
        return None if policy is None else policy.insurer

    def _authenticate_genesis(
        self,
        env: ParsedEnvelope,
        event: ev.LedgerGenesis,
        at: datetime,
        signatures: SignatureCheck,
    ) -> str:
        trust = self.state.trust
        for key in event.regulator_keys:
            public = decode_public_key(key)
            if signatures(env, public):
                if trust is not None:
                    if trust.regulator != event.actor:
                        raise errors.GenesisViolation(
                            f"genesis is by {event.actor}, the trust policy's regulator "
                            f"is {trust.regulator}"
                        )
                    if not trust.regulator_key_valid(public, at):
                        raise errors.GenesisViolation(
                            "genesis is not signed by a regulator root key of the trust policy"
                        )
                    if trust.origin != event.origin:
                        raise errors.GenesisViolation(
                            f"genesis origin {event.origin!r} differs from the trust policy's"
                        )
                return fingerprint(public)
        raise errors.BadSignature("genesis signature does not verify with its regulator keys")
