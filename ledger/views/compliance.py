"""Read models of the ledger for point-in-time questions: an eventsourcing ``Projection``.

:class:`ComplianceView` keeps one row per LEDGER entry (index, subject, type,
signer, integration time, key, payload, slot) in a table of its own, recorded
together with its own ``Tracking("LEDGER", sequence)`` in one transaction, so
each entry is applied exactly once. ``status(system, at=T)`` runs the rule
engine (:func:`ledger.law.rules.evaluate`) on the rows of the rulebook and of
the system's chain up to T; ``timeline`` lists who did what.

Status at any T without reading the system's whole history: the rules read
only the latest fact of some kinds (the operation status, the deployed
version, ...: :func:`slot_of`), so each row names the *slot* it fills, and an
as-of query fetches, through one index on (subject, slot, integration time,
index), the latest row of each slot up to T plus every row that fills no slot
(registrations, audits, incidents, ...). The verdict is the one the whole
chain gives (tests/test_views_status.py checks it on random histories): only
the facts fetched change, never how they are judged. Integration times never
decrease along the ledger (the sealed reader refuses a batch that goes back),
so "integrated by T" is "up to the last index integrated by T".

The recorder is chosen by ``PERSISTENCE_MODULE`` as eventsourcing does:
SQLite (one database file, tables not prefixed) or PostgreSQL (tables named
after the view, in ``POSTGRES_SCHEMA``).
"""

from __future__ import annotations

import binascii
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from eventsourcing.persistence import Tracking, TrackingRecorder
from eventsourcing.projection import Projection
from eventsourcing.sqlite import SQLiteCursor, SQLiteTrackingRecorder

from ledger.formats import strictjson
from ledger.formats.dsse import parse_envelope
from ledger.formats.entry import Entry
from ledger.formats.timeutil import format_time, parse_time
from ledger.law.admission import Admission, Judgement, KeyState, Request, key_fingerprint
from ledger.law.rules import Fact, SystemVerdict, evaluate, fact_from_entry, summarize

__all__ = [
    "COLUMNS",
    "SCHEMA_VERSION",
    "SEARCH_COLUMNS",
    "ComplianceView",
    "ComplianceViewRecorder",
    "EntryRow",
    "KeyEvent",
    "SignerRow",
    "TimelineRow",
    "epoch_micros",
    "select_rows",
    "slot_of",
    "status_rows_sql",
]

TRACKING_NAME = "LEDGER"
#: The layout of the view's rows (columns, slots, indexes), kept in the view's
#: tracking table under :data:`SCHEMA_TRACKING`: a store of another version is
#: emptied when opened, and the projector refills it from LEDGER.
SCHEMA_VERSION = 3
SCHEMA_TRACKING = "compliance-view-schema"
#: Above any ledger index: "no bound".
_NO_BOUND = 2**62


def slot_of(subject: str, type_: str, actor: str, payload: _Head, first: bool) -> str:
    """The slot a fact fills in what the rules read of its system, or "" for none.

    :func:`ledger.law.rules.evaluate` folds a system's chain keeping only the
    latest fact of each of these (so an earlier one changes no verdict once a
    later one of the same slot is integrated): the operation status, the
    deployed version, the labelling attestation, each signer's risk
    classification (the owner's and the regulator's override), each insurance
    policy number, each overseer's assignment. Every other fact (the first of
    a chain, registrations, withdrawals of oversight, audits, insurance-free
    events, incidents, ...) fills no slot and is always read."""
    if first or not subject.startswith("system/"):
        return ""
    if type_ == "OperationStatusChanged":
        return "status"
    if type_ == "VersionDeployed":
        return "deployment"
    if type_ == "LabelingAttested":
        return "labeling"
    if type_ == "RiskClassified":
        return f"classification/{actor}"
    if type_ == "InsurancePolicyChanged" and payload.policy_number is not None:
        return f"insurance/{payload.policy_number}"
    if type_ == "HumanOversightAssigned" and payload.overseer is not None:
        return f"oversight/{payload.overseer}"
    return ""


class _Signature(msgspec.Struct):
    keyid: str


class _Envelope(msgspec.Struct):
    """What the view reads of a DSSE envelope (the notary checked it in full)."""

    payload: str
    signatures: list[_Signature]


class _Head(msgspec.Struct):
    """What the view reads of an event's payload besides keeping its text."""

    type: str
    actor: str
    policy_number: str | None = None
    overseer: str | None = None


