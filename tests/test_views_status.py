"""The compliance view's indexed status: the verdict from the facts it fetches (each
slot's latest, every other fact) is the verdict the rules give on the whole chain.

Random histories of every system event the rules read, judged at random moments
and indexes, on SQLite and on PostgreSQL (skipped without a server, as in
test_projector); the view's old layout is emptied when opened.
"""

from __future__ import annotations

import base64
import copy
import json
import random
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import Tracking

from ledger.bus import investigate
from ledger.formats.entry import Entry
from ledger.formats.timeutil import format_time
from ledger.law.rulebook import DEFAULT_PARAMETERS
from ledger.law.rules import Fact, evaluate, fact_from_entry
from ledger.views.compliance import SCHEMA_VERSION, ComplianceView, EntryRow
from ledger.views.store import open_view
from tests.test_projector import postgres_schema

__all__ = ["postgres_schema"]

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
H = timedelta(hours=1)
SYSTEMS = ("alpha", "beta", "gamma")
SHAS = ("a" * 64, "b" * 64, "c" * 64)


def envelope(payload: dict[str, Any]) -> bytes:
    """A DSSE envelope as the notary stores it (the view does not verify signatures)."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    return json.dumps(
        {
            "payloadType": "application/vnd.ailedger.event+json; v=1",
            "payload": base64.b64encode(body).decode(),
            "signatures": [
                {"keyid": f"{payload['actor']}/fp-{payload['actor']}", "sig": "A" * 86 + "=="}
            ],
        },
        separators=(",", ":"),
    ).encode()


class History:
    """A ledger's entries, made at random: every kind of fact about a few systems."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.entries: list[Entry] = []
        self.heads: dict[str, int] = {}
        self.now = T0 - 100 * H
        params = copy.deepcopy(dict(DEFAULT_PARAMETERS))
        self.add(
            "LedgerGenesis",
            "ledger/genesis",
            "regulator",
            policy={
                "policy_id": "rulebook",
                "effective_from": format_time(self.now),
                "parameters": params,
            },
        )
        self.incidents: dict[str, int] = dict.fromkeys(SYSTEMS, 0)

    def t(self, hours: float) -> str:
        return format_time(self.now + hours * H)

    def add(self, type_: str, subject: str, actor: str, **payload: Any) -> None:
        index = len(self.entries)
        body = {"type": type_, "v": 1, "actor": actor, "subject": subject, **payload}
        self.entries.append(
            Entry(index, self.now, subject, self.heads.get(subject), envelope(body))
        )
        self.heads[subject] = index

    def step(self) -> None:
        rng = self.rng
        # integration times never decrease; several entries may share one
        self.now += rng.choice([timedelta(0), 10 * timedelta(minutes=1), 3 * H, 30 * H, 200 * H])
        system = rng.choice(SYSTEMS)
        subject = f"system/{system}"
        if subject not in self.heads:
            self.add(
                "SystemRegistered",
                subject,
                "bank",
                name=system,
                owner="bank",
                holder="ops",
                generates_synthetic_content=rng.random() < 0.5,
            )
            return
        kind = rng.choice(
            [
                "classify",
                "classify",
                "deploy",
                "deploy",
                "status",
                "status",
                "oversight",
                "withdraw",
                "label",
                "audit",
                "insure",
                "insure",
                "prohibited",
                "incident",
                "measure",
                "close",
                "policy",
            ]
        )
        who = rng.choice(["bank", "bank", "regulator", "ops"])
        if kind == "classify":
            self.add(
                "RiskClassified",
                subject,
                rng.choice(["bank", "bank", "regulator"]),
                risk_level=rng.choice(["minimal", "medium", "high", "high"]),
                autonomy=rng.choice(["low", "medium", "high"]),
                critical_ict=False,
            )
        elif kind == "deploy":
            self.add(
                "VersionDeployed",
                subject,
                who,
                version=str(rng.randrange(9)),
                artifact_sha256=rng.choice(SHAS),
            )
        elif kind == "status":
            status = rng.choice(["in_operation", "in_operation", "in_operation", "suspended"])
            self.add("OperationStatusChanged", subject, who, status=status, reason="r")
        elif kind == "oversight":
            self.add(
                "HumanOversightAssigned",
                subject,
                who,
                overseer=rng.choice(["desk", "night"]),
                can_override=rng.random() < 0.8,
                can_stop=rng.random() < 0.8,
            )
        elif kind == "withdraw":
            overseer = rng.choice(["desk", "night"])
            self.add("HumanOversightWithdrawn", subject, who, overseer=overseer, reason="r")
        elif kind == "label":
            self.add("LabelingAttested", subject, "bank", marking_method="c2pa")
        elif kind == "audit":
            self.add(
                "AuditCompleted",
                subject,
                "auditor",
                audited_version_sha256=rng.choice(SHAS),
                result=rng.choice(["pass", "conditional", "fail"]),
                valid_until=self.t(rng.choice([50, 500, 5000])),
            )
        elif kind == "insure":
            start = rng.choice([-100, 0, 10])
            self.add(
                "InsurancePolicyChanged",
                subject,
                "insurer",
                policy_number=rng.choice(["P1", "P2", "P3"]),
                start=self.t(start),
                end=self.t(start + rng.choice([20, 400, 4000])),
                status=rng.choice(["bound", "renewed", "lapsed", "cancelled"]),
            )
        elif kind == "prohibited":
            self.add("ProhibitedCapabilityFound", subject, "auditor", category="social-scoring")
        elif kind == "incident":
            self.incidents[system] += 1
            self.add(
                "IncidentReported",
                subject,
                who,
                incident_id=f"i{self.incidents[system]}",
                aware_at=self.t(-rng.choice([1, 10, 100, 300])),
                harm_category=rng.choice(["death", "health", "other"]),
                severity=rng.choice(["minor", "serious", "critical"]),
            )
        elif kind == "measure":
            incident = f"i{rng.randrange(1, self.incidents[system] + 2)}"
            self.add(
                "PreventiveMeasureTaken",
                subject,
                who,
                incident_id=incident,
                measure=rng.choice(["suspend", "patch"]),
                effective_at=self.t(-1),
            )
        elif kind == "close":
            incident = f"i{rng.randrange(1, self.incidents[system] + 2)}"
            self.add("IncidentClosed", subject, who, incident_id=incident, resolution="done")
        else:
            params = copy.deepcopy(dict(DEFAULT_PARAMETERS))
            params["insurance_required_levels"] = rng.choice([["high"], ["medium", "high"]])
            params["audit_required_levels"] = rng.choice([["high"], []])
            params["preventive_measure_hours"] = rng.choice([24, 2])
            self.add(
                "PolicyAdopted",
                "policy/rulebook",
                "regulator",
                title="change",
                effective_from=self.t(rng.choice([-50, 0, 30])),
                parameters=params,
            )

    def facts(self) -> list[Fact]:
        return [fact_from_entry(e) for e in self.entries]


