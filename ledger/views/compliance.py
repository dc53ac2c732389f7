"""Read models of the ledger for point-in-time questions: an eventsourcing ``Projection``.

:class:`ComplianceView` keeps one row per LEDGER entry (index, subject, type,
signer, integration time, key, payload) in a table of its own, recorded
together with its own ``Tracking("LEDGER", sequence)`` in one transaction, so
each entry is applied exactly once. ``status(system, at=T)`` reads the rows
of the system's chain and of the rulebook up to T and runs the rule engine
(:mod:`ledger.law.rules`) on them; ``timeline`` lists who did what.

The recorder is chosen by ``PERSISTENCE_MODULE`` as eventsourcing does:
SQLite (one database file, tables not prefixed) or PostgreSQL (tables named
after the view, in ``POSTGRES_SCHEMA``).
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from eventsourcing.persistence import Tracking, TrackingRecorder
from eventsourcing.projection import Projection
from eventsourcing.sqlite import SQLiteTrackingRecorder

from ledger.formats import strictjson
from ledger.formats.dsse import parse_envelope
from ledger.formats.entry import Entry
from ledger.formats.timeutil import format_time, parse_time
from ledger.law.admission import Admission, Judgement, Request
from ledger.law.rules import Fact, SystemVerdict, evaluate, fact_from_entry, summarize

__all__ = [
    "COLUMNS",
    "ComplianceView",
    "ComplianceViewRecorder",
    "EntryRow",
    "TimelineRow",
    "epoch_micros",
    "select_rows",
]

TRACKING_NAME = "LEDGER"


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

    @staticmethod
    def of(entry: Entry) -> EntryRow:
        envelope = parse_envelope(entry.envelope)
        fact = fact_from_entry(entry, envelope)
        return EntryRow(
            entry.index,
            entry.subject,
            fact.type,
            fact.actor,
            epoch_micros(entry.integrated),
            format_time(entry.integrated),
            fact.key_fingerprint,
            envelope.payload.decode(),
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


def epoch_micros(t: datetime) -> int:
    delta = t - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


COLUMNS = ("idx", "subject", "type", "actor", "integrated_us", "integrated", "key_fp", "payload")


class ComplianceViewRecorder(TrackingRecorder, ABC):
    """The rows, with the view's tracking, in one store."""

    @abstractmethod
    def record(self, rows: Sequence[EntryRow], tracking: Tracking) -> None: ...

    @abstractmethod
    def rows(
        self,
        subjects: Sequence[str],
        *,
        up_to_index: int | None = None,
        up_to_time: datetime | None = None,
    ) -> list[EntryRow]: ...

    @abstractmethod
    def subjects(self, kind: str) -> list[str]: ...

    @abstractmethod
    def row(self, index: int) -> EntryRow | None: ...

    @abstractmethod
    def all_rows(self, after: int, limit: int) -> list[EntryRow]: ...


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


def row_of(values: Sequence[Any]) -> EntryRow:
    return EntryRow(*values)


