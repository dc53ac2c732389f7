"""A compromised bus (a raw connection that may publish anywhere) appends to LEDGER
and CHECKPOINTS: what no seal covers is foreign. The notary and the projector
skip it with an alarm, never give it an index, never seal it into a
checkpoint, and the notary keeps serving (DESIGN §3 "Batch seal", issue 9)."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import timedelta
from pathlib import Path

import pytest

from ledger.bus.alarms import FOREIGN_MESSAGE
from ledger.bus.client import sign_event
from ledger.bus.home import Home
from ledger.bus.logview import read_log
from ledger.bus.natsserver import EmbeddedNats
from ledger.bus.proofs import export_bundle
from ledger.bus.sealed import parse_leaf
from ledger.bus.streams import (
    CHECKPOINT_SUBJECT,
    CHECKPOINTS,
    LEDGER,
    connect,
    last_sequence,
    read_stream,
)
from ledger.formats.checkpoint import parse_checkpoint
from ledger.formats.entry import Entry, ledger_subject
from ledger.formats.heads import HeadsLeaf
from ledger.formats.keys import generate
from ledger.formats.merkle import MemoryHashStore
from ledger.formats.note import Verifier, Verifiers, open_note
from ledger.formats.seal import HDR_SEAL, sign_seal
from ledger.formats.tree import TreeStore
from ledger.law import events as ev
from ledger.state.application import LedgerState
from ledger.state.persistence import store_envs
from ledger.views.store import open_view
from services.projector import Projector, rebuild
from tests.conftest import Harness, bus_admin_connection, deployments, running_notary


async def _append_foreign(ledger: Harness) -> tuple[list[int], object]:
    """Three foreign messages in LEDGER: an unsigned entry that would enrol an
    outsider, a genuinely signed entry back-dated by two days, garbage."""
    key, client = await ledger.enrol("bank", ["owner"])
    await ledger.register(client, "scorer")
    size = ledger.notary.sequencer.reader.size
    integrated = ledger.notary.sequencer.last_integrated
    assert integrated is not None
    outsider = generate("mallory")
    unsigned = Entry(
        size,
        integrated,
        "actor/mallory",
        None,
        b'{"payloadType":"application/vnd.ailedger.event+json; v=1","payload":"e30=",'
        b'"signatures":[{"keyid":"regulator/'
        + outsider.fingerprint.encode()
        + b'","sig":"'
        + b"A" * 86
        + b'=="}]}',
    )
    measure = client.event(
        ev.VersionDeployed, subject="system/scorer", version="9", artifact_sha256="cd" * 32
    )
    backdated = Entry(
        size + 1,
        integrated - timedelta(days=2),
        "system/scorer",
        size - 1,
        sign_event(measure, key),
    )
    sequences = []
    async with bus_admin_connection(ledger) as bus:
        js = bus.jetstream()
        for subject, data in (
            (ledger_subject(unsigned.subject), unsigned.encoded),
            (ledger_subject(backdated.subject), backdated.encoded),
            ("ledger.x.y", b"\x00garbage\xff"),
        ):
            ack = await js.publish(subject, data, stream=LEDGER)
            sequences.append(ack.seq)
    return sequences, client


async def _signed(ledger: Harness) -> bool:
    """A new checkpoint is signed (a first attempt may meet the foreign tail)."""
    for _ in range(2):
        if await ledger.notary.checkpoint() is not None:
            return True
    return False


def _root_of_sealed(messages: list[bytes]) -> bytes:
    tree = MemoryHashStore()
    for data in messages:
        tree.append(data)
    return tree.root()


async def test_foreign_ledger_messages_are_skipped_never_indexed_or_checkpointed(
    nats_server: EmbeddedNats, home: Home, tmp_path: Path
) -> None:
    async with running_notary(nats_server.url, home) as ledger:
        foreign, client = await _append_foreign(ledger)
        # The notary keeps serving: the next entries get the next indexes.
        receipts = [await client.submit(e, timeout=20) for e in deployments(client, "scorer", 3)]  # type: ignore[attr-defined]
        reader = ledger.notary.sequencer.reader
        assert reader.foreign == foreign
        assert ledger.notary.alarms.is_active(FOREIGN_MESSAGE)
        assert [r.index for r in receipts] == [3, 4, 5]
        size = reader.size
        assert size == 6
        note = await ledger.notary.checkpoint()
        assert note is not None
        verifiers = Verifiers(*(Verifier.from_vkey(k) for k in home.trust().log_vkeys()))
        checkpoint = parse_checkpoint(open_note(note, verifiers).text)
        # The checkpoint ends with the heads leaf the notary sealed before it.
        assert checkpoint.size == size + 1
        # The checkpoint's root is the root of the sealed leaves only.
        nc = await connect(ledger.url)
        try:
            last = await last_sequence(nc, LEDGER)
            stored = [m async for m in read_stream(nc, LEDGER, 1, last)]
        finally:
            await nc.close()
        sealed = [m.data for m in stored if m.sequence not in foreign]
        leaves = [parse_leaf(data) for data in sealed]
        heads = [leaf.index for leaf in leaves if isinstance(leaf, HeadsLeaf)]
        assert heads == [size]  # the one heads leaf, last, covering the 6 entries
        assert len(sealed) == checkpoint.size and checkpoint.root_hash == _root_of_sealed(sealed)

        # Wherever index -> sequence is needed (log, proofs, bundles): through the seals.
        nc = await connect(ledger.url)
        try:
            rows = await read_log(nc, trust=home.trust())
            assert [r.index for r in rows] == list(range(checkpoint.size))
            assert [r.index for r in await read_log(nc, 4, 1, trust=home.trust())] == [4]
            with TreeStore(tmp_path / "bundle-tree") as tree:
                bundle = json.loads(
                    await export_bundle(
                        nc, tree, subjects=["system/scorer"], claim=True, trust=home.trust()
                    )
                )
        finally:
            await nc.close()
        in_bundle = {base64.b64decode(e["entry"]) for e in bundle["entries"]}
        foreign_bytes = {m.data for m in stored if m.sequence in foreign}
        assert in_bundle and not in_bundle & foreign_bytes
        assert {e["index"] for e in bundle["entries"]} <= set(range(6))

        # The projector skips the same messages, with its own alarm.
        nc = await connect(ledger.url)
        try:
            (tmp_path / "projector").mkdir()
            state_env, view_env = store_envs(tmp_path / "projector")
            projector = Projector(
                nc, LedgerState(state_env, trust=home.trust()), open_view(view_env)
            )
            try:
                await projector.catch_up()
                assert projector.reader.foreign == foreign
                assert projector.alarms.is_active(FOREIGN_MESSAGE)
                # The 6 sealed entries are projected; the heads leaf after them is not.
                assert projector.state.size == size
                mallory = await projector.state_thread.call(projector.state.actor, "mallory")
                assert mallory is None
            finally:
                projector.close()
            # rebuild (from a dropped store) checks against the checkpoint and skips them too
            report = await rebuild(nc, home, state_env, view_env)
            assert report.checkpoint_size == checkpoint.size
        finally:
            await nc.close()

    # A restarted notary skips the same foreign messages and serves.
    async with running_notary(nats_server.url, home) as ledger:
        assert ledger.notary.sequencer.reader.foreign == foreign
        assert ledger.notary.alarms.is_active(FOREIGN_MESSAGE)
        again = await ledger.client(client.key)  # type: ignore[attr-defined]
        (event,) = deployments(again, "scorer", 1)
        receipt = await again.submit(event, timeout=20)
        assert receipt.index == checkpoint.size  # after the entries and the heads leaf


async def test_unsigned_note_in_checkpoints_never_bricks_the_notary(
    nats_server: EmbeddedNats, home: Home
) -> None:
    async with running_notary(nats_server.url, home) as ledger:
        _, client = await ledger.enrol("bank", ["owner"])
        assert await ledger.notary.checkpoint() is not None
        async with bus_admin_connection(ledger) as bus:
            js = bus.jetstream()
            body = f"{home.trust().origin}\n99\n{'A' * 43}=\n".encode()
            await js.publish(CHECKPOINT_SUBJECT, body + b"\n", stream=CHECKPOINTS)
            await js.publish(CHECKPOINT_SUBJECT, b"\xffgarbage", stream=CHECKPOINTS)
        # Signing goes on (fenced on the stream's real last sequence, once it
        # has seen the foreign notes), with an alarm.
        await ledger.register(client, "scorer")
        assert await _signed(ledger)
        assert ledger.notary.alarms.is_active(FOREIGN_MESSAGE)
        signed = ledger.notary.latest_checkpoint
        # It covers the whole sealed log: 3 entries and a heads leaf per checkpoint.
        assert signed is not None and signed[0].size == ledger.notary.sequencer.reader.size == 3 + 2
        async with bus_admin_connection(ledger) as bus:
            # The newest message in CHECKPOINTS is foreign when the notary restarts.
            await bus.jetstream().publish(CHECKPOINT_SUBJECT, body, stream=CHECKPOINTS)
    async with running_notary(nats_server.url, home) as ledger:
        # Restarted: the foreign notes are skipped with an alarm.
        assert ledger.notary.alarms.is_active(FOREIGN_MESSAGE)
        latest = ledger.notary.latest_checkpoint
        assert latest is not None and latest[0] == signed[0]
        _, client = await ledger.enrol("insurer", ["insurer"])
        assert await _signed(ledger)


async def test_sealed_but_back_dated_or_replayed_seals_are_foreign(ledger: Harness) -> None:
    """Even signed by the log key, a batch whose ``integrated`` goes back in time is
    refused (never decreasing along the whole ledger, across batches); a genuine
    seal copied onto another message does not bind there."""
    key, client = await ledger.enrol("bank", ["owner"])
    await ledger.register(client, "scorer")
    reader = ledger.notary.sequencer.reader
    size, integrated = reader.size, reader.last_integrated
    assert integrated is not None
    event = client.event(
        ev.VersionDeployed, subject="system/scorer", version="2", artifact_sha256="ef" * 32
    )
    entry = Entry(size, integrated - timedelta(hours=1), "system/scorer", size - 1,
                  sign_event(event, key))  # fmt: skip
    frontier = reader.frontier.copy()
    frontier.append(entry.leaf_hash)
    nc = await connect(ledger.url)
    try:
        last = await last_sequence(nc, LEDGER)
        (sealed,) = [m async for m in read_stream(nc, LEDGER, last, last)]
        genuine_seal = sealed.headers[HDR_SEAL]
    finally:
        await nc.close()
    seal = sign_seal(ledger.home.notary_signer(), last + 1, size + 1, frontier.root(),
                     entry.integrated)  # fmt: skip
    async with bus_admin_connection(ledger) as bus:
        js = bus.jetstream()
        await js.publish(
            ledger_subject(entry.subject),
            entry.encoded,
            headers={HDR_SEAL: seal.header_value},
            stream=LEDGER,
        )
        await js.publish("ledger.x.y", b"replayed", headers={HDR_SEAL: genuine_seal}, stream=LEDGER)
    (deploy,) = deployments(client, "scorer", 1)
    receipt = await client.submit(deploy, timeout=20)
    assert receipt.index == size  # neither message got an index
    assert reader.foreign == [last + 1, last + 2]
    assert receipt.integrated >= integrated


async def test_a_batch_seen_while_being_committed_is_read_whole_not_skipped(
    nats_server: EmbeddedNats, home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nats-server shows an atomic batch being committed message by message
    (nats-io/nats-server#7128): a reader that meets the first messages of a batch
    before its last, sealed one must read on, not skip them as foreign (a notary
    that skipped them once appended index 150 at sequence 475). A tail that stays
    unsealed is foreign, after IN_PROGRESS_SECONDS."""
    from ledger.bus import sealed
    from ledger.bus.sealed import trusted_reader
    from tests.test_monitor import honest_history, quiet_notary

    async with quiet_notary(nats_server.url, home) as ledger:
        key = await honest_history(ledger)
        async with bus_admin_connection(ledger) as bus:
            reader = trusted_reader(bus, home.trust())
            async for _ in reader.read():
                pass
            size = reader.size
            assert reader.last_integrated is not None
            at = reader.last_integrated + timedelta(seconds=1)
            events = [
                ev.VersionDeployed(
                    v=1,
                    event_id=ev.new_event_id(),
                    actor="bank",
                    subject="system/scorer",
                    signed_at=at,
                    version=f"late-{i}",
                    artifact_sha256="ab" * 32,
                )
                for i in range(2)
            ]
            first = Entry(size, at, "system/scorer", None, sign_event(events[0], key))
            second = Entry(size + 1, at, "system/scorer", size, sign_event(events[1], key))
            frontier = reader.frontier.copy()
            frontier.append(first.leaf_hash)
            frontier.append(second.leaf_hash)
            stream_last = await last_sequence(bus, LEDGER)
            seal = sign_seal(home.notary_signer(), stream_last + 1, size + 2, frontier.root(), at)
            js = bus.jetstream()
            # the batch's first message is visible, its sealed last one not yet
            await js.publish(ledger_subject(first.subject), first.encoded, stream=LEDGER)

            async def the_rest() -> None:
                await asyncio.sleep(0.3)
                await js.publish(
                    ledger_subject(second.subject),
                    second.encoded,
                    headers={HDR_SEAL: seal.header_value},
                    stream=LEDGER,
                )

            rest = asyncio.create_task(the_rest())
            batches = [b async for b in reader.read()]
            await rest
            assert [[e.index for e in b.entries] for b in batches] == [[size, size + 1]]
            assert reader.foreign == [] and reader.size == size + 2

            # a tail that stays unsealed is not the notary's
            monkeypatch.setattr(sealed, "IN_PROGRESS_SECONDS", 0.3)
            junk = await js.publish("ledger.x.y", b"\x00not an entry", stream=LEDGER)
            assert [b async for b in reader.read()] == []
            assert reader.foreign == [junk.seq] and reader.position == junk.seq