_read_envelope = msgspec.json.Decoder(_Envelope)
_read_head = msgspec.json.Decoder(_Head)
_URLSAFE = str.maketrans("-_", "+/")


@dataclass(frozen=True)
class EntryRow:
    index: int
    subject: str
    type: str
    actor: str
    integrated_us: int  # microseconds since the epoch: sortable, unlike RFC 3339 text
    integrated: str
    key_fingerprint: str
    payload: str
    slot: str = ""

    @staticmethod
    def of(entry: Entry) -> EntryRow:
        """The row of a sealed entry: its envelope and payload decoded once, for what
        the row keeps (the notary checked them in full when it integrated the entry)."""
        try:
            envelope = _read_envelope.decode(entry.envelope)
            text = envelope.payload
            if "-" in text or "_" in text:  # DSSE allows the URL-safe alphabet
                text = text.translate(_URLSAFE)
            payload = binascii.a2b_base64(text, strict_mode=True)
            head = _read_head.decode(payload)
            keyid = envelope.signatures[0].keyid
        except (msgspec.DecodeError, binascii.Error, ValueError, IndexError):
            return EntryRow._strictly(entry)
        return EntryRow(
            entry.index,
            entry.subject,
            head.type,
            head.actor,
            epoch_micros(entry.integrated),
            _integrated_text(entry),
            keyid.partition("/")[2],
            payload.decode(),
            slot_of(entry.subject, head.type, head.actor, head, entry.prev is None),
        )

    @staticmethod
    def _strictly(entry: Entry) -> EntryRow:
        """The row as the rules' own parser reads the entry (raises what it raises)."""
        envelope = parse_envelope(entry.envelope)
        fact = fact_from_entry(entry, envelope)
        number, overseer = fact.payload.get("policy_number"), fact.payload.get("overseer")
        head = _Head(
            fact.type,
            fact.actor,
            number if isinstance(number, str) else None,
            overseer if isinstance(overseer, str) else None,
        )
        return EntryRow(
            entry.index,
            entry.subject,
            fact.type,
            fact.actor,
            epoch_micros(entry.integrated),
            format_time(entry.integrated),
            fact.key_fingerprint,
            envelope.payload.decode(),
            slot_of(entry.subject, fact.type, fact.actor, head, entry.prev is None),
        )

    def fact(self) -> Fact:
        return Fact(
            self.index,
            parse_time(self.integrated),
            self.subject,
            self.type,
            self.actor,
            self.key_fingerprint,
            strictjson.loads(self.payload.encode()),
        )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def epoch_micros(t: datetime) -> int:
    return (t - _EPOCH) // _MICROSECOND


def _integrated_text(entry: Entry) -> str:
    """``format_time(entry.integrated)``, as the entry's bytes already spell it (its
    third line, ``integrated <time>``: the form :attr:`Entry.encoded` writes)."""
    line = entry.encoded.split(b"\n", 3)[2]
    return line[len(b"integrated ") :].decode("ascii")


COLUMNS = (
    "idx",
    "subject",
    "type",
    "actor",
    "integrated_us",
    "integrated",
    "key_fp",
    "payload",
    "slot",
)


class ComplianceViewRecorder(TrackingRecorder, ABC):
    """The rows, with the view's tracking, in one store."""

    @abstractmethod
    def record(
        self, rows: Sequence[EntryRow], tracking: Tracking, reader: bytes | None = None
    ) -> None:
        """The rows and the tracking, in one transaction; with ``reader``, the state of
        whoever reads LEDGER for the view, to resume from (:meth:`reader_state`)."""

    @abstractmethod
    def reader_state(self) -> tuple[int, bytes] | None:
        """The last ``reader`` recorded and the tracking recorded with it."""

    @abstractmethod
    def rows(
        self,
        subjects: Sequence[str],
        *,
        up_to_index: int | None = None,
        up_to_time: datetime | None = None,
    ) -> list[EntryRow]: ...

    @abstractmethod
    def status_rows(
        self, system_subject: str, rulebook_subjects: Sequence[str], up_to_index: int, up_to: int
    ) -> list[EntryRow]:
        """The rows :func:`status_rows_sql` selects (``up_to``: microseconds since the
        epoch), in index order."""

    @abstractmethod
    def subjects(self, kind: str) -> list[str]: ...

    @abstractmethod
    def row(self, index: int) -> EntryRow | None: ...

    @abstractmethod
    def integrated_before(self, index: int) -> int | None:
        """The integration time (epoch microseconds) of the last row at or before ``index``."""

    @abstractmethod
    def row_texts(self, after: int, limit: int) -> list[tuple[int, str]]:
        """The rows after index ``after`` in index order, at most ``limit``: each its
        index and its columns as text joined by U+001F (made by the database)."""

    @abstractmethod
    def find(self, where: Sequence[tuple[str, str]], after: int, limit: int) -> list[EntryRow]:
        """The rows whose columns equal the values ``where`` names (each column one of
        :data:`SEARCH_COLUMNS`), with index above ``after``, in index order, at most
        ``limit``: an index seek on (column, idx) for the first condition."""

    @abstractmethod
    def last_index(self, up_to: int | None = None) -> int | None:
        """The highest index of a row (at most ``up_to``; None: no such row)."""