class SQLiteComplianceView(SQLiteTrackingRecorder, ComplianceViewRecorder):
    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),
            "CREATE TABLE IF NOT EXISTS entries ("
            "idx INTEGER PRIMARY KEY, subject TEXT NOT NULL, type TEXT NOT NULL, "
            "actor TEXT NOT NULL, integrated_us INTEGER NOT NULL, integrated TEXT NOT NULL, "
            "key_fp TEXT NOT NULL, payload TEXT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS entries_subject ON entries (subject, idx)",
        ]

    def record(self, rows: Sequence[EntryRow], tracking: Tracking) -> None:
        with self.datastore.transaction(commit=True) as c:
            c.executemany(
                f"INSERT INTO entries ({', '.join(COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(COLUMNS))})",
                [tuple(r.__dict__.values()) for r in rows],
            )
            self._insert_tracking(c, tracking)

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
        with self.datastore.transaction(commit=False) as c:
            c.execute(sql, params)
            return [row_of(tuple(r)) for r in c.fetchall()]

    def subjects(self, kind: str) -> list[str]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                "SELECT DISTINCT subject FROM entries WHERE subject LIKE ? ORDER BY subject",
                (f"{kind}/%",),
            )
            return [r[0] for r in c.fetchall()]

    def row(self, index: int) -> EntryRow | None:
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT {', '.join(COLUMNS)} FROM entries WHERE idx = ?", (index,))
            found = c.fetchone()
            return None if found is None else row_of(tuple(found))

    def all_rows(self, after: int, limit: int) -> list[EntryRow]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT {', '.join(COLUMNS)} FROM entries WHERE idx > ? ORDER BY idx LIMIT ?",
                (after, limit),
            )
            return [row_of(tuple(r)) for r in c.fetchall()]


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

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        """``domain_event`` is a run of stored LEDGER entries ``(sequence, bytes)``."""
        position = self.position()
        rows = [EntryRow.of(Entry.parse(data)) for seq, data in domain_event if seq > position]
        if rows:
            self.view.record(rows, tracking)

    def position(self) -> int:
        return self.view.max_tracking_id(TRACKING_NAME) or 0

    # --- questions -------------------------------------------------------------

    def systems(self) -> list[str]:
        return [s.partition("/")[2] for s in self.view.subjects("system")]

    def _rulebook_subjects(self) -> list[str]:
        genesis = self.view.row(0)
        if genesis is None:
            raise LookupError("the ledger is empty")
        policy_id = strictjson.loads(genesis.payload.encode())["policy"]["policy_id"]
        return ["ledger/genesis", f"policy/{policy_id}"]

    def status(
        self, system: str, *, at: datetime | None = None, at_index: int | None = None
    ) -> SystemVerdict:
        """The system's verdict as of time ``at`` or as of ledger index ``at_index``."""
        if at is None:
            if at_index is None:
                raise ValueError("give a time or an index")
            row = self.view.row(at_index)
            if row is None:
                raise LookupError(f"no entry {at_index}")
            at = row.fact().integrated
        rows = self.view.rows(
            [f"system/{system}", *self._rulebook_subjects()], up_to_index=at_index, up_to_time=at
        )
        return evaluate(system, [r.fact() for r in rows], at, as_of_index=at_index)

    def timeline(self, system: str, *, until: datetime | None = None) -> list[TimelineRow]:
        """Who did what to ``system``, in ledger order, each entry judged as the notary
        judged it (:mod:`ledger.law.admission`: signer, key, role, as they stood),
        then against what later revocations revealed."""
        chain = self.view.rows([f"system/{system}"], up_to_time=until)
        if not chain:
            raise LookupError(f"no system {system}")
        # Every actor's history (keys may be reused or borrowed across actors),
        # including revocations integrated after ``until``.
        actor_rows = self.view.rows([*self.view.subjects("actor"), "ledger/genesis"])
        state = Admission()
        judged: dict[int, tuple[Request, Judgement]] = {}
        on_chain = {r.index for r in chain}
        for r in sorted([*chain, *actor_rows], key=lambda r: r.index):
            request = _request(r.fact())
            if request.type == "LedgerGenesis":
                state.apply(request)
                continue
            judgement = state.admit(request)
            if request.index in on_chain:
                judged[request.index] = (request, judgement)
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
            revealed = state.compromise_revealed_later(request) if judgement.admitted else None
            if not judgement.admitted:
                verification = f"{judgement.code} when integrated"
            elif revealed is not None:
                verification = (
                    f"key compromised at {format_time(revealed[1])} (revoked in entry "
                    f"{revealed[0]}, learnt later)"
                )
            else:
                verification = "verified"
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
                    verification,
                )
            )
        return out

    def digest(self) -> str:
        h = hashlib.sha256()
        after, count = -1, 0
        while batch := self.view.all_rows(after, 5000):
            for r in batch:
                h.update(repr(tuple(r.__dict__.values())).encode())
                count += 1
            after = batch[-1].index
        h.update(f"tracking {self.position()}".encode())
        return h.hexdigest()


def _request(f: Fact) -> Request:
    """An entry of the view as :mod:`ledger.law.admission` judges it (the key is the
    one the envelope names: the notary verified the signature when it integrated it)."""
    return Request(f.type, f.actor, f.subject, f.key_fingerprint, f.integrated, f.payload, f.index)