def fed(view: ComplianceView, entries: list[Entry], chunk: int = 37) -> ComplianceView:
    """The entries into the view as the projector applies them: runs of (sequence, entry)."""
    for start in range(0, len(entries), chunk):
        run = [(e.index + 1, e) for e in entries[start : start + chunk]]
        view.process_event(run, Tracking("LEDGER", run[-1][0]))
    return view


def about(facts: list[Fact], system: str) -> list[Fact]:
    """What the view read before it had slots: the rulebook's chain and the system's."""
    subjects = {"ledger/genesis", "policy/rulebook", f"system/{system}"}
    return [f for f in facts if f.subject in subjects]


def same_verdicts(view: ComplianceView, history: History, rng: random.Random, n: int) -> int:
    """Compare the view's verdicts with the rules on the whole history; return how many."""
    facts = history.facts()
    first, last = facts[0].integrated, facts[-1].integrated
    chains = {s: about(facts, s) for s in SYSTEMS}
    compared = 0
    for _ in range(n):
        system = rng.choice(SYSTEMS)
        if rng.random() < 0.5:
            at_index = rng.randrange(len(facts))
            at: datetime | None = (
                None if rng.random() < 0.7 else first + (last - first) * rng.random()
            )
        else:
            at_index = None
            at = (
                rng.choice([f.integrated for f in facts])
                if rng.random() < 0.5
                else (first + (last - first) * rng.random())
            )
        moment = at if at is not None else facts[at_index or 0].integrated
        try:
            expected = evaluate(system, chains[system], moment, as_of_index=at_index)
        except ValueError:
            with pytest.raises(ValueError, match="not registered"):
                view.status(system, at=at, at_index=at_index)
            continue
        assert view.status(system, at=at, at_index=at_index) == expected, (
            system,
            at,
            at_index,
        )
        compared += 1
    return compared