#: What :meth:`ComplianceViewRecorder.find` searches, each with an index on (column, idx).
SEARCH_COLUMNS = ("actor", "subject", "type", "key_fp")


def find_sql(
    table: str, placeholder: str, where: Sequence[tuple[str, str]], after: int, limit: int
) -> tuple[str, list[Any]]:
    """The query of :meth:`ComplianceViewRecorder.find`."""
    if not where:
        raise ValueError("search by at least one of " + ", ".join(SEARCH_COLUMNS))
    conditions, params = [], []
    for column, value in where:
        if column not in SEARCH_COLUMNS:
            raise ValueError(f"cannot search by {column!r}: one of {', '.join(SEARCH_COLUMNS)}")
        conditions.append(f"{column} = {placeholder}")
        params.append(value)
    conditions.append(f"idx > {placeholder}")
    sql = (
        f"SELECT {', '.join(COLUMNS)} FROM {table} WHERE {' AND '.join(conditions)} "
        f"ORDER BY idx LIMIT {placeholder}"
    )
    return sql, [*params, after, limit]


def select_rows(
    table: str,
    placeholder: str,
    subjects: Sequence[str],
    up_to_index: int | None,
    up_to_time: int | None,
) -> tuple[str, list[Any]]:
    where = [f"subject IN ({', '.join([placeholder] * len(subjects))})"]
    params: list[Any] = list(subjects)
    if up_to_index is not None:
        where.append(f"idx <= {placeholder}")
        params.append(up_to_index)
    if up_to_time is not None:
        where.append(f"integrated_us <= {placeholder}")
        params.append(up_to_time)
    sql = f"SELECT {', '.join(COLUMNS)} FROM {table} WHERE {' AND '.join(where)} ORDER BY idx"
    return sql, params


def status_rows_sql(
    table: str,
    placeholder: str,
    system_subject: str,
    rulebook_subjects: Sequence[str],
    up_to_index: int,
    up_to: int,
) -> tuple[str, list[Any]]:
    """One query for what a verdict at ``up_to`` (epoch microseconds, and index
    ``up_to_index``) reads: the rulebook's rows and the system's rows that fill no
    slot, up to then, and the latest row of each of the system's slots up to then.

    Every step is an index seek on (subject, slot, integrated_us, idx): the
    slots are enumerated one seek each (a loose index scan), then each slot's
    latest row is one seek backwards from ``up_to``."""
    p, cols = placeholder, ", ".join(COLUMNS)
    bound = f"integrated_us <= {p} AND idx <= {p}"
    subjects = [system_subject, *rulebook_subjects]
    sql = (
        "WITH RECURSIVE slots(slot) AS ("
        f"SELECT (SELECT slot FROM {table} WHERE subject = {p} AND slot > '' "
        "ORDER BY slot LIMIT 1) "
        "UNION ALL "
        f"SELECT (SELECT e.slot FROM {table} e WHERE e.subject = {p} AND e.slot > slots.slot "
        "ORDER BY e.slot LIMIT 1) FROM slots WHERE slots.slot IS NOT NULL) "
        f"SELECT {cols} FROM {table} WHERE idx IN ("
        f"SELECT (SELECT e.idx FROM {table} e WHERE e.subject = {p} AND e.slot = slots.slot "
        f"AND e.integrated_us <= {p} AND e.idx <= {p} "
        "ORDER BY e.integrated_us DESC, e.idx DESC LIMIT 1) "
        "FROM slots WHERE slots.slot IS NOT NULL) "
        "UNION ALL "
        f"SELECT {cols} FROM {table} WHERE subject IN ({', '.join([p] * len(subjects))}) "
        f"AND slot = '' AND {bound} "
        "ORDER BY idx"
    )
    params: list[Any] = [
        system_subject,
        system_subject,
        system_subject,
        up_to,
        up_to_index,
        *subjects,
        up_to,
        up_to_index,
    ]
    return sql, params


