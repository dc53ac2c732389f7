"""Issue 9, the verifier and the rules: malformed numbers, freshness, key windows,
``integrated`` inside a bundle, m-of-n regulator roots, policies the rules read."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from ledger.bus.client import LedgerClient, SubmissionRejected, sign_event
from ledger.bus.home import Home
from ledger.bus.natsserver import EmbeddedNats
from ledger.bus.streams import HDR_MSG_ID, HDR_REPLY, Verdict
from ledger.formats import strictjson
from ledger.formats.checkpoint import CosignatureSigner, cosignature_verifier_key
from ledger.formats.dsse import add_signature, parse_envelope, sign_envelope
from ledger.formats.entry import Entry
from ledger.formats.errors import CHECK_FAILED, LedgerError
from ledger.formats.keys import ActorKey, generate
from ledger.formats.note import Verifier, Verifiers, open_note, sign_note
from ledger.formats.timeutil import SimulatedClock
from ledger.formats.trust import TrustedKey, TrustError, TrustPolicy
from ledger.law import events as ev
from ledger.law.rejections import RootQuorum
from ledger.law.rulebook import default_parameters
from ledger.verify.bundle import VerificationError, verify_bundle
from services.notary import NotaryError
from tests.conftest import (
    Harness,
    bus_admin_connection,
    enrolment_fields,
    now,
    registration_fields,
    running_notary,
)
from tests.test_verify import export, forged_bundle, ledger_entries

HUGE = b"1" * 5000


def registration(key: ActorKey, system: str, **kw: object) -> ev.SystemRegistered:
    fields = {"v": 1, "event_id": ev.new_event_id(), "actor": key.actor, "signed_at": now()}
    fields |= registration_fields(key.actor, system, name="Scorer", purpose="credit scoring")
    fields |= kw
    return ev.SystemRegistered(**fields)


async def rejected(client: LedgerClient, data: bytes, event_type: str) -> str:
    try:  # the payload's event id when there is one
        event_id = ev.decode_event(parse_envelope(data).payload).event_id
    except (ValueError, LedgerError):
        event_id = ev.new_event_id()
    with pytest.raises(SubmissionRejected) as r:
        await client.submit_envelope(data, event_id, event_type, timeout=20)
    return r.value.code


# --- numbers --------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b'{"a": ' + HUGE + b"}",
        b"[-" + HUGE + b"]",
        b"[18446744073709551616]",  # 2**64
        b"[-9223372036854775809]",  # -(2**63) - 1
        b"[000000000000000000000001]",
    ],
)
def test_integers_beyond_64_bits_are_malformed_json_not_a_conversion_error(data: bytes) -> None:
    with pytest.raises(strictjson.StrictJsonError) as e:
        strictjson.loads(data)
    assert e.value.syntax


def test_integers_within_64_bits_and_duplicate_keys_keep_their_meaning() -> None:
    assert strictjson.loads(b"[18446744073709551615,-9223372036854775808]") == [
        2**64 - 1,
        -(2**63),
    ]
    with pytest.raises(strictjson.StrictJsonError) as e:
        strictjson.loads(b'{"a":1,"a":2}')
    assert not e.value.syntax  # a schema problem, not a syntax one


async def test_huge_integers_at_intake_are_malformed_json(ledger: Harness) -> None:
    bank, client = await ledger.enrol("bank", ["owner"])
    size = await ledger.ledger_size()
    good = json.loads(sign_event(registration(bank, "one"), bank))
    in_envelope = json.dumps(good)[:-1].encode() + b', "n": ' + HUGE + b"}"
    payload = ev.encode_event(registration(bank, "two")).replace(b'"v":1', b'"v":' + HUGE)
    in_payload = sign_envelope(payload, bank)
    small_payload = ev.encode_event(registration(bank, "three")).replace(
        b'"v":1', b'"v":99999999999999999999999'
    )
    assert await rejected(client, in_envelope, "SystemRegistered") == "malformed_json"
    assert await rejected(client, in_payload, "SystemRegistered") == "malformed_json"
    assert (
        await rejected(client, sign_envelope(small_payload, bank), "SystemRegistered")
        == "malformed_json"
    )
    await client.submit(registration(bank, "four"))  # the notary keeps serving
    assert await ledger.ledger_size() == size + 1


# --- freshness ----------------------------------------------------------------------


async def test_a_stale_envelope_is_refused_within_the_window_accepted(ledger: Harness) -> None:
    bank, client = await ledger.enrol("bank", ["owner"])
    old = registration(bank, "old", signed_at=now() - timedelta(hours=24, minutes=1))
    assert await rejected(client, sign_event(old, bank), "SystemRegistered") == "stale"
    # the same envelope, later again: still stale, never accepted
    assert await rejected(client, sign_event(old, bank), "SystemRegistered") == "stale"
    recent = registration(bank, "recent", signed_at=now() - timedelta(hours=23))
    await client.submit(recent)


async def test_an_integrated_event_resubmitted_after_the_window_gets_its_receipt(
    nats_server: EmbeddedNats, home: Home
) -> None:
    """Freshness refuses old signatures, not old answers: the exact envelope of an
    entry, reaching the notary again a day later, is answered with its receipt, not
    ``stale``. (A message id of its own passes INTAKE's duplicate window, as any
    resubmission after that window does.)"""
    clock = SimulatedClock(now())
    async with running_notary(nats_server.url, home, clock=clock) as h:
        bank, client = await h.enrol("bank", ["owner"])
        event = registration(bank, "kept", signed_at=clock.now())
        envelope = sign_event(event, bank)
        first = await client.submit_signed(envelope)
        clock.advance(timedelta(hours=25))
        async with bus_admin_connection(h) as nc:
            inbox = f"_INBOX.bank.resubmitted.{event.event_id}"
            sub = await nc.subscribe(inbox)
            await nc.publish(
                "intake.bank.SystemRegistered",
                envelope,
                headers={HDR_MSG_ID: f"again-{event.event_id}", HDR_REPLY: inbox},
            )
            verdict = Verdict.decode((await sub.next_msg(timeout=20)).data)
        assert verdict.status == "accepted", verdict
        assert verdict.index == first.index and verdict.receipt == first.note.decode()
        # a new envelope with the same old signing time is still stale
        late = registration(bank, "late", signed_at=clock.now() - timedelta(hours=25))
        assert await rejected(client, sign_event(late, bank), "SystemRegistered") == "stale"


def _set_trust(home: Home, **changes: object) -> TrustPolicy:
    trust = dataclasses.replace(home.trust(), **changes)  # type: ignore[arg-type]
    trust.save(home.trust_path)
    return trust


async def test_the_freshness_window_is_the_trust_policys(
    nats_server: EmbeddedNats, home: Home
) -> None:
    _set_trust(home, freshness_seconds=3600)
    async with running_notary(nats_server.url, home) as h:
        bank, client = await h.enrol("bank", ["owner"])
        two_hours = registration(bank, "a", signed_at=now() - timedelta(hours=2))
        assert await rejected(client, sign_event(two_hours, bank), "SystemRegistered") == "stale"
        await client.submit(registration(bank, "b", signed_at=now() - timedelta(minutes=50)))


def test_trust_policy_freshness_and_root_quorum_are_checked(home: Home) -> None:
    doc = home.trust().to_json()
    assert doc["freshness_seconds"] == 24 * 3600 and doc["root_quorum"] == 1
    for name, value in [
        ("freshness_seconds", 0),
        ("freshness_seconds", "1h"),
        ("freshness_seconds", 10**9),
        ("root_quorum", 0),
        ("root_quorum", 2),  # one regulator key
        ("root_quorum", True),
    ]:
        with pytest.raises(TrustError):
            TrustPolicy.decode(json.dumps(doc | {name: value}).encode())
    huge = json.dumps(doc).encode().replace(b'"root_quorum": 1', b'"root_quorum": ' + HUGE)
    with pytest.raises(TrustError):
        TrustPolicy.decode(huge)
    legacy = {k: v for k, v in doc.items() if k not in ("freshness_seconds", "root_quorum")}
    assert TrustPolicy.decode(json.dumps(legacy).encode()).freshness == timedelta(hours=24)


# --- the verifier: numbers, key windows, the witnesses' time window -----------------


async def small_ledger(h: Harness) -> None:
    _, bank = await h.enrol("bank", ["owner"])
    await h.register(bank, "scorer")
    await bank.submit(
        bank.event(
            ev.VersionDeployed, subject="system/scorer", version="1.0", artifact_sha256="a" * 64
        )
    )


def verify_failure(doc: dict[str, Any] | bytes, trust: TrustPolicy, **kw: Any) -> VerificationError:
    data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    with pytest.raises(VerificationError) as e:
        verify_bundle(data, trust, **kw)
    return e.value


def cosign(note: bytes, trust: TrustPolicy, witness: ActorKey, at: datetime) -> bytes:
    log = Verifiers(*(Verifier.from_vkey(k) for k in trust.log_vkeys()))
    signer = CosignatureSigner(WITNESS, witness.private_key, clock=lambda: int(at.timestamp()))
    return sign_note(open_note(note, log), signer)


WITNESS = "witness.example/w1"


def with_witness(trust: TrustPolicy, witness: ActorKey, quorum: int = 1) -> TrustPolicy:
    vkey = cosignature_verifier_key(WITNESS, witness.public_key)
    return dataclasses.replace(trust, witness_keys=[TrustedKey(key=vkey)], witness_quorum=quorum)


def latest_integrated(doc: dict[str, Any]) -> datetime:
    return max(Entry.parse(base64.b64decode(e["entry"])).integrated for e in doc["entries"])


def ailedger_verify(bundle: Path, trust: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ailedger", "verify", str(bundle), "--trust", str(trust)],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_huge_integers_in_a_bundle_are_a_named_failure_of_ailedger_verify(
    ledger: Harness, tmp_path: Path
) -> None:
    await small_ledger(ledger)
    await ledger.notary.checkpoint()
    bundle = await export(ledger)
    doc = json.loads(bundle)
    trust = ledger.home.trust()
    witness = generate("witness")
    # Cosigned now, after every entry was integrated (a time taken at import
    # would be stale by the time a long suite gets here).
    far = dict(doc, checkpoint=cosign(doc["checkpoint"].encode(), trust, witness, now()).decode())
    huge_time = dict(doc)
    log = Verifiers(*(Verifier.from_vkey(k) for k in trust.log_vkeys()))
    signer = CosignatureSigner(WITNESS, witness.private_key, clock=lambda: 2**63 - 1)
    huge_time["checkpoint"] = sign_note(open_note(doc["checkpoint"].encode(), log), signer).decode()
    cases = {
        "index": bundle.replace(b'"index": 0', b'"index": ' + HUGE, 1),
        "chains": bundle.replace(b'"ledger/genesis": 0', b'"ledger/genesis": ' + HUGE),
        "consistency": bundle[:-1] + b', "consistency": {"old_size": -' + HUGE + b"}}",
        "64 bits": bundle.replace(b'"index": 0', b'"index": 18446744073709551616', 1),
    }
    for name, data in cases.items():
        assert data != bundle, name
    (tmp_path / "trust.json").write_bytes(with_witness(trust, witness, 0).encode())
    cases["witness time"] = json.dumps(huge_time).encode()
    assert verify_bundle(json.dumps(far).encode(), with_witness(trust, witness, 0))
    for name, data in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_bytes(data)
        run = await asyncio.to_thread(ailedger_verify, path, tmp_path / "trust.json")
        assert run.returncode == CHECK_FAILED, (name, run.stderr)
        assert "Traceback" not in run.stderr and "FAILED" in run.stderr, (name, run.stderr)
        expected = "checkpoint" if name == "witness time" else "bundle"
        assert f"FAILED {expected}" in run.stderr, (name, run.stderr)


async def test_log_key_windows_bound_when_a_checkpoint_was_signed(ledger: Harness) -> None:
    await small_ledger(ledger)
    doc = json.loads(await export(ledger))
    trust = ledger.home.trust()
    (log_key,) = trust.log_keys
    future = dataclasses.replace(
        trust, log_keys=[dataclasses.replace(log_key, valid_from=datetime(2100, 1, 1, tzinfo=UTC))]
    )
    err = verify_failure(doc, future)
    assert err.check == "checkpoint" and "not valid before 2100-01-01" in err.message
    # read in 2101, a key valid from 2100 may have signed a checkpoint by then
    verify_bundle(json.dumps(doc).encode(), future, now=datetime(2101, 1, 1, tzinfo=UTC))
    # a witness that cosigned in 2050 says the checkpoint existed then: the key was not valid
    witness = generate("witness")
    cosigned = dict(
        doc,
        checkpoint=cosign(
            doc["checkpoint"].encode(), trust, witness, datetime(2050, 1, 1, tzinfo=UTC)
        ).decode(),
    )
    err = verify_failure(
        cosigned, with_witness(future, witness), now=datetime(2101, 1, 1, tzinfo=UTC)
    )
    assert err.check == "checkpoint" and "not valid before" in err.message


async def test_integrated_lies_within_the_witnesses_window(ledger: Harness) -> None:
    _, bank = await ledger.enrol("bank", ["owner"])
    await ledger.notary.checkpoint()
    signed = ledger.notary.latest_checkpoint
    # genesis, enrolment, the heads leaf the checkpoint ends with
    assert signed is not None and signed[0].size == 3
    pinned_size, pinned_note = signed[0].size, signed[1]
    await ledger.register(bank, "scorer")
    doc = json.loads(await export(ledger, since=pinned_size))
    trust = ledger.home.trust()
    witness = generate("witness")
    policy = with_witness(trust, witness)
    latest = latest_integrated(doc)

    def cosigned_at(at: datetime) -> dict[str, Any]:
        return dict(doc, checkpoint=cosign(doc["checkpoint"].encode(), trust, witness, at).decode())

    verify_bundle(json.dumps(cosigned_at(latest + timedelta(seconds=2))).encode(), policy)
    # within the skew allowance
    verify_bundle(json.dumps(cosigned_at(latest - timedelta(minutes=4))).encode(), policy)
    # integrated an hour after a witness saw the checkpoint that covers it
    err = verify_failure(cosigned_at(latest - timedelta(hours=1)), policy)
    assert err.check == "time" and "after a witness cosigned" in err.message
    # a pinned checkpoint cosigned an hour after the entries it does not cover
    later = latest + timedelta(hours=1)
    good = json.dumps(cosigned_at(latest + timedelta(hours=2))).encode()
    err = verify_failure(good, policy, since=cosign(pinned_note, trust, witness, later))
    assert err.check == "time" and "back-dated" in err.message and err.index == 3
    report = verify_bundle(good, policy, since=cosign(pinned_note, trust, witness, latest))
    assert report.consistent_with == pinned_size
    # integrated going back along the index
    entries = [Entry.parse(base64.b64decode(e["entry"])) for e in doc["entries"]]
    assert [e.index for e in entries] == [0, 1, 3]


# --- the notary and its log key's window ----------------------------------------------


async def test_the_notary_refuses_a_log_key_the_trust_policy_does_not_make_valid(
    nats_server: EmbeddedNats, home: Home
) -> None:
    trust = home.trust()
    (log_key,) = trust.log_keys
    _set_trust(
        home,
        log_keys=[dataclasses.replace(log_key, valid_from=datetime(2100, 1, 1, tzinfo=UTC))],
    )
    with pytest.raises(NotaryError, match=r"refusing to start: log key .* not at"):
        async with running_notary(nats_server.url, home):
            pass
    # a log key that expires: the notary stops signing checkpoints from then on
    start = datetime.now(UTC)
    until = start + timedelta(hours=1)
    _set_trust(home, log_keys=[dataclasses.replace(log_key, valid_until=until)])
    clock = SimulatedClock(start)
    async with running_notary(nats_server.url, home, clock=clock) as h:
        _, bank = await h.enrol("bank", ["owner"])
        assert await h.notary.checkpoint() is not None
        first = h.notary.latest_checkpoint
        assert first is not None
        await bank.submit(registration(bank.key, "late", signed_at=clock.now()))
        clock.set(until + timedelta(minutes=1))
        assert await h.notary.checkpoint() is None
        latest = h.notary.latest_checkpoint
        assert latest is not None and latest[0].size == first[0].size


# --- m-of-n regulator root keys ----------------------------------------------------------


def two_root_home(home: Home, quorum: int = 2) -> ActorKey:
    """Give ``home`` a second regulator root key: a genesis naming both, signed by both
    (DSSE with two signatures), and a trust policy requiring ``quorum`` of them."""
    first = home.regulator_key()
    second = generate(first.actor)
    genesis = ev.decode_event(parse_envelope(home.genesis()).payload)
    assert isinstance(genesis, ev.LedgerGenesis)
    both = [first.public_key_b64, second.public_key_b64]
    genesis = msgspec.structs.replace(genesis, regulator_keys=both)
    home.genesis_path.write_bytes(add_signature(sign_event(genesis, first), second))
    trust = home.trust()
    _set_trust(
        home,
        regulator_keys=[*trust.regulator_keys, TrustedKey(key=second.public_key_b64)],
        root_quorum=quorum,
    )
    return second


def adoption(client: LedgerClient, policy_id: str = "rulebook") -> ev.PolicyAdopted:
    return client.event(
        ev.PolicyAdopted,
        subject=f"policy/{policy_id}",
        title="rulebook v2",
        effective_from=now() + timedelta(days=1),
        parameters=msgspec.convert(default_parameters(), ev.RulebookParameters),
        legal_references=[],
    )


async def test_the_regulators_acts_need_m_of_n_root_signatures(
    nats_server: EmbeddedNats, home: Home
) -> None:
    second = two_root_home(home)
    async with running_notary(nats_server.url, home) as h:
        reg = await h.regulator()
        alone = sign_event(adoption(reg), reg.key)
        assert await rejected(reg, alone, "PolicyAdopted") == "root_quorum"
        # the same signature twice is one key, counted once
        doc = json.loads(sign_event(adoption(reg), reg.key))
        doc["signatures"].append(doc["signatures"][0])
        twice = json.dumps(doc).encode()
        assert await rejected(reg, twice, "PolicyAdopted") == "root_quorum"
        receipt = await reg.submit_signed(add_signature(sign_event(adoption(reg), reg.key), second))
        # an enrolment giving the regulator role needs both; any other role one
        deputy = generate("deputy")
        enrolment = reg.event(ev.ActorEnrolled, **enrolment_fields("deputy", ["regulator"], deputy))
        single = sign_event(enrolment, reg.key)
        assert await rejected(reg, single, "ActorEnrolled") == "root_quorum"
        enrolment = msgspec.structs.replace(enrolment, event_id=ev.new_event_id())
        await reg.submit_signed(add_signature(sign_event(enrolment, reg.key), second))
        await h.enrol("bank", ["owner"])
        # a policy id the rules do not read, even with both signatures
        other = add_signature(sign_event(adoption(reg, "other"), reg.key), second)
        assert await rejected(reg, other, "PolicyAdopted") == "policy_not_read"
        bundle = await export(h, subjects=["policy/rulebook", "actor/deputy"])
        forged_entries = await ledger_entries(h)
    trust = home.trust()
    report = verify_bundle(bundle, trust)
    assert report.chains["policy/rulebook"] == receipt.index
    # the same bundle against a policy where the second root key had expired
    (k1, k2) = trust.regulator_keys
    expired = dataclasses.replace(
        trust,
        regulator_keys=[k1, dataclasses.replace(k2, valid_until=datetime(2020, 1, 1, tzinfo=UTC))],
    )
    err = verify_failure(bundle, expired)
    assert err.check == "authority" and err.index == 0 and "root_quorum" in err.message
    # an operator appends the policy signed by one root key: the verifier refuses it
    index = len(forged_entries)  # after the heads leaf the export's checkpoint ended with
    newest = [e for e in forged_entries if isinstance(e, Entry)][-1]
    forged = Entry(index, newest.integrated, "policy/rulebook", receipt.index, alone)
    entries = [*forged_entries, forged]
    chains = {e.subject: e.index for e in entries if isinstance(e, Entry)}
    err = verify_failure(forged_bundle(h, entries, chains), trust)
    assert err.check == "authority" and err.index == index
    assert "PolicyAdopted needs 2 regulator root signatures" in err.message


async def test_a_genesis_without_the_root_quorum_is_refused(
    nats_server: EmbeddedNats, home: Home
) -> None:
    two_root_home(home)
    genesis = json.loads(home.genesis())
    genesis["signatures"] = genesis["signatures"][:1]
    home.genesis_path.write_bytes(json.dumps(genesis).encode())
    with pytest.raises(RootQuorum, match="LedgerGenesis needs 2"):
        async with running_notary(nats_server.url, home):
            pass