@pytest.mark.parametrize("seed", [1, 2, 4])
def test_indexed_status_gives_the_verdict_of_the_whole_chain(tmp_path: Path, seed: int) -> None:
    history = History(seed)
    for _ in range(250):
        history.step()
    view = fed(open_view(_sqlite(tmp_path)), history.entries)
    assert same_verdicts(view, history, random.Random(seed), 300) > 150


def test_status_reads_each_slot_once_however_long_the_history(tmp_path: Path) -> None:
    history = History(7)
    while "system/alpha" not in history.heads:
        history.step()
    subject = "system/alpha"
    for i in range(300):
        history.now += H
        history.add("VersionDeployed", subject, "bank", version=str(i), artifact_sha256=SHAS[i % 3])
        status = "in_operation" if i % 2 else "suspended"
        history.add("OperationStatusChanged", subject, "bank", status=status, reason="r")
    view = fed(open_view(_sqlite(tmp_path)), history.entries)
    up_to = history.entries[-1].integrated
    fetched = view.view.status_rows(subject, view._rulebook_subjects(), 2**62, 2**62)
    chain = [e for e in history.entries if e.subject == subject]
    assert len(chain) > 600 and len(fetched) < 20
    # one row per slot: the latest deployment and status
    kinds = [r.type for r in fetched if r.subject == subject]
    assert kinds.count("VersionDeployed") == 1 and kinds.count("OperationStatusChanged") == 1
    facts = history.facts()
    for at_index in (len(facts) - 1, len(facts) - 2, len(facts) // 2):
        assert (
            view.status("alpha", at_index=at_index).to_json()
            == evaluate(
                "alpha", about(facts, "alpha"), facts[at_index].integrated, as_of_index=at_index
            ).to_json()
        )
    assert view.status("alpha", at=up_to) == evaluate("alpha", about(facts, "alpha"), up_to)


def test_indexed_status_on_postgres(postgres_schema: dict[str, str]) -> None:
    history = History(11)
    for _ in range(150):
        history.step()
    view = fed(open_view(postgres_schema), history.entries)
    assert same_verdicts(view, history, random.Random(11), 80) > 30
    # opened again: the rows stay (same layout)
    assert open_view(postgres_schema).position() == len(history.entries)


def _sqlite(tmp_path: Path) -> dict[str, str]:
    return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(tmp_path / "v.db")}


