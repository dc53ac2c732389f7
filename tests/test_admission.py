"""One admission judgement, four judges: the same cases through the pure module
(:mod:`ledger.law.admission`), the notary (a real submission to a real
nats-server), the offline verifier (a bundle holding the entry, or forged with
the log key for a refused one) and the read model's timeline. All agree.

The cases form one ledger's history, in order (admitted cases change what
later ones are judged against), so one ledger and one nats-server serve them
all. Each case is judged once by every judge; the tests below compare.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from eventsourcing.persistence import Tracking

from ledger.bus.client import LedgerClient, SubmissionRejected, sign_event
from ledger.bus.home import Home, init_home
from ledger.formats import strictjson
from ledger.formats.dsse import parse_envelope
from ledger.formats.entry import Entry
from ledger.formats.keys import ActorKey, generate
from ledger.formats.timeutil import SimulatedClock
from ledger.law import events as ev
from ledger.law.admission import KEY_CODES, Admission, Judgement, Request
from ledger.law.rulebook import default_parameters
from ledger.verify.bundle import VerificationError, verify_bundle
from ledger.views.store import open_view
from tests.conftest import ORIGIN, Harness, authorized_server, running_notary, serving
from tests.test_verify import export, forged_bundle, ledger_entries

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Pub:
    """The public key of a key in the test's key table."""

    key: str


@dataclass(frozen=True)
class At:
    """A time, in minutes after T0."""

    minutes: int


@dataclass(frozen=True)
class Case:
    name: str
    minutes: int  # integration time: T0 + minutes
    key: str  # the key that signs (its actor may differ from the payload's)
    actor: str  # payload.actor
    type: type[ev.Event]
    subject: str
    fields: dict[str, Any]
    expect: str  # "" admitted, or the reason code

    def __str__(self) -> str:
        return self.name


def enrol(minutes: int, actor: str, roles: list[str], key: str, expect: str = "") -> Case:
    return Case(
        f"regulator enrols {actor} ({', '.join(roles)})" + (f" -> {expect}" if expect else ""),
        minutes,
        "regulator",
        "regulator",
        ev.ActorEnrolled,
        f"actor/{actor}",
        {"legal_name": actor, "bin": "123456789012", "roles": roles, "public_keys": [Pub(key)]},
        expect,
    )


def deploy(
    name: str, minutes: int, key: str, actor: str, expect: str, system: str = "scorer"
) -> Case:
    fields = {"version": f"v{minutes}", "artifact_sha256": "a" * 64}
    return Case(name, minutes, key, actor, ev.VersionDeployed, f"system/{system}", fields, expect)


def classify(name: str, minutes: int, key: str, actor: str, expect: str) -> Case:
    fields = {"risk_level": "high", "autonomy": "medium", "critical_ict": False, "rationale": "r"}
    return Case(name, minutes, key, actor, ev.RiskClassified, "system/scorer", fields, expect)


#: The key each actor signs with when a case does not say.
KEY_OF = {"bank": "bank1"}


def register(name: str, minutes: int, system: str, owner: str, holder: str, expect: str) -> Case:
    fields = {
        "name": system,
        "purpose": "p",
        "sector": "finance",
        "owner": owner,
        "holder": holder,
        "generates_synthetic_content": False,
    }
    key = KEY_OF.get(owner, owner)
    return Case(name, minutes, key, owner, ev.SystemRegistered, f"system/{system}", fields, expect)


def audit(name: str, minutes: int, expect: str, system: str = "scorer") -> Case:
    fields = {
        "scope": "full",
        "audited_version_sha256": "a" * 64,
        "result": "pass",
        "findings": [],
        "report_sha256": "b" * 64,
        "valid_until": At(60 * 24 * 365),
    }
    return Case(
        name, minutes, "auditor", "auditor", ev.AuditCompleted, f"system/{system}", fields, expect
    )


