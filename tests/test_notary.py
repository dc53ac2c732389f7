"""The notary against a real nats-server: what is accepted, what is refused and why."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from ledger.bus.client import LedgerClient, SubmissionRejected, SyncLedgerClient, sign_event
from ledger.bus.home import init_home
from ledger.bus.streams import (
    HEADS_SUBJECT,
    LEDGER,
    MAX_ENVELOPE,
    REJECTED,
    StoredMessage,
    connect,
    last_sequence,
    read_stream,
)
from ledger.formats.dsse import sign_envelope
from ledger.formats.entry import Entry
from ledger.formats.keys import ActorKey, generate
from ledger.formats.merkle import leaf_hash
from ledger.formats.note import Verifier, Verifiers
from ledger.formats.receipt import Receipt, ReceiptError, open_receipt
from ledger.law import events as ev
from ledger.state.application import LedgerState
from tests.conftest import Harness, deployments, now, registration_fields, running_notary


async def stored(h: Harness, stream: str) -> list[StoredMessage]:
    nc = await connect(h.url)
    try:
        last = await last_sequence(nc, stream)
        return [m async for m in read_stream(nc, stream, 1, last)]
    finally:
        await nc.close()


def receipt_matches_entry(receipt: Receipt, entry_bytes: bytes) -> bool:
    entry = Entry.parse(entry_bytes)
    return entry.index == receipt.index and leaf_hash(entry_bytes) == receipt.leaf_hash


async def test_genesis_is_entry_zero_and_a_valid_event_gets_a_verifiable_receipt(
    ledger: Harness,
) -> None:
    bank, client = await ledger.enrol("bank", ["owner"])
    receipt = await client.submit(registration(bank))
    entries = await stored(ledger, LEDGER)
    assert [Entry.parse(m.data).index for m in entries] == [0, 1, 2]
    assert Entry.parse(entries[0].data).subject == "ledger/genesis"
    assert receipt.index == 2
    assert receipt_matches_entry(receipt, entries[2].data)
    # Anyone holding the trust policy and the envelope can check the receipt v2:
    # the entry rebuilt from its lines, folded up to the seal's root, the seal's signature.
    trusted = Verifiers(*(Verifier.from_vkey(k) for k in ledger.home.trust().log_vkeys()))
    envelope = Entry.parse(entries[2].data).envelope
    assert open_receipt(receipt.note, envelope, trusted) == receipt
    # and a changed line in the receipt's body makes it fail
    tampered = receipt.note.replace(b"index 2", b"index 3")
    with pytest.raises(ValueError):
        open_receipt(tampered, envelope, trusted)


async def test_resubmitted_event_gets_the_same_receipt_and_one_entry(ledger: Harness) -> None:
    bank, client = await ledger.enrol("bank", ["owner"])
    event = registration(bank)
    first = await client.submit(event)
    again = await client.submit(event)
    # a different client process resubmitting the same signed bytes
    other = await ledger.client(client.key)
    third = await other.submit(event)
    assert first.note == again.note == third.note
    assert await ledger.ledger_size() == 3  # genesis, enrolment, registration


async def test_same_event_id_with_other_bytes_is_refused(ledger: Harness) -> None:
    bank, client = await ledger.enrol("bank", ["owner"])
    event = registration(bank)
    await client.submit(event)
    changed = sign_event(msgspec.structs.replace(event, name="Another name"), bank)
    # The SDK learns from the notary that other bytes hold this event id ...
    with pytest.raises(SubmissionRejected) as r:
        await client.submit_envelope(changed, event.event_id, event.type_name)
    assert r.value.code == "duplicate_event_id"
    # ... and the notary refuses them when they reach it under another message id.
    code, _ = await rejected_with(ledger, client, changed, event.type_name)
    assert code == "duplicate_event_id"
    assert await ledger.ledger_size() == 3


async def rejected_with(
    h: Harness, client: LedgerClient, data: bytes, event_type: str, event_id: str | None = None
) -> tuple[str, StoredMessage]:
    """Submit raw bytes; return the reason code and the REJECTED message keeping them."""
    eid = event_id or ev.new_event_id()
    with pytest.raises(SubmissionRejected) as r:
        await client.submit_envelope(data, eid, event_type, timeout=20)
    digest = hashlib.sha256(data).hexdigest()
    kept = [m for m in await stored(h, REJECTED) if m.headers.get("Ailedger-Sha256") == digest]
    assert len(kept) == 1, "the original bytes (or their hash and head) are kept in REJECTED"
    whole = len(data) <= MAX_ENVELOPE
    assert kept[0].data == (data if whole else data[:4096])
    assert kept[0].headers["Ailedger-Reason"] == r.value.code
    return r.value.code, kept[0]


def registration(key: ActorKey, system: str = "scorer", **kw: object) -> ev.SystemRegistered:
    fields = {"v": 1, "event_id": ev.new_event_id(), "actor": key.actor, "signed_at": now()}
    fields |= registration_fields(key.actor, system, name="Scorer", purpose="credit scoring", **kw)
    return ev.SystemRegistered(**fields)


async def test_every_rejection_path_has_its_code_and_keeps_the_bytes(ledger: Harness) -> None:
    bank, client = await ledger.enrol("bank", ["owner"])
    insurer, insurer_client = await ledger.enrol("insurer", ["insurer"])
    await ledger.register(client, "scorer")
    size_before = await ledger.ledger_size()
    codes: dict[str, str] = {}

    async def expect(name: str, data: bytes, etype: str, by: LedgerClient = client) -> None:
        code, _ = await rejected_with(ledger, by, data, etype)
        codes[name] = code

    await expect("malformed json", b'{"payloadType": "application/vnd', "SystemRegistered")
    await expect("not an envelope", b'{"hello": "world"}', "SystemRegistered")
    payload_not_json = sign_envelope(b"not json at all", bank)
    await expect("payload not json", payload_not_json, "SystemRegistered")
    oversize = sign_event(registration(bank, "big"), bank) + b" " * 65_536
    await expect("oversize", oversize, "SystemRegistered")

    good = sign_event(registration(bank, "signed"), bank)
    env = json.loads(good)
    sig = bytearray(base64.b64decode(env["signatures"][0]["sig"]))
    sig[0] ^= 1
    env["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    await expect("bad signature", json.dumps(env).encode(), "SystemRegistered")

    stranger = generate("bank")  # right actor name, key never enrolled
    await expect(
        "unknown key", sign_event(registration(stranger, "x1"), stranger), "SystemRegistered"
    )

    # the insurer's real key signs an event claiming to be the bank's
    posing = ActorKey("bank", insurer.private_key)
    forged = sign_event(registration(posing, "x2"), posing).replace(
        f"bank/{insurer.fingerprint}".encode(), f"insurer/{insurer.fingerprint}".encode()
    )
    await expect("signer is not payload.actor", forged, "SystemRegistered")

    await expect(
        "wrong role",
        sign_event(registration(insurer, "claims-bot"), insurer),
        "SystemRegistered",
        insurer_client,
    )
    # (the SDK refuses to build it; a client in another language might not)
    schema_bad = ev.encode_event(registration(bank, "sb")).replace(
        b"system/sb", b"system/Not-A-Slug"
    )
    await expect("schema violation", sign_envelope(schema_bad, bank), "SystemRegistered")
    unregistered = ev.VersionDeployed(
        v=1,
        event_id=ev.new_event_id(),
        actor="bank",
        subject="system/ghost",
        signed_at=now(),
        version="1",
        artifact_sha256="a" * 64,
    )
    await expect("unregistered system", sign_event(unregistered, bank), "VersionDeployed")
    await expect("duplicate registration", sign_event(registration(bank), bank), "SystemRegistered")
    future = registration(bank, "later", signed_at=now() + timedelta(minutes=6))
    await expect("clock skew", sign_event(future, bank), "SystemRegistered")
    not_yet = ev.IncidentReported(
        v=1,
        event_id=ev.new_event_id(),
        actor="bank",
        subject="system/scorer",
        signed_at=now(),
        incident_id="inc-1",
        occurred_at=now(),
        aware_at=now() + timedelta(days=80),
        harm_category="other",
        severity="minor",
        affected_count=0,
        description="becomes known later",
    )
    await expect("aware in the future", sign_event(not_yet, bank), "IncidentReported")
    slightly_ahead = registration(bank, "soon", signed_at=now() + timedelta(minutes=4))
    await client.submit(slightly_ahead)  # within the 5 minutes allowed

    assert codes == {
        "malformed json": "malformed_json",
        "not an envelope": "malformed_envelope",
        "payload not json": "malformed_json",
        "oversize": "oversize",
        "bad signature": "bad_signature",
        "unknown key": "unknown_key",
        "signer is not payload.actor": "signer_not_actor",
        "wrong role": "role_not_allowed",
        "schema violation": "schema",
        "unregistered system": "system_not_registered",
        "duplicate registration": "system_already_registered",
        "clock skew": "clock_skew",
        "aware in the future": "clock_skew",
    }
    # nothing refused reached the ledger; the one valid submission did
    assert await ledger.ledger_size() == size_before + 1


async def test_published_on_someone_elses_intake_subject_is_refused(ledger: Harness) -> None:
    bank, _ = await ledger.enrol("bank", ["owner"])
    _, insurer_client = await ledger.enrol("insurer", ["insurer"])
    data = sign_event(registration(bank, "scorer"), bank)
    # the insurer's client publishes the bank's envelope on intake.insurer.*
    code, kept = await rejected_with(ledger, insurer_client, data, "SystemRegistered")
    assert code == "intake_subject"
    assert kept.subject == "rejected.insurer"


async def test_state_is_rebuilt_from_ledger_on_restart(
    ledger: Harness,
) -> None:
    _, bank = await ledger.enrol("bank", ["owner"])
    await ledger.register(bank, "scorer")
    # A second notary with empty state (as after losing its store) rebuilds
    # everything from LEDGER and enforces the same invariants.
    async with running_notary(ledger.url, ledger.home) as again:
        same_bank = await again.client(bank.key)
        with pytest.raises(SubmissionRejected) as r:
            await again.register(same_bank, "scorer")
        assert r.value.code == "system_already_registered"
        state = again.notary.state
        assert state.position() == await again.ledger_size()
        system = state.system("scorer")
        assert system is not None and system.owner == "bank" and system.chain_head == 2


async def test_replaying_ledger_detects_a_broken_prev_chain(ledger: Harness) -> None:
    _, bank = await ledger.enrol("bank", ["owner"])
    await ledger.register(bank, "scorer")
    entries = await stored(ledger, LEDGER)
    fresh = LedgerState(trust=ledger.home.trust())
    fresh.replay([(m.sequence, m.data) for m in entries])
    assert fresh.position() == len(entries)

    from ledger.state.application import LedgerCorrupt

    broken = Entry.parse(entries[2].data)
    lying = Entry(broken.index, broken.integrated, broken.subject, 0, broken.envelope).encoded
    with pytest.raises(LedgerCorrupt, match="prev"):
        LedgerState(trust=ledger.home.trust()).replay(
            [(1, entries[0].data), (2, entries[1].data), (3, lying)]
        )
    with pytest.raises(LedgerCorrupt, match="index"):
        LedgerState(trust=ledger.home.trust()).replay([(1, entries[0].data), (3, entries[2].data)])


async def test_answers_never_go_to_stream_subjects(ledger: Harness) -> None:
    """The reply subject is the publisher's choice; the notary must not write LEDGER for it."""
    _, client = await ledger.enrol("bank", ["owner"])
    before = await ledger.ledger_size()
    nc = await connect(ledger.url)
    try:
        js = nc.jetstream()
        await js.publish(
            "intake.bank.SystemRegistered",
            b"junk",
            headers={"Ailedger-Reply": "ledger.actor.evil", "Nats-Msg-Id": "junk-1"},
        )
        await nc.publish("ailedger.notary.lookup", ev.new_event_id().encode(), reply="ledger.x.y")
        await nc.flush()
        # a normal submission afterwards is answered (so the junk was processed)
        await ledger.register(client, "scorer")
    finally:
        await nc.close()
    entries = await stored(ledger, LEDGER)
    assert len(entries) == before + 1
    assert all(Entry.parse(m.data) for m in entries)
    assert [m.data for m in await stored(ledger, REJECTED)] == [b"junk"]