@pytest.fixture
def old_layout(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A view store as the previous layout wrote it (rows without slots, tracked at 5)."""
    env = _sqlite(tmp_path)
    with sqlite3.connect(env["SQLITE_DBNAME"]) as db:
        db.execute(
            "CREATE TABLE entries (idx INTEGER PRIMARY KEY, subject TEXT NOT NULL, "
            "type TEXT NOT NULL, actor TEXT NOT NULL, integrated_us INTEGER NOT NULL, "
            "integrated TEXT NOT NULL, key_fp TEXT NOT NULL, payload TEXT NOT NULL)"
        )
        db.execute(
            "CREATE TABLE tracking (application_name TEXT, notification_id INTEGER, "
            "PRIMARY KEY (application_name)) WITHOUT ROWID"
        )
        db.execute("INSERT INTO tracking VALUES ('LEDGER', 5)")
        db.execute("INSERT INTO entries VALUES (0, 'ledger/genesis', 'x', 'y', 0, 'z', 'k', '{}')")
    yield env


def test_a_view_of_another_layout_is_emptied_and_refilled(old_layout: dict[str, str]) -> None:
    view = open_view(old_layout)
    assert view.position() == 0 and view.view.row(0) is None
    history = History(5)
    for _ in range(40):
        history.step()
    fed(view, history.entries)
    assert view.position() == len(history.entries)
    reopened = open_view(old_layout)
    assert reopened.position() == len(history.entries)
    assert reopened.view.max_tracking_id("compliance-view-schema") == SCHEMA_VERSION
    assert reopened.digest() == view.digest()


# --- investigation on the view: search and what falls due -------------------------------


def _searched(view: ComplianceView, limit: int, **criteria: str) -> list[int]:
    """Every page of a search, followed to its end."""
    found: list[int] = []
    after = -1
    while True:
        page = investigate.search(view, after=after, limit=limit, **criteria)
        found += [e.index for e in page.entries]
        if page.next_after is None:
            return found
        assert len(page.entries) == limit
        after = page.next_after


def _same_searches(view: ComplianceView, history: History) -> int:
    rows = [EntryRow.of(e) for e in history.entries]
    checked = 0
    for column, name in (("actor", "actor"), ("subject", "subject"), ("type", "type"),
                         ("key_fingerprint", "key")):  # fmt: skip
        for value in sorted({getattr(r, column) for r in rows}):
            expected = [r.index for r in rows if getattr(r, column) == value]
            assert _searched(view, 7, **{name: value}) == expected, (name, value)
            checked += 1
    both = [r.index for r in rows if r.actor == "bank" and r.type == "VersionDeployed"]
    assert _searched(view, 3, actor="bank", type="VersionDeployed") == both
    assert _searched(view, 5, actor="nobody") == []
    return checked


def test_search_by_actor_subject_type_and_key(tmp_path: Path) -> None:
    history = History(3)
    for _ in range(200):
        history.step()
    view = fed(open_view(_sqlite(tmp_path)), history.entries)
    assert _same_searches(view, history) > 20
    with pytest.raises(investigate.BadQuery, match="at least one"):
        investigate.search(view)
    with pytest.raises(investigate.BadQuery, match="a page holds"):
        investigate.search(view, actor="bank", limit=0)
    # indexes beyond what a store holds: nothing, never an overflow
    assert investigate.search(view, actor="bank", after=2**70).entries == []
    assert investigate.search(view, actor="bank", after=-(2**70)).entries != []
    with pytest.raises(investigate.NotFound):
        investigate.signer(view, 2**64)
    with pytest.raises(investigate.NotFound):
        investigate.systems(view, at_index=2**64)
    with pytest.raises(investigate.NotFound):
        investigate.systems(view, checkpoint_size=2**64)
    # a search reads through an index, never the whole table
    with sqlite3.connect(_sqlite(tmp_path)["SQLITE_DBNAME"]) as db:
        for column in ("actor", "type", "key_fp", "subject"):
            plan = " ".join(
                str(r[-1])
                for r in db.execute(
                    f"EXPLAIN QUERY PLAN SELECT idx FROM entries WHERE {column} = 'x' "
                    "AND idx > 5 ORDER BY idx LIMIT 10"
                )
            )
            assert "USING INDEX" in plan or "USING COVERING INDEX" in plan, (column, plan)


def test_search_on_postgres(postgres_schema: dict[str, str]) -> None:
    history = History(5)
    for _ in range(120):
        history.step()
    view = fed(open_view(postgres_schema), history.entries)
    assert _same_searches(view, history) > 15


def test_what_falls_due_audits_insurance_and_measures(tmp_path: Path) -> None:
    """A high-risk system in operation, compliant now: its audit ends in 10 h, its
    insurance in 30 h; an incident an hour ago wants a measure within 24 h. `due`
    names each with its deadline once the window reaches it; a violation is overdue."""
    history = History(1)
    history.now = T0
    subject = "system/alpha"
    history.add("SystemRegistered", subject, "bank", name="alpha", owner="bank", holder="bank",
                generates_synthetic_content=False)  # fmt: skip
    history.add("RiskClassified", subject, "bank", risk_level="high", autonomy="low",
                critical_ict=False)  # fmt: skip
    history.add("VersionDeployed", subject, "bank", version="1", artifact_sha256=SHAS[0])
    history.add("HumanOversightAssigned", subject, "bank", overseer="desk", can_override=True,
                can_stop=True)  # fmt: skip
    history.add("AuditCompleted", subject, "auditor", audited_version_sha256=SHAS[0],
                result="pass", valid_until=history.t(10))  # fmt: skip
    history.add("InsurancePolicyChanged", subject, "insurer", policy_number="P1",
                start=history.t(-1), end=history.t(30), status="bound")  # fmt: skip
    history.add("OperationStatusChanged", subject, "bank", status="in_operation", reason="go")
    history.add("IncidentReported", subject, "bank", incident_id="i1", aware_at=history.t(-1),
                harm_category="other", severity="minor")  # fmt: skip
    incident = len(history.entries) - 1
    view = fed(open_view(_sqlite(tmp_path)), history.entries)
    at = T0

    def due(hours: float) -> list[tuple[str, str, str | None]]:
        report = investigate.due(view, timedelta(hours=hours), at=at)
        assert report.overdue + report.due == len(report.items)
        return [(i.state, i.rule, i.deadline) for i in report.items]

    assert view.status("alpha", at=at).verdict == "at_risk"  # the measure is open
    assert due(5) == []
    audit_end, measure, insurance_end = (history.t(h) for h in (10, 23, 30))
    assert due(12) == [("due", "R3", audit_end)]
    assert due(24) == [("due", "R3", audit_end), ("due", "R5", measure)]
    assert due(48) == [
        ("due", "R3", audit_end),
        ("due", "R5", measure),
        ("due", "R2", insurance_end),
    ]
    report = investigate.due(view, timedelta(hours=48), at=at)
    assert report.items[1].evidence == [incident]
    # a day later the audit has ended: overdue, with the deadline it missed
    at = T0 + 24 * H
    assert due(1) == [("overdue", "R3", audit_end), ("overdue", "R5", measure)]
    assert due(7) == [
        ("overdue", "R3", audit_end),
        ("overdue", "R5", measure),
        ("due", "R2", insurance_end),
    ]
    with pytest.raises(investigate.NotFound, match="no system"):
        investigate.due(view, timedelta(hours=1), at=at, system="ghost")
    # the end of time: a clear refusal, never an overflow
    end = datetime(9999, 12, 31, 23, 59, tzinfo=UTC)
    with pytest.raises(investigate.BadQuery, match="beyond the year 9999"):
        investigate.due(view, timedelta(weeks=2), at=end)
    with pytest.raises(investigate.BadQuery, match="at most"):
        investigate.due(view, timedelta(days=10**6), at=at)


def test_verdicts_as_of_a_checkpoint(tmp_path: Path) -> None:
    """A checkpoint of size N covers the entries before its heads leaf at N-1: the
    verdicts as of it are those as of the last entry before N-1, judged when that
    entry was integrated (the claim of a bundle exported at that checkpoint)."""
    history = History(2)
    for _ in range(120):
        history.step()
    view = fed(open_view(_sqlite(tmp_path)), history.entries)
    for index in (40, 80, len(history.entries) - 1):
        # the heads leaf would be at index + 1, the checkpoint's size index + 2
        at_checkpoint = investigate.systems(view, checkpoint_size=index + 2)
        assert at_checkpoint == investigate.systems(view, at_index=index)
        assert {s.as_of_index for s in at_checkpoint} == {index}
        for s in at_checkpoint:
            assert investigate.system_status(view, s.system, checkpoint_size=index + 2) == s
    with pytest.raises(investigate.NotFound, match="no entries up to"):
        investigate.systems(view, checkpoint_size=len(history.entries) + 5)
    with pytest.raises(investigate.BadQuery, match="one of"):
        investigate.timeline(view, "alpha", at_index=3, checkpoint_size=5)
    with pytest.raises(investigate.NotFound, match="no system ghost"):
        investigate.timeline(view, "ghost")
    with pytest.raises(investigate.BadQuery, match="one of"):
        investigate.systems(view, at_index=3, checkpoint_size=5)
    with pytest.raises(investigate.NotFound, match="no system ghost"):
        investigate.system_status(view, "ghost")