def insurance(name: str, minutes: int, insurer: str, expect: str) -> Case:
    fields = {
        "policy_number": "P-1",
        "coverage_tenge": 1_000_000,
        "start": At(0),
        "end": At(60 * 24 * 365),
        "status": "bound",
    }
    return Case(
        name, minutes, insurer, insurer, ev.InsurancePolicyChanged, "system/scorer", fields, expect
    )


def adopt(name: str, minutes: int, policy_id: str, expect: str) -> Case:
    fields = {
        "title": "rulebook v2",
        "effective_from": At(minutes + 60),
        "parameters": msgspec.convert(default_parameters(), ev.RulebookParameters),
        "legal_references": [],
    }
    subject = f"policy/{policy_id}"
    return Case(name, minutes, "regulator", "regulator", ev.PolicyAdopted, subject, fields, expect)


def by_regulator(name: str, minutes: int, cls: type[ev.Event], actor: str, **fields: Any) -> Case:
    return Case(name, minutes, "regulator", "regulator", cls, f"actor/{actor}", fields, "")


#: The history, in ledger order. Keys: "bank1" and "bank2" are the bank's first
#: and rotated-in keys, "stranger" a bank key never enrolled, "ghost" a key of an
#: actor never enrolled.
CASES: list[Case] = [
    enrol(1, "bank", ["owner"], "bank1"),
    enrol(2, "transit", ["holder"], "transit"),
    enrol(3, "auditor", ["auditor"], "auditor"),
    enrol(4, "insurer", ["insurer"], "insurer"),
    enrol(5, "insurer2", ["insurer"], "insurer2"),
    enrol(6, "media", ["owner"], "media"),
    register("owner registers a system operated by a holder", 10, "scorer", "bank", "transit", ""),
    register("media registers its own system", 11, "summariser", "media", "media", ""),
    register(
        "a registration naming a holder not enrolled as one",
        12,
        "scorer2",
        "bank",
        "auditor",
        "party_not_enrolled",
    ),
    register(
        "a system registered twice", 13, "scorer", "bank", "transit", "system_already_registered"
    ),
    deploy("unknown actor", 20, "ghost", "ghost", "unknown_actor"),
    deploy("unknown key of an enrolled actor", 21, "stranger", "bank", "unknown_key"),
    deploy("another actor's key", 22, "insurer", "bank", "signer_not_actor"),
    deploy("about an unregistered system", 23, "bank1", "bank", "system_not_registered", "nowhere"),
    deploy("owner deploys", 30, "bank1", "bank", ""),
    deploy("holder deploys", 31, "transit", "transit", ""),
    deploy("stranger: another owner about the system", 32, "media", "media", "not_system_party"),
    classify("holder signs what only an owner may", 33, "transit", "transit", "role_not_allowed"),
    classify("wrong role: an insurer classifies", 34, "insurer", "insurer", "role_not_allowed"),
    classify("owner classifies", 35, "bank1", "bank", ""),
    classify("regulator overrides the classification", 36, "regulator", "regulator", ""),
    Case(
        "an owner may not enrol actors",
        37,
        "bank1",
        "bank",
        ev.ActorEnrolled,
        "actor/helper",
        {
            "legal_name": "h",
            "bin": "123456789012",
            "roles": ["owner"],
            "public_keys": [Pub("ghost")],
        },
        "role_not_allowed",
    ),
    insurance("insurer binds a policy", 40, "insurer", ""),
    insurance("another insurer changes that policy", 41, "insurer2", "not_policy_insurer"),
    audit("auditor audits", 50, ""),
    by_regulator("regulator suspends the auditor", 51, ev.ActorSuspended, "auditor", reason="r"),
    audit("suspended auditor audits", 52, "actor_suspended"),
    by_regulator("regulator reinstates the auditor", 53, ev.ActorReinstated, "auditor", reason="r"),
    audit("reinstated auditor audits", 54, ""),
    adopt("regulator adopts a new version of the genesis rulebook", 55, "rulebook", ""),
    adopt("a policy id the rules do not read", 56, "other", "policy_not_read"),
    Case(
        "owner rotates its own key, the old one valid 60 minutes more",
        100,
        "bank1",
        "bank",
        ev.KeyRotated,
        "actor/bank",
        {"new_key": Pub("bank2"), "old_key": Pub("bank1"), "old_key_valid_until": At(160)},
        "",
    ),
    deploy("rotated-out key before its valid-until", 130, "bank1", "bank", ""),
    deploy("rotated-in key", 131, "bank2", "bank", ""),
    deploy("rotated-out key after its valid-until", 170, "bank1", "bank", "key_not_valid"),
    Case(
        "rotating out a key already rotated out",
        171,
        "bank2",
        "bank",
        ev.KeyRotated,
        "actor/bank",
        {"new_key": Pub("ghost"), "old_key": Pub("bank1"), "old_key_valid_until": At(200)},
        "key_not_valid",
    ),
    Case(
        "an owner rotates another actor's key",
        172,
        "media",
        "media",
        ev.KeyRotated,
        "actor/bank",
        {"new_key": Pub("ghost"), "old_key": Pub("bank2"), "old_key_valid_until": At(200)},
        "role_not_allowed",
    ),
    enrol(173, "copycat", ["owner"], "bank2", "key_in_use"),
    Case(
        "owner retires the system",
        300,
        "bank2",
        "bank",
        ev.OperationStatusChanged,
        "system/scorer",
        {"status": "retired", "reason": "r"},
        "",
    ),
    deploy("owner deploys on a retired system", 301, "bank2", "bank", "system_retired"),
    classify("regulator decides about a retired system", 302, "regulator", "regulator", ""),
    audit("auditor audits before its key's compromise", 400, "", "summariser"),
    audit("auditor audits after the compromise, not yet known", 420, "", "summariser"),
    Case(
        "regulator revokes the auditor's key, compromised at minute 410",
        440,
        "regulator",
        "regulator",
        ev.KeyRevoked,
        "actor/auditor",
        {"key": Pub("auditor"), "compromised_at": At(410), "reason": "leaked"},
        "",
    ),
    audit("revoked key after its compromise time", 450, "key_revoked", "summariser"),
]