async def test_hostile_payloads_do_not_stall_the_batch_they_arrive_in(ledger: Harness) -> None:
    bank, client = await ledger.enrol("bank", ["owner"])
    await ledger.register(client, "scorer")
    valid = registration(bank, "second")
    hostile = {
        "type is a list": sign_envelope(b'{"type": []}', bank),
        "type is an object": sign_envelope(b'{"type": {}}', bank),
        "deeply nested": sign_envelope(b"[" * 5000 + b"]" * 5000, bank),
        "newline in subject": sign_envelope(
            ev.encode_event(registration(bank, "evil")).replace(b"system/evil", b"system/evil\\n"),
            bank,
        ),
        "duplicate keys": sign_envelope(
            ev.encode_event(valid).replace(b'"name":"Scorer"', b'"name":"Scorer","name":"X"'), bank
        ),
    }
    tasks = {
        name: asyncio.create_task(
            client.submit_envelope(data, ev.new_event_id(), "SystemRegistered", timeout=30)
        )
        for name, data in hostile.items()
    }
    receipt = await client.submit(valid)
    codes = {}
    for name, task in tasks.items():
        with pytest.raises(SubmissionRejected) as r:
            await task
        codes[name] = r.value.code
    assert receipt.index == 3
    assert codes == {
        "type is a list": "schema",
        "type is an object": "schema",
        "deeply nested": "schema",
        "newline in subject": "schema",
        "duplicate keys": "schema",
    }


