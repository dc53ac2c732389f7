"""The notary's verdicts against a real nats-server: one seal signature per batch of
receipts v2, signed final rejections remembered across a restart, and an SDK
that never reports a forged verdict (DESIGN §3, issue 9)."""

from __future__ import annotations

import asyncio
import base64

import pytest
from nats.aio.msg import Msg

from ledger.bus.client import SubmissionRejected, UnverifiedVerdict, sign_event
from ledger.bus.home import Home
from ledger.bus.natsserver import EmbeddedNats
from ledger.bus.streams import (
    HDR_REPLY,
    LEDGER,
    REJECTED,
    Verdict,
    connect,
    last_sequence,
    read_stream,
)
from ledger.formats.note import Signer, Verifier, Verifiers, generate_key
from ledger.formats.receipt import Receipt
from ledger.formats.rejection import open_rejection, sign_rejection
from ledger.formats.seal import HDR_SEAL, open_seal_header, sign_seal
from ledger.law import events as ev
from tests.conftest import Harness, bus_admin_connection, deployments, now, running_notary


def _log_verifiers(home: Home) -> Verifiers:
    return Verifiers(*(Verifier.from_vkey(k) for k in home.trust().log_vkeys()))


async def _ledger_messages(h: Harness):  # type: ignore[no-untyped-def]
    nc = await connect(h.url)
    try:
        last = await last_sequence(nc, LEDGER)
        return [m async for m in read_stream(nc, LEDGER, 1, last)]
    finally:
        await nc.close()


async def test_one_seal_signature_covers_a_whole_batch_of_receipts(ledger: Harness) -> None:
    _, client = await ledger.enrol("bank", ["owner"])
    await ledger.register(client, "scorer")
    results = await client.submit_many(deployments(client, "scorer", 120))
    receipts = [r for r in results if isinstance(r, Receipt)]
    assert len(receipts) == 120
    seals = {r.seal.note for r in receipts}
    # Far fewer seals than receipts, and the SDK verified each seal's signature once.
    assert len(seals) < len(receipts) / 4
    assert client.seals.verified <= len(seals) + 3  # + the enrolment/registration seals
    # In LEDGER: exactly one sealed message per batch, its last; the seal names
    # the batch's first sequence and the tree size after it.
    messages = await _ledger_messages(ledger)
    verifiers = _log_verifiers(ledger.home)
    sealed = [m for m in messages if HDR_SEAL in m.headers]
    size = 0
    for m in sealed:
        seal = open_seal_header(m.headers[HDR_SEAL], verifiers)
        count = m.sequence - seal.seq + 1
        assert seal.size == size + count
        size = seal.size
    assert size == len(messages)
    for r in receipts:
        assert any(
            m.headers.get(HDR_SEAL) == r.seal.header_value and m.sequence >= r.index + 1
            for m in sealed
        )


async def test_sdk_refuses_a_forged_rejection_and_gets_the_notary_receipt(
    ledger: Harness,
) -> None:
    _, client = await ledger.enrol("bank", ["owner"])
    await ledger.register(client, "scorer")
    impostor = Signer.from_skey(generate_key(ledger.home.trust().origin)[0])
    forged = 0

    async with bus_admin_connection(ledger) as bus:

        async def answer_first(msg: Msg) -> None:
            nonlocal forged
            reply = (msg.headers or {}).get(HDR_REPLY)
            if reply is None:
                return
            event_id = reply.rsplit(".", 1)[-1]
            unsigned = Verdict(status="rejected", event_id=event_id, code="key_revoked")
            wrong_key = sign_rejection(impostor, event_id, msg.data, "key_revoked", now())
            signed_badly = Verdict(
                status="rejected",
                event_id=event_id,
                code="key_revoked",
                rejection=wrong_key.note.decode(),
            )
            for v in (unsigned, signed_badly):
                await bus.publish(reply, v.encode())
                forged += 1

        sub = await bus.subscribe("intake.bank.>", cb=answer_first)
        await bus.flush()
        events = deployments(client, "scorer", 5)
        receipts = [await client.submit(e, timeout=20) for e in events]
        await sub.unsubscribe()
    assert forged >= 10  # every submission was answered first by the forger
    assert [r.event_id for r in receipts] == [e.event_id for e in events]