# --- running every case through every judge ---------------------------------------------


@dataclass
class Outcome:
    """What each judge said of one case."""

    index: int  # the entry's index (given by the notary, or of the forged entry)
    pure: Judgement
    notary: str  # "" for a receipt, else str(SubmissionRejected): "<code>: <detail>"
    notary_code: str
    verifier: VerificationError | None  # None: the bundle verified
    timeline: str | None  # the verification column (None: not on a system's timeline)


@dataclass
class Run:
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    entries: list[Entry] = field(default_factory=list)
    revealed: dict[int, tuple[int, datetime] | None] = field(default_factory=dict)
    verifier_at_end: VerificationError | None = None
    timeline_at_end: dict[int, str] = field(default_factory=dict)


def request_of(entry: Entry) -> Request:
    env = parse_envelope(entry.envelope)
    p = strictjson.loads(env.payload)
    key = env.keyid_fingerprint
    return Request(
        p["type"], p["actor"], entry.subject, key, entry.integrated, p, entry.index, env.keyid
    )


def replayed(leaves: list[Any]) -> Admission:
    """The pure state machine fed the ledger: it admits every entry the notary did."""
    state = Admission()
    for entry in only_entries(leaves):
        request = request_of(entry)
        if request.type == "LedgerGenesis":
            state.apply(request)
            continue
        judgement = state.admit(request)
        assert judgement.admitted, (entry.index, str(judgement))
    return state


def resolve(value: Any, keys: dict[str, ActorKey]) -> Any:
    if isinstance(value, Pub):
        return keys[value.key].public_key_b64
    if isinstance(value, At):
        return T0 + timedelta(minutes=value.minutes)
    if isinstance(value, list):
        return [resolve(v, keys) for v in value]
    return value