def _bound(up_to: int | None) -> int:
    return _NO_BOUND if up_to is None else up_to


def row_of(values: Sequence[Any]) -> EntryRow:
    return EntryRow(*values)


def row_values(rows: Iterable[EntryRow]) -> list[tuple[Any, ...]]:
    """The rows' column values, in :data:`COLUMNS` order."""
    return [tuple(r.__dict__.values()) for r in rows]


class SQLiteComplianceView(SQLiteTrackingRecorder, ComplianceViewRecorder):
    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),
            "CREATE TABLE IF NOT EXISTS entries ("
            "idx INTEGER PRIMARY KEY, subject TEXT NOT NULL, type TEXT NOT NULL, "
            "actor TEXT NOT NULL, integrated_us INTEGER NOT NULL, integrated TEXT NOT NULL, "
            "key_fp TEXT NOT NULL, payload TEXT NOT NULL, slot TEXT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS entries_slot "
            "ON entries (subject, slot, integrated_us, idx)",
            # Searches (ComplianceViewRecorder.find): made on opening a store that
            # lacks them, kept by every insert. A subject's rows are found through
            # entries_slot (subject first).
            *(
                f"CREATE INDEX IF NOT EXISTS entries_{c} ON entries ({c}, idx)"
                for c in SEARCH_COLUMNS
                if c != "subject"
            ),
            "CREATE TABLE IF NOT EXISTS reader (id INTEGER PRIMARY KEY CHECK (id = 0), "
            "tracking INTEGER NOT NULL, state BLOB NOT NULL)",
        ]

    def _create_table(self, c: SQLiteCursor) -> None:
        c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        tables = {r[0] for r in c.fetchall()}
        if "entries" in tables:
            version = None
            if "tracking" in tables:
                c.execute(self.select_max_tracking_id_statement, (SCHEMA_TRACKING,))
                version = c.fetchone()[0]
            if version != SCHEMA_VERSION:
                # Rows of another layout: emptied, and refilled from LEDGER.
                c.execute("DROP TABLE entries")
                c.execute("DROP TABLE IF EXISTS reader")
                if "tracking" in tables:
                    c.execute("DELETE FROM tracking WHERE application_name = ?", (TRACKING_NAME,))
        super()._create_table(c)
        c.execute(self.select_max_tracking_id_statement, (SCHEMA_TRACKING,))
        if c.fetchone()[0] != SCHEMA_VERSION:
            self._insert_tracking(c, Tracking(SCHEMA_TRACKING, SCHEMA_VERSION))

    def record(
        self, rows: Sequence[EntryRow], tracking: Tracking, reader: bytes | None = None
    ) -> None:
        with self.datastore.transaction(commit=True) as c:
            c.executemany(
                f"INSERT INTO entries ({', '.join(COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(COLUMNS))})",
                row_values(rows),
            )
            self._insert_tracking(c, tracking)
            if reader is not None:
                c.execute(
                    "INSERT INTO reader VALUES (0, ?, ?) ON CONFLICT (id) DO UPDATE "
                    "SET tracking = excluded.tracking, state = excluded.state",
                    (tracking.notification_id, reader),
                )

    def reader_state(self) -> tuple[int, bytes] | None:
        with self.datastore.transaction(commit=False) as c:
            c.execute("SELECT tracking, state FROM reader WHERE id = 0")
            found = c.fetchone()
            return None if found is None else (int(found[0]), bytes(found[1]))

    def _select(self, sql: str, params: Sequence[Any]) -> list[EntryRow]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(sql, params)
            return [row_of(tuple(r)) for r in c.fetchall()]

    def rows(
        self,
        subjects: Sequence[str],
        *,
        up_to_index: int | None = None,
        up_to_time: datetime | None = None,
    ) -> list[EntryRow]:
        sql, params = select_rows(
            "entries",
            "?",
            subjects,
            up_to_index,
            None if up_to_time is None else epoch_micros(up_to_time),
        )
        return self._select(sql, params)

    def status_rows(
        self, system_subject: str, rulebook_subjects: Sequence[str], up_to_index: int, up_to: int
    ) -> list[EntryRow]:
        sql, params = status_rows_sql(
            "entries", "?", system_subject, rulebook_subjects, up_to_index, up_to
        )
        return self._select(sql, params)

    def subjects(self, kind: str) -> list[str]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                "SELECT DISTINCT subject FROM entries WHERE subject LIKE ? ORDER BY subject",
                (f"{kind}/%",),
            )
            return [r[0] for r in c.fetchall()]

    def row(self, index: int) -> EntryRow | None:
        found = self._select(f"SELECT {', '.join(COLUMNS)} FROM entries WHERE idx = ?", (index,))
        return found[0] if found else None

    def integrated_before(self, index: int) -> int | None:
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                "SELECT integrated_us FROM entries WHERE idx <= ? ORDER BY idx DESC LIMIT 1",
                (index,),
            )
            found = c.fetchone()
            return None if found is None else int(found[0])

    def row_texts(self, after: int, limit: int) -> list[tuple[int, str]]:
        joined = " || char(31) || ".join(COLUMNS)
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT idx, {joined} FROM entries WHERE idx > ? ORDER BY idx LIMIT ?",
                (after, limit),
            )
            return [(r[0], r[1]) for r in c.fetchall()]

    def find(self, where: Sequence[tuple[str, str]], after: int, limit: int) -> list[EntryRow]:
        return self._select(*find_sql("entries", "?", where, after, limit))

    def last_index(self, up_to: int | None = None) -> int | None:
        with self.datastore.transaction(commit=False) as c:
            c.execute("SELECT MAX(idx) FROM entries WHERE idx <= ?", (_bound(up_to),))
            found = c.fetchone()
            return None if found is None or found[0] is None else int(found[0])


