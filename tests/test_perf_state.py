"""The state's fast paths decide and store exactly what the general ones do.

The transcoder writes eventsourcing's JSONTranscoder bytes; ``recorded`` answers
as a ``get`` would, on each store; a prefetched duplicate check judges as the
one-by-one check; a replay that meets a corrupt entry stops at it as before.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
import inspect
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar
from uuid import UUID, uuid4

import pytest
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import JSONTranscoder

from ledger.bus.home import init_home
from ledger.formats.dsse import parse_envelope, sign_envelope
from ledger.formats.entry import Entry
from ledger.formats.keys import generate
from ledger.formats.timeutil import format_time
from ledger.law import events as ev
from ledger.law import rejections as errors
from ledger.state.application import (
    SNAPSHOT_EVERY,
    AlreadyIntegrated,
    LedgerCorrupt,
    LedgerState,
    _without_timestamp,
    verify_now,
)
from ledger.state.domain import (
    RECORD_TOPIC,
    Actor,
    AISystem,
    EventRecord,
    Provenance,
    StateAggregate,
    _event_plan,
    _FastCommand,
)
from ledger.state.persistence import sqlite_env
from ledger.state.stored import events_in_order
from tests.conftest import enrolment_fields, registration_fields
from tests.test_projector import postgres_schema  # noqa: F401 - a fixture
from tests.test_state import World

T0 = datetime(2026, 2, 1, 9, 0, tzinfo=UTC)


def history(world: World) -> None:
    """Every kind of aggregate and of field: keys, lists, dicts, datetimes, texts."""
    world.enrol("bank", ["owner"])
    world.enrol("auditor", ["auditor"])
    world.register("bank", "scorer")
    t1 = T0 + timedelta(hours=1)
    world.admit(
        world.event(
            "bank",
            ev.VersionDeployed,
            t1,
            subject="system/scorer",
            version="2 — «тест» \u2028 \x7f",
            artifact_sha256="b" * 64,
        ),
        t1,
    )
    world.admit(
        world.event(
            "auditor",
            ev.AuditCompleted,
            t1,
            subject="system/scorer",
            scope="full",
            audited_version_sha256="b" * 64,
            result="pass",
            findings=[{"severity": "low", "text": 'quote " and \\ and é'}],
            report_sha256="c" * 64,
            valid_until=t1 + timedelta(days=365),
        ),
        t1,
    )


@pytest.fixture
def world_with_history(tmp_path: Path) -> World:
    home = init_home(tmp_path / "home", origin="state.ailedger.kz/test", at=T0)
    world = World(home)
    history(world)
    return world


@pytest.fixture
def sqlite_world(tmp_path: Path) -> World:
    home = init_home(tmp_path / "home", origin="state.ailedger.kz/test", at=T0)
    return World(home, sqlite_env(tmp_path / "state.sqlite"))


def test_the_fast_transcoder_writes_and_reads_the_bytes_of_jsontranscoder(
    sqlite_world: World,
) -> None:
    history(sqlite_world)
    state = sqlite_world.state
    fast = state.mapper.transcoder
    slow = JSONTranscoder()
    state.register_transcodings(slow)
    assert type(fast) is not JSONTranscoder
    notifications = state.recorder.select_notifications(1, 1000)
    assert len(notifications) > 10
    for n in notifications:
        decoded = slow.decode(n.state)
        assert fast.decode(n.state) == decoded
        assert fast.encode(decoded) == slow.encode(decoded) == n.state
    # What msgspec would write otherwise goes through the standard library.
    at = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    prov = Provenance(7, "e", "a", "k", at, at, "system/s")
    for value in [
        {"f": [1e16, 0.1, 1e-7, 2.5e300, -0.0]},
        {"big": 2**64, "neg": -(2**63) - 1, "ok": 2**64 - 1},
        {"keys": {1: "int", "s": "str"}},
        {"nested": [{"at": at, "p": prov}, (1, "two", None, True)]},
        {"text": '\x00\x1f\u2028é"\\'},
    ]:
        assert fast.encode(value) == slow.encode(value)
        assert fast.decode(slow.encode(value)) == slow.decode(slow.encode(value))
    with pytest.raises(TypeError):
        fast.encode({"x": object()})


def test_recorded_answers_as_a_get_would(sqlite_world: World) -> None:
    state = sqlite_world.state
    sqlite_world.enrol("bank", ["owner"])
    bank = state.actor("bank")
    assert bank is not None
    ids = [bank.id] + [r.id for r in _records(state)]
    assert len(ids) == 3
    unknown = [uuid4() for _ in range(1500)]  # more than one SQLite query's worth
    assert state.recorded(ids + unknown) == set(ids)
    assert state.recorded([]) == set()


def _records(state: LedgerState) -> list[EventRecord]:
    out = []
    for n in state.recorder.select_notifications(1, 1000):
        if n.topic == RECORD_TOPIC:
            record = state.record(UUID(str(n.originator_id)))
            assert record is not None
            out.append(record)
    return out


def test_recorded_and_digests_on_memory_sqlite_and_postgres(
    tmp_path: Path,
    postgres_schema: dict[str, str],  # noqa: F811
) -> None:
    home = init_home(tmp_path / "home", origin="state.ailedger.kz/test", at=T0)
    world = World(home)  # in memory
    history(world)
    states = [world.state]
    for env in (sqlite_env(tmp_path / "replayed.sqlite"), postgres_schema):
        replayed = LedgerState(env, trust=home.trust())
        assert replayed.replay(world.stored, commit_every=2) == len(world.stored)
        states.append(replayed)
    for state in states:
        records = _records(state)
        assert len(records) == len(world.stored) == 6
        ids = [r.id for r in records]
        assert state.recorded([*ids, uuid4(), uuid4()]) == set(ids)
    assert len({state.digest() for state in states}) == 1
    for state in states:
        state.close()


def test_a_prefetched_duplicate_check_judges_as_one_by_one(sqlite_world: World) -> None:
    w = sqlite_world
    w.enrol("bank", ["owner"])
    w.register("bank", "scorer")
    t1 = T0 + timedelta(minutes=5)
    key = w.keys["bank"]

    def deploy(version: str, event_id: str) -> bytes:
        from ledger.bus.client import sign_event

        return sign_event(
            ev.VersionDeployed(
                v=1,
                event_id=event_id,
                actor="bank",
                signed_at=t1,
                subject="system/scorer",
                version=version,
                artifact_sha256="a" * 64,
            ),
            key,
        )

    ids = [ev.new_event_id() for _ in range(4)]
    w.admit_all([deploy("1", ids[0]), deploy("2", ids[1])], t1)
    submissions = [
        deploy("1", ids[0]),  # resubmitted: its receipt
        deploy("other", ids[1]),  # the same id, other bytes
        deploy("3", ids[2]),  # new
        deploy("3", ids[2]),  # new, twice in the batch
        deploy("4", ids[3]),  # new
    ]

    def judged(prefetch: bool) -> list[str]:
        batch = w.state.begin()
        if prefetch:
            batch.prefetch([*ids, "not an event id"])
        out = []
        for raw in submissions:
            env = parse_envelope(raw)
            try:
                admitted = batch.admit(env, ev.decode_event(env.payload), t1)
                out.append(f"admitted {admitted.entry.index}")
            except AlreadyIntegrated as e:
                out.append(f"receipt of {e.record.index}")
            except errors.Rejection as e:
                out.append(e.code)
        return out

    expected = [
        "receipt of 3",
        "duplicate_event_id",
        "admitted 5",
        "receipt of 5",
        "admitted 6",
    ]
    assert judged(prefetch=False) == expected
    assert judged(prefetch=True) == expected


def test_a_replay_stops_at_a_corrupt_entry_after_the_entries_before_it(
    sqlite_world: World, tmp_path: Path
) -> None:
    w = sqlite_world
    owner = generate("bank")
    w.keys["bank"] = owner
    raw = [
        w.event("regulator", ev.ActorEnrolled, T0, **enrolment_fields("bank", ["owner"], owner)),
        w.event("bank", ev.SystemRegistered, T0, **registration_fields("bank", "scorer")),
    ]
    w.admit_all(raw, T0)
    stored = list(w.stored)
    assert len(stored) == 3
    broken = [*stored[:2], (stored[2][0], stored[2][1][:-5] + b"xxxxx")]
    fresh = LedgerState(sqlite_env(tmp_path / "fresh.sqlite"), trust=w.home.trust())
    seen: list[int] = []
    for commit_every, position in [(3, 0), (2, 2)]:
        # the entries before the corrupt one are applied (a monitor names the
        # offending entry after the last one it saw), the batch holding it is not
        # recorded, the batches before it are
        seen.clear()
        with pytest.raises(LedgerCorrupt, match="LEDGER #3"):
            fresh.replay(broken, on_entry=lambda e: seen.append(e.index), commit_every=commit_every)
        assert seen == [0, 1]
        assert fresh.position() == position
    fresh.replay(stored)
    assert fresh.digest() == w.state.digest()
    assert w.rebuilt().digest() == w.state.digest()


def test_an_event_record_is_one_row_read_back_as_itself(world_with_history: World) -> None:
    state = world_with_history.state
    stored = world_with_history.stored
    rows = state.recorder.select_notifications(1, 1000)
    records = [n for n in rows if n.topic == RECORD_TOPIC]
    # one record per entry, beside the entries' own aggregate events
    assert len(records) == len(stored) == 6
    assert len(rows) - len(records) >= len(stored)
    for n in records:
        record = state.record(UUID(str(n.originator_id)))
        assert record is not None and record.id == UUID(str(n.originator_id))
        assert state.event_record(record.event_id) == record
        entry = Entry.parse(stored[record.index][1])
        env = parse_envelope(entry.envelope)
        assert record.event_id == ev.decode_event(env.payload).event_id
        assert record.envelope_sha256 == hashlib.sha256(entry.envelope).hexdigest()
        assert record.leaf_hash == base64.b64encode(entry.leaf_hash).decode()
        assert (record.subject, record.integrated) == (entry.subject, entry.integrated)
    assert state.event_record(ev.new_event_id()) is None
    # a record is no aggregate, an aggregate no record: either asked for is corrupt
    bank = state.actor("bank")
    assert bank is not None
    with pytest.raises(LedgerCorrupt, match="not an EventRecord"):
        state.record(bank.id)
    with pytest.raises(LedgerCorrupt, match="is a EventRecord, not Actor"):
        state.get(Actor, UUID(str(records[-1].originator_id)))


def _mutable_parts(obj: object) -> dict[int, object]:
    """Every mutable object reachable from ``obj`` (immutable values and frozen
    containers are walked through, not counted)."""
    immutable = (str, int, bool, float, bytes, type(None), datetime, UUID)
    out: dict[int, object] = {}
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, immutable) or id(o) in out:
            continue
        frozen = isinstance(o, (tuple, frozenset)) or (
            dataclasses.is_dataclass(o) and type(o).__dataclass_params__.frozen  # type: ignore[attr-defined]
        )
        if not frozen:
            out[id(o)] = o
        if isinstance(o, dict):
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, (list, tuple, set, frozenset)):
            stack.extend(o)
        if hasattr(o, "__dict__"):
            stack.extend(vars(o).values())
    return out


def test_a_copy_of_an_aggregate_shares_nothing_mutable_with_it(world_with_history: World) -> None:
    state = world_with_history.state
    aggregates = []
    for n in state.recorder.select_notifications(1, 1000):
        if n.topic == RECORD_TOPIC:
            continue  # immutable, shared by copies
        agg = state.repository.get(n.originator_id)
        agg.trigger_event(type(agg).Event)  # a pending event too
        aggregates.append(agg)
    kinds = {type(a).__name__ for a in aggregates}
    assert kinds >= {"LedgerInfo", "Actor", "KeyBinding", "Rulebook", "AISystem", "Audit"}
    for agg in aggregates:
        copied = copy.deepcopy(agg)
        assert copied == agg
        assert type(copied) is type(agg)
        shared = _mutable_parts(agg).keys() & _mutable_parts(copied).keys()
        assert not shared, (type(agg).__name__, [type(_mutable_parts(agg)[i]) for i in shared])


def test_a_state_with_a_tiny_cache_loads_what_it_evicted_and_judges_alike(
    tmp_path: Path,
) -> None:
    home = init_home(tmp_path / "home", origin="state.ailedger.kz/test", at=T0)
    env = {**sqlite_env(tmp_path / "tiny.sqlite"), "AGGREGATE_CACHE_MAXSIZE": "2"}
    tiny = World(home, env)
    history(tiny)
    t2 = T0 + timedelta(hours=2)
    # judged on aggregates loaded back from the store: an auditor deploys nothing,
    # and an entry's own envelope is already integrated
    assert tiny.refused(deploy_of(tiny, "auditor", t2), t2) == "role_not_allowed"
    last = Entry.parse(tiny.stored[-1][1])
    (again,) = tiny.admit_all([last.envelope], t2)
    assert isinstance(again, AlreadyIntegrated) and again.record.index == last.index
    tiny.admit(deploy_of(tiny, "bank", t2), t2)

    roomy = LedgerState(sqlite_env(tmp_path / "roomy.sqlite"), trust=home.trust())
    roomy.replay(tiny.stored)
    assert roomy.digest() == tiny.state.digest()
    times = {"_created_on", "_modified_on"}
    for n in tiny.state.recorder.select_notifications(1, 1000):
        aggregate_id = UUID(str(n.originator_id))
        if n.topic == RECORD_TOPIC:
            assert tiny.state.record(aggregate_id) == roomy.record(aggregate_id) is not None
            continue
        a = tiny.state.get(StateAggregate, aggregate_id)
        b = roomy.get(StateAggregate, aggregate_id)
        assert a is not None and b is not None
        assert type(a) is type(b)
        assert {k: v for k, v in vars(a).items() if k not in times} == {
            k: v for k, v in vars(b).items() if k not in times
        }
    assert tiny.state.record(uuid4()) is None


def deploy_of(world: World, actor: str, at: datetime, version: str = "3") -> bytes:
    return world.event(
        actor,
        ev.VersionDeployed,
        at,
        subject="system/scorer",
        version=version,
        artifact_sha256="d" * 64,
    )


def test_an_event_triggered_directly_is_the_one_eventsourcing_builds(
    world_with_history: World,
) -> None:
    state = world_with_history.state
    at = T0 + timedelta(days=1)
    prov = Provenance(99, "e-99", "bank", "k", at, at, "system/scorer")
    system = state.system("scorer")
    actor = state.actor("bank")
    assert system is not None and actor is not None
    commands: list[tuple[StateAggregate, str, dict[str, object]]] = [
        (system, "deploy_version", {"version": "9", "artifact_sha256": "e" * 64}),
        (system, "change_status", {"status": "suspended", "reason": "why"}),
        (system, "record_incident", {"incident_id": "i-1"}),
        (system, "record_measure", {"incident_id": None, "measure": "m"}),
        (
            system,
            "attest_labeling",
            {"content_types": ["text"], "marking_method": "m", "visible_warning": True},
        ),
        (actor, "suspend", {"reason": "r"}),
    ]
    without = {"timestamp", "_modified_on"}
    for agg, command, kwargs in commands:
        fast, slow = copy.deepcopy(agg), copy.deepcopy(agg)
        getattr(fast, command)(**kwargs, prov=prov)
        (event,) = fast.collect_events()
        # eventsourcing's own trigger_event, with what the decorator passes it
        Aggregate.trigger_event(slow, type(event), **kwargs, prov=prov)
        (expected,) = slow.collect_events()
        assert type(event) is type(expected)
        assert _event_plan(type(event)) is not None  # the direct path was taken
        assert list(vars(event)) == list(vars(expected))  # same order: same bytes
        assert {k: v for k, v in vars(event).items() if k not in without} == {
            k: v for k, v in vars(expected).items() if k not in without
        }
        assert {k: v for k, v in vars(fast).items() if k not in without} == {
            k: v for k, v in vars(slow).items() if k not in without
        }
        assert fast.modified_on == event.timestamp
        mapper = state.mapper
        stored, again = mapper.to_stored_event(event), mapper.to_stored_event(expected)
        assert stored.topic == again.topic and stored.originator_version == agg.version + 1
        assert _without_timestamp(stored.state) == _without_timestamp(again.state)


def test_a_system_loaded_from_its_snapshot_is_the_one_its_events_give(tmp_path: Path) -> None:
    home = init_home(tmp_path / "home", origin="state.ailedger.kz/test", at=T0)
    env = {**sqlite_env(tmp_path / "tiny.sqlite"), "AGGREGATE_CACHE_MAXSIZE": "1"}
    tiny = World(home, env)
    history(tiny)
    system_id = AISystem.create_id("scorer")
    for i in range(2 * SNAPSHOT_EVERY + 3):  # one batch each: loaded back every time
        at = T0 + timedelta(hours=2, minutes=i)
        tiny.admit(deploy_of(tiny, "bank", at, version=f"v{i}"), at)
    assert tiny.state.snapshots is not None
    snapshots = list(tiny.state.snapshots.recorder.select_events(system_id))
    assert [s.originator_version for s in snapshots] == [SNAPSHOT_EVERY, 2 * SNAPSHOT_EVERY]

    class WithoutSnapshots(LedgerState):
        snapshotting_intervals: ClassVar[dict[Any, int]] = {}

    plain = WithoutSnapshots(sqlite_env(tmp_path / "plain.sqlite"), trust=home.trust())
    plain.replay(tiny.stored)
    assert plain.snapshots is None
    assert plain.digest() == tiny.state.digest()  # snapshots are not state
    loaded, replayed = tiny.state.get(AISystem, system_id), plain.get(AISystem, system_id)
    assert loaded is not None and replayed is not None
    assert loaded.version == replayed.version > 2 * SNAPSHOT_EVERY
    assert loaded.deployed_version == f"v{2 * SNAPSHOT_EVERY + 2}"
    times = {"_created_on", "_modified_on"}
    assert {k: v for k, v in vars(loaded).items() if k not in times} == {
        k: v for k, v in vars(replayed).items() if k not in times
    }
    # judged alike on it: the auditor may not deploy, the owner may
    t3 = T0 + timedelta(hours=3)
    assert tiny.refused(deploy_of(tiny, "auditor", t3), t3) == "role_not_allowed"
    tiny.admit(deploy_of(tiny, "bank", t3, version="last"), t3)


def test_a_fresh_store_replays_to_the_same_state_without_looking_up_absent_aggregates(
    tmp_path: Path,
) -> None:
    """assume_fresh (a rebuild): aggregates it has not recorded are absent without a
    query; evicted ones (a cache of 1) are still loaded; the rules still apply."""
    home = init_home(tmp_path / "home", origin="state.ailedger.kz/test", at=T0)
    w = World(home, sqlite_env(tmp_path / "notary.sqlite"))
    history(w)
    for i in range(SNAPSHOT_EVERY + 3):
        at = T0 + timedelta(hours=2, minutes=i)
        w.admit(deploy_of(w, "bank", at, version=f"v{i}"), at)
    tiny = {"AGGREGATE_CACHE_MAXSIZE": "1"}
    plain = LedgerState({**sqlite_env(tmp_path / "plain.sqlite"), **tiny}, trust=home.trust())
    fresh = LedgerState({**sqlite_env(tmp_path / "fresh.sqlite"), **tiny}, trust=home.trust())
    fresh.assume_fresh()
    for state in (plain, fresh):
        for start in range(0, len(w.stored), 5):
            run = w.stored[start : start + 5]
            state.replay(run, first_index=run[0][0] - 1)
    assert fresh.digest() == plain.digest() == w.state.digest()
    # what the store holds (records aside, never loaded as aggregates) is known recorded
    rows = list(events_in_order(fresh.recorder))
    aggregates = {UUID(oid) for oid, _, topic, _ in rows if topic != RECORD_TOPIC}
    assert fresh._fresh is not None and aggregates <= fresh._fresh
    assert fresh.actor("nobody") is None
    # a rule still decides: the same entry again, as the next one, is corrupt
    again = Entry.parse(w.stored[-1][1])
    dup = Entry(again.index + 1, again.integrated, again.subject, again.index, again.envelope)
    with pytest.raises(LedgerCorrupt, match="breaks a rule"):
        fresh.replay([(len(w.stored) + 1, dup.encoded)], first_index=dup.index)
    # a store with anything in it is never assumed fresh
    with pytest.raises(LedgerCorrupt, match="not empty"):
        LedgerState(sqlite_env(tmp_path / "fresh.sqlite"), trust=home.trust()).assume_fresh()


def test_a_command_called_with_its_fields_skips_only_eventsourcings_binding(
    world_with_history: World,
) -> None:
    """_FastCommand: keywords that are exactly the event's fields go straight to
    trigger_event; positional arguments take eventsourcing's binding; both record the
    same event and leave the same aggregate."""
    system = world_with_history.state.system("scorer")
    assert system is not None
    assert isinstance(inspect.getattr_static(AISystem, "deploy_version"), _FastCommand)
    at = T0 + timedelta(days=2)
    prov = Provenance(98, "e-98", "bank", "k", at, at, "system/scorer")
    fast, slow = copy.deepcopy(system), copy.deepcopy(system)
    fast.deploy_version(version="7", artifact_sha256="f" * 64, prov=prov)
    slow.deploy_version("7", "f" * 64, prov)  # eventsourcing's own path
    (a,), (b,) = fast.collect_events(), slow.collect_events()
    without = {"timestamp", "_modified_on"}
    assert type(a) is type(b) is AISystem.VersionDeployed
    assert {k: v for k, v in vars(a).items() if k != "timestamp"} == {
        k: v for k, v in vars(b).items() if k != "timestamp"
    }
    assert {k: v for k, v in vars(fast).items() if k not in without} == {
        k: v for k, v in vars(slow).items() if k not in without
    }
    with pytest.raises(TypeError):  # an unknown keyword is still eventsourcing's error
        fast.deploy_version(version="8", artifact_sha256="f" * 64, prov=prov, extra=1)


def test_sealed_replays_decode_payloads_as_admitted_and_a_monitor_strictly(
    world_with_history: World,
) -> None:
    """A replay of sealed entries (the default, trust_hinted_key) decodes payloads with
    msgspec alone: the same state as a monitor's replay, which verifies signatures and
    decodes strictly, and refuses what the notary never admits (a time not in Z)."""
    w = world_with_history
    strict = LedgerState(trust=w.home.trust())
    strict.replay(w.stored, signatures=verify_now)
    sealed = LedgerState(trust=w.home.trust())
    sealed.replay(w.stored)
    assert sealed.digest() == strict.digest() == w.state.digest()

    at = T0 + timedelta(days=3)
    payload = parse_envelope(deploy_of(w, "bank", at)).payload
    stamp = format_time(at).encode()
    assert payload.count(stamp) == 1
    lax = sign_envelope(payload.replace(stamp, stamp[:-1] + b"+00:00"), w.keys["bank"])
    system = w.state.system("scorer")
    assert system is not None and w.state.size is not None
    entry = Entry(w.state.size, at, "system/scorer", system.chain_head, lax)
    message = (w.stored[-1][0] + 1, entry.encoded)
    with pytest.raises(LedgerCorrupt, match="not RFC 3339 UTC ending in Z"):
        strict.replay([message], signatures=verify_now)
    assert sealed.replay([message]) == 1  # what a seal vouches for is not re-judged here


def test_a_chunk_of_runs_is_one_batch_with_the_state_of_a_batch_per_run(
    world_with_history: World, tmp_path: Path
) -> None:
    """replay_runs: runs separated by LEDGER messages that are not applied (here two
    foreign messages: sequences skipped, indexes go on) in one transaction, the same
    state as one replay per run; resumed mid-chunk, what was applied is skipped; a run
    that goes backwards is corrupt."""
    w = world_with_history
    home = w.home
    cut = len(w.stored) // 2
    first = w.stored[:cut]
    second = [(seq + 2, data) for seq, data in w.stored[cut:]]
    runs = [(0, first), (cut, second)]
    per_run = LedgerState(sqlite_env(tmp_path / "per-run.sqlite"), trust=home.trust())
    for first_index, run in runs:
        per_run.replay(run, first_index=first_index, commit_every=len(run))
    chunk = LedgerState(sqlite_env(tmp_path / "chunk.sqlite"), trust=home.trust())
    assert chunk.replay_runs(runs) == len(w.stored)
    assert chunk.digest() == per_run.digest()
    assert chunk.position() == second[-1][0] and chunk.size == len(w.stored)

    resumed = LedgerState(sqlite_env(tmp_path / "resumed.sqlite"), trust=home.trust())
    assert resumed.replay_runs([(0, first[:3])]) == 3
    assert resumed.replay_runs(runs) == len(w.stored) - 3
    assert resumed.digest() == per_run.digest()
    assert resumed.replay_runs(runs) == 0 and resumed.size == len(w.stored)

    backwards = LedgerState(sqlite_env(tmp_path / "backwards.sqlite"), trust=home.trust())
    with pytest.raises(LedgerCorrupt, match="is not after"):
        backwards.replay_runs([(0, first), (cut - 1, second)])
    assert backwards.position() == 0  # nothing of the chunk recorded