def envelope_of(case: Case, keys: dict[str, ActorKey], at: datetime) -> bytes:
    fields = {name: resolve(value, keys) for name, value in case.fields.items()}
    event = case.type(
        v=1,
        event_id=ev.new_event_id(),
        actor=case.actor,
        subject=case.subject,
        signed_at=at,
        **fields,
    )
    key = keys[case.key]
    if key.actor == case.actor:
        return sign_event(event, key)
    # the payload names one actor, another actor's key signs (its key id says whose)
    posing = ActorKey(case.actor, key.private_key)
    return sign_event(event, posing).replace(posing.keyid.encode(), key.keyid.encode())


def only_entries(leaves: list[Any]) -> list[Entry]:
    """The entries of LEDGER's leaves: the notary's heads leaves are about no subject."""
    return [e for e in leaves if isinstance(e, Entry)]


def timeline_of(leaves: list[Any], path: Path, system: str) -> dict[int, str]:
    entries = only_entries(leaves)
    view = open_view({"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)})
    view.process_event(
        [(e.index + 1, e.encoded) for e in entries], Tracking("LEDGER", entries[-1].index + 1)
    )
    return {row.index: row.verification for row in view.timeline(system)}


def verified(bundle: bytes | dict[str, Any], home: Home) -> VerificationError | None:
    data = bundle if isinstance(bundle, bytes) else json.dumps(bundle).encode()
    try:
        verify_bundle(data, home.trust())
    except VerificationError as e:
        return e
    return None


def all_chains(leaves: list[Any]) -> dict[str, int]:
    return {e.subject: e.index for e in only_entries(leaves)}


async def judge_case(
    h: Harness,
    client: LedgerClient,
    clock: SimulatedClock,
    keys: dict[str, ActorKey],
    case: Case,
    tmp: Path,
) -> Outcome:
    at = T0 + timedelta(minutes=case.minutes)
    clock.set(at)
    before = await ledger_entries(h)
    envelope = envelope_of(case, keys, at)
    # (a) the pure module, fed the ledger so far, judging the entry as it would be integrated
    env = parse_envelope(envelope)
    signer = keys[case.key].fingerprint
    payload = strictjson.loads(env.payload)
    request = Request(
        case.type.__name__, case.actor, case.subject, signer, at, payload, len(before), env.keyid
    )
    pure = replayed(before).judge(request)
    # (b) the notary
    try:
        receipt = await client.submit_signed(envelope)
        notary, notary_code, index = "", "", receipt.index
    except SubmissionRejected as e:
        notary, notary_code, index = str(e), e.code, len(before)
    # (c) the offline verifier, (d) the timeline
    kind, _, ident = case.subject.partition("/")
    if not notary_code:
        entries = await ledger_entries(h)
        last = only_entries(entries)[-1]
        assert last.index == index and last.integrated == at
        bundle: bytes | dict[str, Any] = await export(h, subjects=[case.subject])
    else:
        prev = max(
            (e.index for e in only_entries(before) if e.subject == case.subject), default=None
        )
        forged = Entry(index, at, case.subject, prev, envelope)
        entries = [*before, forged]
        bundle = forged_bundle(h, entries, all_chains(entries))
    verifier = verified(bundle, h.home)
    timeline = None
    if kind == "system":
        timeline = timeline_of(entries, tmp / f"view-{case.minutes}.db", ident)[index]
    return Outcome(index, pure, notary, notary_code, verifier, timeline)


async def run_all(tmp: Path) -> Run:
    keys = {
        name: generate(actor)
        for name, actor in {
            "bank1": "bank", "bank2": "bank", "stranger": "bank", "transit": "transit",
            "auditor": "auditor", "insurer": "insurer", "insurer2": "insurer2", "media": "media",
            "ghost": "ghost",
        }.items()
    }  # fmt: skip
    home = init_home(tmp / "home", origin=ORIGIN)
    keys["regulator"] = home.regulator_key()
    clock = SimulatedClock(T0)
    run = Run()
    with serving(authorized_server(tmp / "nats", home), home) as server:
        async with running_notary(server.url, home, clock) as h:
            # every actor's envelope goes through one client: the gateway identity
            client = await h.client(home.regulator_key(), gateway=True)
            for case in CASES:
                run.outcomes[case.name] = await judge_case(h, client, clock, keys, case, tmp)
            run.entries = await ledger_entries(h)
            state = replayed(run.entries)
            run.revealed = {
                e.index: state.compromise_revealed_later(request_of(e))
                for e in only_entries(run.entries)
            }
            run.verifier_at_end = verified(await export(h, subjects=["system/summariser"]), home)
    run.timeline_at_end = timeline_of(run.entries, tmp / "view-end.db", "summariser")
    return run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    yield asyncio.run(run_all(tmp_path_factory.mktemp("admission")))


def test_the_cases_cover_every_reason_code_of_who_may_sign() -> None:
    assert {c.expect for c in CASES} >= {
        "",
        "unknown_actor",
        "unknown_key",
        "signer_not_actor",
        "key_not_valid",
        "key_revoked",
        "actor_suspended",
        "role_not_allowed",
        "not_system_party",
        "key_in_use",
        "system_not_registered",
        "system_retired",
        "system_already_registered",
        "party_not_enrolled",
        "not_policy_insurer",
        "policy_not_read",
    }
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_pure_module(run: Run, case: Case) -> None:
    judgement = run.outcomes[case.name].pure
    assert judgement.code == case.expect, str(judgement)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_notary(run: Run, case: Case) -> None:
    outcome = run.outcomes[case.name]
    assert outcome.notary_code == case.expect, outcome.notary
    # the same words as the pure module: the notary asked it
    assert outcome.notary == (str(outcome.pure) if case.expect else "")


@pytest.mark.parametrize("case", CASES, ids=str)
def test_offline_verifier(run: Run, case: Case) -> None:
    outcome = run.outcomes[case.name]
    err = outcome.verifier
    if not case.expect:
        assert err is None, err
        return
    assert err is not None and err.index == outcome.index, err
    if case.expect == "unknown_actor":
        # a bundle cannot hold the history of an actor never enrolled
        assert err.check == "signer", err
        return
    assert err.check == ("key" if case.expect in KEY_CODES else "authority"), err
    assert err.message == str(outcome.pure)


@pytest.mark.parametrize("case", [c for c in CASES if c.subject.startswith("system/")], ids=str)
def test_timeline(run: Run, case: Case) -> None:
    outcome = run.outcomes[case.name]
    expected = f"{case.expect} when integrated" if case.expect else "verified"
    assert outcome.timeline == expected


def test_a_compromise_revealed_later_is_seen_alike(run: Run) -> None:
    """Admitted when integrated, then a revocation reveals the key was compromised
    before: the pure module, the verifier and the timeline name the same entry."""
    before = run.outcomes["auditor audits before its key's compromise"].index
    after = run.outcomes["auditor audits after the compromise, not yet known"].index
    revocation = run.outcomes[
        "regulator revokes the auditor's key, compromised at minute 410"
    ].index
    compromised = T0 + timedelta(minutes=410)
    flagged = {i: r for i, r in run.revealed.items() if r is not None}
    assert flagged == {after: (revocation, compromised)}
    assert run.verifier_at_end is not None
    assert run.verifier_at_end.check == "key" and run.verifier_at_end.index == after
    assert f"revoked in entry {revocation}" in run.verifier_at_end.message
    assert run.timeline_at_end[before] == "verified"
    assert run.timeline_at_end[after] == (
        f"key compromised at 2026-03-02T15:50:00Z (revoked in entry {revocation}, learnt later)"
    )