@dataclass(frozen=True)
class KeyEvent:
    """An entry that changed a key: enrolled it, rotated it in or out, revoked it."""

    index: int
    integrated: datetime
    type: str
    summary: str


@dataclass(frozen=True)
class SignerRow:
    """Who signed an entry and how the key stands (:meth:`ComplianceView.signer`)."""

    index: int
    actor: str
    legal_name: str
    roles: tuple[str, ...]
    suspended: bool
    key_fingerprint: str
    key_valid_from: datetime | None
    key_valid_until: datetime | None
    key_compromised_at: datetime | None
    key_history: tuple[KeyEvent, ...]
    verification: str

    def key_status(self, at: datetime) -> str:
        """``valid``, ``not_yet``, ``rotated``, ``revoked``, or ``unknown`` (a key the
        actor's history does not hold) at ``at``."""
        if self.key_valid_from is None:
            return "unknown"
        return KeyState(
            "", self.key_valid_from, self.key_valid_until, self.key_compromised_at
        ).status_at(at)


@dataclass(frozen=True)
class TimelineRow:
    index: int
    integrated: datetime
    signed_at: str
    actor: str
    legal_name: str
    role: str
    key_fingerprint: str
    type: str
    summary: str
    verification: str


class ComplianceView(Projection[ComplianceViewRecorder]):
    """LEDGER entries as rows, and the questions regulators ask of them."""

    name = "compliance"

    def __init__(self, view: ComplianceViewRecorder) -> None:
        super().__init__(view)
        self._rulebook: list[str] | None = None

    def process_event(
        self, domain_event: Any, tracking: Tracking, reader: bytes | None = None
    ) -> None:
        """``domain_event`` is a run of stored LEDGER entries ``(sequence, entry)``, each
        entry as stored (bytes) or parsed (:class:`Entry`); recorded in one transaction,
        with ``reader`` (see :meth:`ComplianceViewRecorder.record`)."""
        position = self.position()
        rows = [
            EntryRow.of(data if isinstance(data, Entry) else Entry.parse(data))
            for seq, data in domain_event
            if seq > position
        ]
        if rows:
            self.view.record(rows, tracking, reader)

    def position(self) -> int:
        return self.view.max_tracking_id(TRACKING_NAME) or 0

    # --- questions -------------------------------------------------------------

    def systems(self) -> list[str]:
        return [s.partition("/")[2] for s in self.view.subjects("system")]

    def _rulebook_subjects(self) -> list[str]:
        if self._rulebook is None:
            genesis = self.view.row(0)
            if genesis is None:
                raise LookupError("the ledger is empty")
            policy_id = strictjson.loads(genesis.payload.encode())["policy"]["policy_id"]
            self._rulebook = ["ledger/genesis", f"policy/{policy_id}"]
        return self._rulebook

    def status(
        self,
        system: str,
        *,
        at: datetime | None = None,
        at_index: int | None = None,
        judged_at: datetime | None = None,
    ) -> SystemVerdict:
        """The system's verdict as of time ``at`` or as of ledger index ``at_index``.

        Reads the rulebook, the system's facts that fill no slot and the latest of
        each slot (:func:`slot_of`), up to then: a few index seeks, however long the
        system's history. ``judged_at`` (not before ``at``): the facts known then,
        judged at that later clock (what falls due if nothing more is recorded)."""
        at, facts = self._status_facts(system, at, at_index)
        if judged_at is not None and judged_at < at:
            raise ValueError("judged_at is before the moment the facts are taken at")
        return evaluate(system, facts, judged_at or at, as_of_index=at_index)

    def statuses(
        self, system: str, *, at: datetime, judged_at: Sequence[datetime]
    ) -> list[SystemVerdict]:
        """The verdicts on the facts known at ``at``, judged at each of ``judged_at``
        (none before ``at``): the facts are read once."""
        at, facts = self._status_facts(system, at, None)
        if any(t < at for t in judged_at):
            raise ValueError("judged_at is before the moment the facts are taken at")
        return [evaluate(system, facts, t) for t in judged_at]

    def _status_facts(
        self, system: str, at: datetime | None, at_index: int | None
    ) -> tuple[datetime, list[Fact]]:
        if at is None:
            if at_index is None:
                raise ValueError("give a time or an index")
            row = self.view.row(at_index)
            if row is None:
                raise LookupError(f"no entry {at_index}")
            at = parse_time(row.integrated)
        up_to = epoch_micros(at)
        if at_index is not None:
            # Times never decrease along the ledger: nothing after at_index counts.
            last = self.view.integrated_before(at_index)
            up_to = min(up_to, last if last is not None else -1)
        rows = self.view.status_rows(
            f"system/{system}",
            self._rulebook_subjects(),
            _NO_BOUND if at_index is None else at_index,
            up_to,
        )
        return at, [r.fact() for r in rows]

    def timeline(
        self, system: str, *, until: datetime | None = None, up_to_index: int | None = None
    ) -> list[TimelineRow]:
        """Who did what to ``system`` (integrated by ``until``, up to index
        ``up_to_index``), in ledger order, each entry judged as the notary judged it
        (:mod:`ledger.law.admission`: signer, key, role, as they stood), then against
        what later revocations revealed."""
        chain = self.view.rows([f"system/{system}"], up_to_time=until, up_to_index=up_to_index)
        if not chain:
            raise LookupError(f"no system {system}")
        state, judged = self._judged(chain)
        owner, holder = "", ""
        out = []
        for r in chain:
            f = r.fact()
            if f.type == "SystemRegistered":
                owner, holder = str(f.payload["owner"]), str(f.payload["holder"])
            record = state.actor(f.actor)
            legal_name, roles = (record.legal_name, record.roles) if record else (f.actor, ())
            if f.actor == owner:
                role = "owner"
            elif f.actor == holder:
                role = "holder"
            else:
                role = "/".join(roles) or "?"
            request, judgement = judged[f.index]
            out.append(
                TimelineRow(
                    f.index,
                    f.integrated,
                    str(f.payload["signed_at"]),
                    f.actor,
                    legal_name,
                    role,
                    f.key_fingerprint,
                    f.type,
                    summarize(f),
                    _verification(state, request, judgement),
                )
            )
        return out

    def _judged(
        self, chain: Sequence[EntryRow]
    ) -> tuple[Admission, dict[int, tuple[Request, Judgement]]]:
        """``chain``'s entries judged as the notary judged them, replayed with every
        actor's history (keys may be reused or borrowed across actors), including
        revocations integrated after them; and the state once all is replayed."""
        actor_rows = self.view.rows([*self.view.subjects("actor"), "ledger/genesis"])
        state = Admission()
        judged: dict[int, tuple[Request, Judgement]] = {}
        on_chain = {r.index for r in chain}
        rows = {r.index: r for r in [*chain, *actor_rows]}
        for _, r in sorted(rows.items()):
            request = _request(r.fact())
            if request.type == "LedgerGenesis":
                state.apply(request)
                judged[request.index] = (request, Judgement())
                continue
            judgement = state.admit(request)
            if request.index in on_chain:
                judged[request.index] = (request, judgement)
        return state, judged

    # --- investigation -----------------------------------------------------------

    def search(
        self,
        *,
        actor: str | None = None,
        subject: str | None = None,
        type: str | None = None,
        key: str | None = None,
        after: int = -1,
        limit: int = 100,
    ) -> list[EntryRow]:
        """The rows signed by ``actor``, about ``subject``, of event ``type``, signed
        with key fingerprint ``key`` (all that are given), with index above ``after``,
        in index order, at most ``limit``."""
        where = [
            (column, value)
            for column, value in (
                ("actor", actor),
                ("subject", subject),
                ("type", type),
                ("key_fp", key),
            )
            if value is not None
        ]
        return self.view.find(where, after, limit)

    def last_index(self, up_to: int | None = None) -> int | None:
        """The highest index of an entry the view holds, at most ``up_to`` (heads
        leaves are not rows)."""
        return self.view.last_index(up_to)

    def signer(self, index: int) -> SignerRow:
        """Who signed entry ``index``, with which key, how that key stands now and its
        history, and how the entry is judged (as :meth:`timeline` judges it)."""
        row = self.view.row(index)
        if row is None:
            raise LookupError(f"no entry {index}")
        f = row.fact()
        chain = self.view.rows([row.subject], up_to_index=index)
        state, judged = self._judged(chain)
        request, judgement = judged[index]
        record = state.actor(f.actor)
        key = record.keys.get(f.key_fingerprint) if record else None
        history = []
        keyed = [*self.view.rows([f"actor/{f.actor}"]), *self.view.rows(["ledger/genesis"])]
        for r in sorted(keyed, key=lambda r: r.index):
            fact = r.fact()
            if fact.type == "LedgerGenesis" and fact.actor != f.actor:
                continue
            if f.key_fingerprint in _keys_named(fact):
                history.append(KeyEvent(fact.index, fact.integrated, fact.type, summarize(fact)))
        return SignerRow(
            index=index,
            actor=f.actor,
            legal_name=record.legal_name if record else f.actor,
            roles=record.roles if record else (),
            suspended=record.suspended if record else False,
            key_fingerprint=f.key_fingerprint,
            key_valid_from=key.valid_from if key else None,
            key_valid_until=key.valid_until if key else None,
            key_compromised_at=key.compromised_at if key else None,
            key_history=tuple(history),
            verification=_verification(state, request, judgement),
        )

    def digest(self) -> str:
        """SHA-256 over every row, in index order, and the tracking position."""
        h = hashlib.sha256()
        after = -1
        while batch := self.view.row_texts(after, 5000):
            h.update("\x1e".join(text for _, text in batch).encode())
            h.update(b"\x1e")
            after = batch[-1][0]
        h.update(f"tracking {self.position()}".encode())
        return h.hexdigest()