async def test_sync_client_for_scripts(ledger: Harness) -> None:
    bank, _ = await ledger.enrol("bank", ["owner"])

    def script() -> int:
        with SyncLedgerClient(ledger.url, bank, trust=ledger.home.trust()) as client:
            receipt = client.submit(registration(bank))
            with pytest.raises(SubmissionRejected):
                client.submit(client.event(ev.ActorSuspended, subject="actor/bank", reason="r"))
            return receipt.index

    # the notary runs on this test's event loop: the blocking script runs beside it
    assert await asyncio.to_thread(script) == 2


async def test_receipts_come_from_the_tree_when_proving_in_memory_fails(
    ledger: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fallback of a batch whose proofs could not be made in memory: each
    receipt's proof read from the tree once the batch is recorded (``_proofs_of``).
    The receipts the notary answers with must verify at once: a wrong one would
    only be replaced by a lookup after the client refused it."""
    _, client = await ledger.enrol("bank", ["owner"])
    await ledger.register(client, "scorer")
    sequencer = ledger.notary.sequencer
    failed: list[int] = []
    answered: list[tuple[bytes, bytes]] = []

    def cannot_prove(batch: Any, seals: object) -> list[list[bytes]]:
        failed.append(len(batch.admitted))
        raise RuntimeError("proving in memory failed (test)")

    real_sign_receipts = sequencer._sign_receipts

    async def sign_receipts(subs: Any, new: Any) -> None:
        await real_sign_receipts(subs, new)
        answered.extend((s.receipt.note, s.msg.data) for s, *_ in new)

    monkeypatch.setattr(sequencer, "_prove", cannot_prove)
    monkeypatch.setattr(sequencer, "_sign_receipts", sign_receipts)
    events = deployments(client, "scorer", 40)
    results = await client.submit_many(events, timeout=30)
    receipts = [r for r in results if isinstance(r, Receipt)]
    assert len(receipts) == len(events), [r for r in results if not isinstance(r, Receipt)]
    # every batch took the fallback, at least one held several entries
    assert sum(failed) == len(events) and max(failed) > 1
    # what the notary sent is what verifies: each receipt proves its own envelope
    trusted = Verifiers(*(Verifier.from_vkey(k) for k in ledger.home.trust().log_vkeys()))
    assert len(answered) == len(events)
    for note, envelope in answered:
        assert open_receipt(note, envelope, trusted).note == note
    assert {note for note, _ in answered} == {r.note for r in receipts}
    entries = {
        Entry.parse(m.data).index: m.data
        for m in await stored(ledger, LEDGER)
        if m.subject != HEADS_SUBJECT
    }
    for r in receipts:
        assert receipt_matches_entry(r, entries[r.index])


async def test_clients_of_one_process_share_seal_checks_only_under_the_same_log_keys(
    ledger: Harness, tmp_path: Path
) -> None:
    """Every client of a process that trusts the same log keys checks each seal's
    signature once between them; a client trusting other keys shares nothing and
    still refuses a receipt the others accepted."""
    bank, client = await ledger.enrol("bank", ["owner"])
    receipt = await client.submit(registration(bank))
    other = await ledger.client(bank)  # another TrustPolicy object, the same log keys
    assert other.seals is client.seals
    envelope = receipt.entry.envelope
    verified = client.seals.verified
    assert open_receipt(receipt.note, envelope, other.seals) == receipt
    assert client.seals.verified == verified  # answered from the shared cache
    stranger_home = init_home(tmp_path / "stranger", origin=ledger.home.trust().origin)
    stranger = LedgerClient(client.nc, trust=stranger_home.trust())
    assert stranger.seals is not client.seals
    with pytest.raises(ReceiptError):
        open_receipt(receipt.note, envelope, stranger.seals)
