"""The domain state (eventsourcing) on its own: key lifecycle, roles, invariants, rollback.

These drive :class:`ledger.state.application.LedgerState` directly, with explicit
integration times, on eventsourcing's in-memory and SQLite persistence.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ledger.bus.client import sign_event
from ledger.bus.home import Home, init_home
from ledger.formats.dsse import parse_envelope
from ledger.formats.keys import ActorKey, generate
from ledger.law import events as ev
from ledger.law import rejections as errors
from ledger.law.rulebook import default_parameters
from ledger.state.application import Admitted, Batch, LedgerState
from ledger.state.domain import NAMESPACE, Rulebook
from tests.conftest import enrolment_fields, registration_fields

T0 = datetime(2026, 2, 1, 9, 0, tzinfo=UTC)


class World:
    """A ledger state with a regulator, helpers to sign and admit at chosen times."""

    def __init__(self, home: Home, env: dict[str, str] | None = None) -> None:
        self.home = home
        self.state = LedgerState(env, trust=home.trust())
        self.keys: dict[str, ActorKey] = {"regulator": home.regulator_key()}
        self.stored: list[tuple[int, bytes]] = []
        self.admit_all([home.genesis()], T0)

    def event(self, actor: str, cls: type[ev.Event], at: datetime, **fields: Any) -> bytes:
        key = self.keys[actor]
        return sign_event(
            cls(v=1, event_id=ev.new_event_id(), actor=actor, signed_at=at, **fields), key
        )

    def admit_all(self, envelopes: list[bytes], at: datetime) -> list[Admitted | Exception]:
        batch = self.state.begin()
        out: list[Admitted | Exception] = []
        for raw in envelopes:
            env = parse_envelope(raw)
            try:
                out.append(batch.admit(env, ev.decode_event(env.payload), at))
            except Exception as e:
                out.append(e)
        self.state.commit(batch)
        self.stored += [(a.entry.stream_sequence, a.entry.encoded) for a in batch.admitted]
        return out

    def admit(self, raw: bytes, at: datetime) -> Admitted:
        (result,) = self.admit_all([raw], at)
        if isinstance(result, Exception):
            raise result
        return result

    def refused(self, raw: bytes, at: datetime) -> str:
        (result,) = self.admit_all([raw], at)
        assert isinstance(result, errors.Rejection), result
        return result.code

    def enrol(self, actor: str, roles: list[str], at: datetime = T0) -> ActorKey:
        key = generate(actor)
        self.keys[actor] = key
        self.admit(
            self.event("regulator", ev.ActorEnrolled, at, **enrolment_fields(actor, roles, key)),
            at,
        )
        return key

    def register(self, owner: str, system: str, at: datetime = T0) -> None:
        self.admit(
            self.event(owner, ev.SystemRegistered, at, **registration_fields(owner, system)),
            at,
        )

    def rebuilt(self) -> LedgerState:
        fresh = LedgerState(trust=self.home.trust())
        fresh.replay(self.stored)
        return fresh


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(init_home(tmp_path / "home", origin="state.ailedger.kz/test", at=T0))


def deploy(w: World, actor: str, system: str, at: datetime, **kw: Any) -> bytes:
    fields: dict[str, Any] = {
        "subject": f"system/{system}",
        "version": "1",
        "artifact_sha256": "a" * 64,
    }
    fields.update(kw)
    return w.event(actor, ev.VersionDeployed, at, **fields)


def test_rotated_key_is_refused_after_its_deadline_and_the_new_key_works(world: World) -> None:
    old = world.enrol("bank", ["owner"])
    world.register("bank", "scorer")
    new = generate("bank")
    t1 = T0 + timedelta(days=1)
    world.admit(
        world.event(
            "bank",
            ev.KeyRotated,
            t1,
            subject="actor/bank",
            new_key=new.public_key_b64,
            old_key=old.public_key_b64,
            old_key_valid_until=t1 + timedelta(hours=1),
        ),
        t1,
    )
    world.admit(deploy(world, "bank", "scorer", t1), t1 + timedelta(minutes=30))  # old still valid
    assert world.refused(deploy(world, "bank", "scorer", t1), t1 + timedelta(hours=2)) == (
        "key_not_valid"
    )
    world.keys["bank"] = new
    world.admit(deploy(world, "bank", "scorer", t1), t1 + timedelta(hours=2))
    # rotating the old key again cannot push its deadline back out
    world.keys["bank"] = new
    later = generate("bank")
    world.admit(
        world.event(
            "regulator",
            ev.KeyRotated,
            t1 + timedelta(hours=3),
            subject="actor/bank",
            new_key=later.public_key_b64,
            old_key=new.public_key_b64,
            old_key_valid_until=t1 + timedelta(days=30),
        ),
        t1 + timedelta(hours=3),
    )
    actor = world.state.actor("bank")
    assert actor is not None
    assert actor.keys[old.fingerprint].valid_until == t1 + timedelta(hours=1)


def test_revoked_key_is_invalid_from_its_compromise_time_and_the_earliest_wins(
    world: World,
) -> None:
    key = world.enrol("bank", ["owner"])
    world.register("bank", "scorer")
    t1 = T0 + timedelta(days=2)
    revoke = {"subject": "actor/bank", "key": key.public_key_b64, "reason": "leaked"}
    world.admit(
        world.event(
            "regulator", ev.KeyRevoked, t1, compromised_at=t1 - timedelta(days=1), **revoke
        ),
        t1,
    )
    assert world.refused(deploy(world, "bank", "scorer", t1), t1) == "key_revoked"
    # a second revocation naming a later time does not move the first one
    world.admit(
        world.event(
            "regulator", ev.KeyRevoked, t1, compromised_at=t1 + timedelta(days=5), **revoke
        ),
        t1 + timedelta(minutes=1),
    )
    actor = world.state.actor("bank")
    assert actor is not None
    assert actor.keys[key.fingerprint].compromised_at == t1 - timedelta(days=1)


def test_suspended_auditor_cannot_audit_until_reinstated(world: World) -> None:
    world.enrol("bank", ["owner"])
    world.enrol("auditor", ["auditor"])
    world.register("bank", "scorer")

    def audit(at: datetime) -> bytes:
        return world.event(
            "auditor",
            ev.AuditCompleted,
            at,
            subject="system/scorer",
            scope="s",
            audited_version_sha256="a" * 64,
            result="pass",
            findings=[],
            report_sha256="b" * 64,
            valid_until=at + timedelta(days=365),
        )

    world.admit(
        world.event("regulator", ev.ActorSuspended, T0, subject="actor/auditor", reason="r"), T0
    )
    assert world.refused(audit(T0), T0) == "actor_suspended"
    world.admit(
        world.event("regulator", ev.ActorReinstated, T0, subject="actor/auditor", reason="r"), T0
    )
    world.admit(audit(T0), T0)


def test_retired_system_takes_only_regulator_decisions(world: World) -> None:
    world.enrol("bank", ["owner"])
    world.register("bank", "scorer")
    world.admit(
        world.event(
            "bank",
            ev.OperationStatusChanged,
            T0,
            subject="system/scorer",
            status="retired",
            reason="end of life",
        ),
        T0,
    )
    assert world.refused(deploy(world, "bank", "scorer", T0), T0) == "system_retired"
    world.admit(
        world.event(
            "regulator",
            ev.RiskClassified,
            T0,
            subject="system/scorer",
            risk_level="high",
            autonomy="low",
            critical_ict=False,
            rationale="regulator decision",
        ),
        T0,
    )


def test_only_the_issuing_insurer_changes_a_policy(world: World) -> None:
    world.enrol("bank", ["owner"])
    world.enrol("steppe", ["insurer"])
    world.enrol("rival", ["insurer"])
    world.register("bank", "scorer")

    def change(insurer: str, status: str) -> bytes:
        return world.event(
            insurer,
            ev.InsurancePolicyChanged,
            T0,
            subject="system/scorer",
            policy_number="P-1",
            coverage_tenge=1_000_000,
            start=T0,
            end=T0 + timedelta(days=365),
            status=status,
        )

    world.admit(change("steppe", "bound"), T0)
    assert world.refused(change("rival", "cancelled"), T0) == "not_policy_insurer"
    world.admit(change("steppe", "renewed"), T0)


def test_an_event_id_cannot_collide_with_another_aggregate(world: World) -> None:
    world.enrol("bank", ["owner"])
    world.register("bank", "scorer")
    from uuid import uuid5

    # An event id equal to the system aggregate's (public, name-based) id.
    colliding = str(uuid5(NAMESPACE, "system/scorer"))
    raw = sign_event(
        ev.VersionDeployed(
            v=1,
            event_id=colliding,
            actor="bank",
            subject="system/scorer",
            signed_at=T0,
            version="2",
            artifact_sha256="c" * 64,
        ),
        world.keys["bank"],
    )
    world.admit(raw, T0)
    world.admit(deploy(world, "bank", "scorer", T0, version="3"), T0)
    for state in (world.state, world.rebuilt()):
        system = state.system("scorer")
        assert system is not None and system.deployed_version == "3"
        record = state.event_record(colliding)
        assert record is not None and record.index == 3


def test_a_refused_new_policy_leaves_no_trace_in_the_batch(world: World) -> None:
    world.enrol("bank", ["owner"])
    t1 = T0 + timedelta(days=10)
    params = default_parameters()

    def policy(effective: datetime, policy_id: str = "rulebook") -> bytes:
        return world.event(
            "regulator",
            ev.PolicyAdopted,
            t1,
            subject=f"policy/{policy_id}",
            title="p2",
            effective_from=effective,
            parameters=params,
            legal_references=["x"],
        )

    results = world.admit_all(
        [
            policy(t1 - timedelta(days=1)),
            deploy(world, "bank", "none", t1),
            policy(t1, "p2"),
            policy(t1),
        ],
        t1,
    )
    assert isinstance(results[0], errors.PolicyRetroactive)
    assert isinstance(results[1], errors.SystemNotRegistered)
    # the rules read only the genesis rulebook's subject
    assert isinstance(results[2], errors.PolicyNotRead)
    assert isinstance(results[3], Admitted) and results[3].entry.prev is None
    rebuilt = world.rebuilt()
    assert rebuilt.get(Rulebook, Rulebook.create_id("p2")) is None
    rulebook = rebuilt.get(Rulebook, Rulebook.create_id("rulebook"))
    assert rulebook is not None and len(rulebook.versions) == 2


def test_any_failure_inside_a_handler_is_rolled_back(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Structural guarantee: a handler that changed state and then failed leaves nothing."""
    world.enrol("bank", ["owner"])
    world.register("bank", "scorer")
    original: Callable[..., None] = Batch._deploy  # type: ignore[attr-defined]

    def deploy_then_fail(self: Batch, event: ev.VersionDeployed, prov: Any) -> None:
        original(self, event, prov)
        if event.version == "boom":
            raise errors.SchemaViolation("failed after changing state")

    monkeypatch.setattr(Batch, "_deploy", deploy_then_fail)
    results = world.admit_all(
        [
            deploy(world, "bank", "scorer", T0, version="1"),
            deploy(world, "bank", "scorer", T0, version="boom"),
            deploy(world, "bank", "scorer", T0, version="2"),
        ],
        T0,
    )
    assert [type(r).__name__ for r in results] == ["Admitted", "SchemaViolation", "Admitted"]
    third = results[2]
    first = results[0]
    assert isinstance(first, Admitted) and isinstance(third, Admitted)
    assert third.entry.prev == first.entry.index  # the refused one left no chain link
    for state in (world.state, world.rebuilt()):
        system = state.system("scorer")
        assert system is not None and system.deployed_version == "2"
        assert system.chain_head == third.entry.index


def test_state_on_sqlite_survives_a_reopen_and_continues(tmp_path: Path) -> None:
    home = init_home(tmp_path / "home", origin="state.ailedger.kz/test", at=T0)
    env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(tmp_path / "s.db")}
    w = World(home, env)
    w.enrol("bank", ["owner"])
    w.register("bank", "scorer")
    position = w.state.position()
    w.state.close()
    reopened = LedgerState(env, trust=home.trust())
    assert reopened.position() == position == 3
    system = reopened.system("scorer")
    assert system is not None and system.owner == "bank" and system.chain_head == 2
    # replaying what it already has changes nothing (exactly once)
    assert reopened.replay(w.stored) == 0
    assert reopened.position() == 3