async def test_forged_rejection_alone_is_never_reported_as_a_verdict(ledger: Harness) -> None:
    key, client = await ledger.enrol("bank", ["owner"])
    event = client.event(
        ev.VersionDeployed, subject="system/none", version="1", artifact_sha256="ab" * 32
    )
    envelope = sign_event(event, key)
    impostor = Signer.from_skey(generate_key(ledger.home.trust().origin)[0])
    bad = sign_rejection(impostor, event.event_id, envelope, "schema", now())
    verdict = Verdict(status="rejected", event_id=event.event_id, rejection=bad.note.decode())
    with pytest.raises(UnverifiedVerdict):
        raise client._rejection(verdict, event.event_id, envelope)
    # A genuine signed rejection of other bytes under this event id is not ours either.
    genuine = sign_rejection(ledger.home.notary_signer(), event.event_id, b"other", "schema", now())
    verdict = Verdict(status="rejected", event_id=event.event_id, rejection=genuine.note.decode())
    with pytest.raises(UnverifiedVerdict, match="other bytes"):
        raise client._rejection(verdict, event.event_id, envelope)
    ours = sign_rejection(ledger.home.notary_signer(), event.event_id, envelope, "schema", now())
    verdict = Verdict(status="rejected", event_id=event.event_id, rejection=ours.note.decode())
    assert isinstance(client._rejection(verdict, event.event_id, envelope), SubmissionRejected)


async def test_final_rejection_is_signed_kept_and_the_same_after_a_restart(
    nats_server: EmbeddedNats, home: Home
) -> None:
    async with running_notary(nats_server.url, home) as ledger:
        key, client = await ledger.enrol("bank", ["owner"])
        # Deploying to a system not registered yet: refused for good (the state).
        event = client.event(
            ev.VersionDeployed, subject="system/scorer", version="1", artifact_sha256="ab" * 32
        )
        envelope = sign_event(event, key)
        with pytest.raises(SubmissionRejected) as first:
            await client.submit_envelope(envelope, event.event_id, event.type_name, timeout=20)
        assert first.value.code == "system_not_registered"
        nc = await connect(ledger.url)
        try:
            last = await last_sequence(nc, REJECTED)
            kept = [m async for m in read_stream(nc, REJECTED, 1, last, subject="rejected.>")]
        finally:
            await nc.close()
        (note,) = [base64.b64decode(m.headers["Ailedger-Rejection"]) for m in kept]
        signed = open_rejection(note, _log_verifiers(home))
        assert signed.event_id == event.event_id and signed.code == "system_not_registered"
        assert signed.is_for(envelope)
        # Now the system exists: judged again, the event would be accepted.
        await ledger.register(client, "scorer")
    async with running_notary(nats_server.url, home) as ledger:
        again = await ledger.client(key)
        # Under another message id, so that it reaches the notary's admission.
        with pytest.raises(SubmissionRejected) as second:
            await again.submit_envelope(envelope, ev.new_event_id(), event.type_name, timeout=20)
        assert second.value.code == "system_not_registered"
        assert await ledger.ledger_size() == 3
        await asyncio.sleep(0)


async def test_sdk_refuses_a_receipt_that_does_not_prove_its_exact_entry(ledger: Harness) -> None:
    key, client = await ledger.enrol("bank", ["owner"])
    await ledger.register(client, "scorer")
    (event,) = deployments(client, "scorer", 1)
    envelope = sign_event(event, key)
    receipt = await client.submit_envelope(envelope, event.event_id, event.type_name)
    genuine = receipt.note.decode()
    head, _, _ = genuine.partition("\n\n")
    proof_line = head.splitlines()[-1]
    assert proof_line and not proof_line.startswith("event ")
    flipped = ("B" if proof_line[0] != "B" else "C") + proof_line[1:]
    impostor = Signer.from_skey(generate_key(ledger.home.trust().origin)[0])
    resealed = sign_seal(impostor, receipt.seal.seq, receipt.seal.size, receipt.seal.root,
                         receipt.seal.last).note.decode()  # fmt: skip
    tampered = {
        "a header line": genuine.replace(f"subject {receipt.subject}", "subject system/other", 1),
        "a proof hash": genuine.replace(proof_line, flipped, 1),
        "the seal": head + "\n\n" + resealed,
    }
    for text in tampered.values():  # a header line, a proof hash, the seal
        verdict = Verdict(status="accepted", event_id=event.event_id, receipt=text)
        with pytest.raises(UnverifiedVerdict, match="does not verify"):
            client._conclude(verdict, event.event_id, envelope)
    ok = Verdict(status="accepted", event_id=event.event_id, receipt=genuine)
    assert client._conclude(ok, event.event_id, envelope) == receipt