def _verification(state: Admission, request: Request, judgement: Judgement) -> str:
    """How an entry stands: as the notary judged it, then against what later
    revocations revealed."""
    revealed = state.compromise_revealed_later(request) if judgement.admitted else None
    if not judgement.admitted:
        return f"{judgement.code} when integrated"
    if revealed is not None:
        return (
            f"key compromised at {format_time(revealed[1])} (revoked in entry "
            f"{revealed[0]}, learnt later)"
        )
    return "verified"


def _keys_named(f: Fact) -> set[str]:
    """The fingerprints of the keys an actor's key event names (enrolled, rotated in
    or out, revoked; the genesis: the regulator's keys)."""
    p = f.payload
    named: list[object] = []
    if f.type == "LedgerGenesis":
        named = list(p.get("regulator_keys") or [])
    elif f.type == "ActorEnrolled":
        named = list(p.get("public_keys") or [])
    elif f.type == "KeyRotated":
        named = [p.get("old_key"), p.get("new_key")]
    elif f.type == "KeyRevoked":
        named = [p.get("key")]
    out = set()
    for k in named:
        if isinstance(k, str):
            try:
                out.add(key_fingerprint(k))
            except ValueError:
                continue
    return out


def _request(f: Fact) -> Request:
    """An entry of the view as :mod:`ledger.law.admission` judges it (the key is the
    one the envelope names: the notary verified the signature when it integrated it)."""
    return Request(f.type, f.actor, f.subject, f.key_fingerprint, f.integrated, f.payload, f.index)
