"""``ailedger monitor`` replays a real ledger (real nats-server, real notary) read-only and
catches what the notary's log key could sign but the log does not hold: a wrong heads
root, a forked checkpoint, a ``prev`` that skips an entry, a forged signature. Each
forgery is made the way a notary operator (the log key) on a compromised bus would
make it; each must fail for the reason it names, with an evidence file whose
material this test checks like a third party, with nothing but the trust policy."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ledger.bus.client import sign_event
from ledger.bus.home import Home
from ledger.bus.natsserver import EmbeddedNats
from ledger.bus.sealed import SealedReader, parse_leaf, trusted_reader
from ledger.bus.streams import (
    CHECKPOINT_SUBJECT,
    CHECKPOINTS,
    CREDS_ENV,
    HEADS_SUBJECT,
    LEDGER,
    last_sequence,
    publish_atomic,
)
from ledger.formats.checkpoint import Checkpoint, parse_checkpoint
from ledger.formats.dsse import parse_envelope
from ledger.formats.entry import Entry, ledger_subject
from ledger.formats.heads import (
    HeadsLeaf,
    HeadsProof,
    HeadValue,
    heads_msg_id,
    reference_root,
    subject_key,
)
from ledger.formats.keys import ActorKey, decode_public_key
from ledger.formats.merkle import (
    ConsistencyProofError,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from ledger.formats.note import Verifier, Verifiers, open_note, sign_note
from ledger.formats.seal import HDR_SEAL, Seal, open_seal, sign_seal
from ledger.law import events as ev
from ledger.state.application import LedgerState
from tests.conftest import Harness, bus_admin_connection, deployments, running_notary


def quiet_notary(url: str, home: Home) -> running_notary:
    """A notary that signs checkpoints only when a test asks (ledger.notary.checkpoint())."""
    return running_notary(url, home, checkpoint_interval=3600.0, checkpoint_every=100_000)


# --- running the monitor as a user does ----------------------------------------------------


def _command(home: Home, url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "ailedger", "monitor", "--home", str(home.path), "--nats", url]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != CREDS_ENV}  # its own reader identity


def monitor(
    home: Home, url: str, *args: str, cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_command(home, url), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
    )


def start_monitor(home: Home, url: str, *args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*_command(home, url), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )


def evidence_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("evidence-*"))


# --- the honest history every test starts from ---------------------------------------------


async def honest_history(ledger: Harness) -> ActorKey:
    """A bank with a scorer and three deployments, then a checkpoint (ending with a
    heads leaf); returns the bank's key."""
    key, bank = await ledger.enrol("bank", ["owner"])
    await ledger.register(bank, "scorer")
    for e in deployments(bank, "scorer", 3):
        await bank.submit(e)
    assert await ledger.notary.checkpoint() is not None
    return key


async def read_log(nc: Any, home: Home) -> SealedReader:
    reader = trusted_reader(nc, home.trust())
    async for _ in reader.read():
        pass
    return reader


async def append_sealed(
    ledger: Harness, leaves: list[tuple[str, bytes, str]], last: datetime
) -> int:
    """What the holder of the log key can do on a compromised bus: append ``leaves``
    (LEDGER subject, bytes, message id) as one batch sealed with the real log key,
    ``last`` its last integration time. Returns the index of the first."""
    async with bus_admin_connection(ledger) as bus:
        reader = await read_log(bus, ledger.home)
        frontier = reader.frontier.copy()
        for _, data, _ in leaves:
            frontier.append(leaf_hash(data))
        stream_last = await last_sequence(bus, LEDGER)
        seal = sign_seal(
            ledger.home.notary_signer(), stream_last + 1, frontier.size, frontier.root(), last
        )
        messages = [(s, d, {"Nats-Msg-Id": i}) for s, d, i in leaves]
        messages[-1][2][HDR_SEAL] = seal.header_value
        await publish_atomic(bus, messages, stream_last)
        return reader.size


async def publish_checkpoint(ledger: Harness, note: bytes) -> None:
    async with bus_admin_connection(ledger) as bus:
        await bus.jetstream().publish(CHECKPOINT_SUBJECT, note, stream=CHECKPOINTS)


def forged_entry(index: int, subject: str, prev: int | None, envelope: bytes) -> Entry:
    return Entry(index, datetime.now(UTC), subject, prev, envelope)


# --- checking evidence as a third party ----------------------------------------------------


def log_verifiers(home: Home) -> Verifiers:
    return Verifiers(*(Verifier.from_vkey(k) for k in home.trust().log_vkeys()))


def evidence_of(path: Path, kind: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    assert doc["format"] == "ailedger/evidence/v1"
    assert doc["kind"] == kind
    return doc


def proven_leaf(doc: dict[str, Any], role: str, home: Home) -> tuple[bytes, Seal]:
    """The one leaf of ``role``: its seal verifies with the log key and the leaf is in
    the seal's tree at its index. Returns its bytes and seal."""
    (leaf,) = [x for x in doc["leaves"] if x["role"] == role]
    data = base64.b64decode(leaf["leaf"])
    seal = open_seal(base64.b64decode(leaf["seal"]), log_verifiers(home))
    proof = [base64.b64decode(h) for h in leaf["proof"]]
    verify_inclusion(leaf_hash(data), leaf["index"], seal.size, proof, seal.root)
    # and the proof is bound to these bytes: one flipped byte and it fails
    flipped = bytes([data[0] ^ 1]) + data[1:]
    with pytest.raises(ValueError):
        verify_inclusion(leaf_hash(flipped), leaf["index"], seal.size, proof, seal.root)
    return data, seal


def signed_checkpoint(doc: dict[str, Any], role: str, home: Home) -> Checkpoint:
    (note,) = [base64.b64decode(c["note"]) for c in doc["checkpoints"] if c["role"] == role]
    return parse_checkpoint(open_note(note, log_verifiers(home)).text)


# --- an honest ledger ----------------------------------------------------------------------


async def test_an_honest_ledger_passes_once_and_foreign_messages_are_alarms_not_findings(
    nats_server: EmbeddedNats, home: Home, tmp_path: Path
) -> None:
    async with quiet_notary(nats_server.url, home) as ledger:
        await honest_history(ledger)
        await ledger.enrol("insurer", ["insurer"])
        assert await ledger.notary.checkpoint() is not None
        size = ledger.notary.sequencer.reader.size
        subjects = ledger.notary.sequencer.heads.subjects
        # a compromised bus appends garbage and an unsigned checkpoint: foreign
        async with bus_admin_connection(ledger) as bus:
            await bus.jetstream().publish("ledger.x.y", b"\x00garbage", stream=LEDGER)
            await bus.jetstream().publish(CHECKPOINT_SUBJECT, b"not a note\n", stream=CHECKPOINTS)

    result = monitor(home, nats_server.url, "--once", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["size"] == size
    assert report["newest_checkpoint"]["size"] == size
    assert report["checkpoints"] == 2 and report["heads_leaves"] == 2
    assert report["entries"] == size - 2
    assert report["signatures"] == report["entries"]  # each envelope verified once
    assert report["subjects"] == subjects
    assert len(report["foreign"]["ledger"]) == 1 and len(report["foreign"]["checkpoints"]) == 1
    assert evidence_files(tmp_path) == []

    text = monitor(home, nats_server.url, "--once", cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith(f"LEDGER: {size} sealed leaves ({size - 2} entries, 2 heads")
    assert f"head map: {subjects} subjects" in text.stdout
    assert "checkpoints: 2 checked, each the log's own tree ending with a heads leaf; " in (
        text.stdout
    )
    assert f"newest size {size} (CHECKPOINTS #" in text.stdout
    assert "foreign (skipped, no log key signed them): 1 in LEDGER, 1 in CHECKPOINTS" in text.stdout


# --- (a) a wrong heads root ------------------------------------------------------------------


async def test_a_heads_leaf_with_a_wrong_root_is_caught_with_the_changes_since_the_last_one(
    nats_server: EmbeddedNats, home: Home, tmp_path: Path
) -> None:
    async with quiet_notary(nats_server.url, home) as ledger:
        await honest_history(ledger)
        previous = ledger.notary.sequencer.last_heads
        assert previous is not None
        bank = ledger.clients[-1]
        for e in deployments(bank, "scorer", 2):  # after the last heads leaf
            await bank.submit(e)
        size = ledger.notary.sequencer.reader.size
        subjects = ledger.notary.sequencer.heads.subjects
    # the log key seals a heads leaf whose map root is not the map of the log
    wrong = HeadsLeaf(size, subjects, bytes(range(32)))
    index = await append_sealed(
        ledger, [(HEADS_SUBJECT, wrong.encoded, heads_msg_id(size))], datetime.now(UTC)
    )
    assert index == size

    result = monitor(home, nats_server.url, "--once", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "[heads_root_mismatch]" in result.stderr
    path = tmp_path / f"evidence-heads_root_mismatch-{size}.json"
    assert f"evidence in {path.name} [heads_root_mismatch]" in result.stderr
    doc = evidence_of(path, "heads_root_mismatch")

    data, _ = proven_leaf(doc, "heads", home)
    assert HeadsLeaf.parse(data) == wrong
    before, _ = proven_leaf(doc, "previous_heads", home)
    assert HeadsLeaf.parse(before) == previous
    # the third party's own map of the log (the ten-line ROOT), from the sealed leaves
    async with bus_admin_connection(ledger) as bus:
        heads: dict[bytes, HeadValue] = {}
        reader = trusted_reader(bus, home.trust())
        async for batch in reader.read():
            for _, entry in batch.subject_entries():
                if entry.index < size:
                    old = heads.get(subject_key(entry.subject))
                    heads[subject_key(entry.subject)] = HeadValue(
                        entry.index, 1 + (old.count if old else 0), entry.leaf_hash
                    )
    truth = reference_root(heads)
    assert doc["computed"] == {
        "size": size,
        "subjects": len(heads),
        "root": base64.b64encode(truth).decode(),
    }
    assert truth != wrong.root
    # what changed since the previous heads leaf, each with its proof under that root
    changes = doc["changed_since"]
    assert changes["subjects"] == 1 and not changes["cut"]
    (change,) = changes["heads_proofs"]
    assert change["subject"] == "system/scorer" and change["value"]["index"] == size - 1
    HeadsProof.parse(change["before"]).verify(previous.root)
    changed, _ = proven_leaf(doc, "changed", home)
    assert Entry.parse(changed).index == size - 1 and Entry.parse(changed).subject == (
        "system/scorer"
    )


# --- (b) forked checkpoints ------------------------------------------------------------------


async def test_a_second_checkpoint_of_the_same_size_with_another_root_is_a_fork(
    nats_server: EmbeddedNats, home: Home, tmp_path: Path
) -> None:
    async with quiet_notary(nats_server.url, home) as ledger:
        await honest_history(ledger)
        honest = ledger.notary.checkpointer.latest
        assert honest is not None
        size, root = honest[0].size, honest[0].root_hash
    other = bytes(32)
    forged = sign_note(Checkpoint(home.trust().origin, size, other).body(), home.notary_signer())
    await publish_checkpoint(ledger, forged)

    result = monitor(home, nats_server.url, "--once", "--json", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "[fork]" in result.stderr
    out = json.loads(result.stdout)
    assert out["ok"] is False and out["finding"] == "fork"
    doc = evidence_of(Path(out["evidence"]), "fork")
    assert Path(out["evidence"]) == tmp_path / f"evidence-fork-{size}.json"
    # two notes signed by the log key: same size, different roots
    claimed = signed_checkpoint(doc, "claimed", home)
    same = signed_checkpoint(doc, "same_size", home)
    assert (claimed.size, claimed.root_hash) == (size, other)
    assert (same.size, same.root_hash) == (size, root)
    assert doc["log_root"] == base64.b64encode(root).decode()


async def test_a_larger_checkpoint_that_does_not_extend_the_previous_one_is_a_fork(
    nats_server: EmbeddedNats, home: Home, tmp_path: Path
) -> None:
    async with quiet_notary(nats_server.url, home) as ledger:
        await honest_history(ledger)
        previous = ledger.notary.checkpointer.latest
        assert previous is not None
        bank = ledger.clients[-1]
        for e in deployments(bank, "scorer", 3):
            await bank.submit(e)
        size = ledger.notary.sequencer.reader.size
    old_size, old_root = previous[0].size, previous[0].root_hash
    assert size > old_size
    forged_root = leaf_hash(b"another history")
    forged = sign_note(
        Checkpoint(home.trust().origin, size, forged_root).body(), home.notary_signer()
    )
    await publish_checkpoint(ledger, forged)

    result = monitor(home, nats_server.url, "--once", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "[fork]" in result.stderr
    doc = evidence_of(tmp_path / f"evidence-fork-{size}.json", "fork")
    claimed = signed_checkpoint(doc, "claimed", home)
    before = signed_checkpoint(doc, "previous", home)
    assert (claimed.size, claimed.root_hash) == (size, forged_root)
    assert (before.size, before.root_hash) == (old_size, old_root)
    log_root = base64.b64decode(doc["log_root"])
    assert log_root != forged_root
    to_log, to_seal = doc["consistency"]
    # the previous checkpoint extends to the log's tree of `size` leaves ...
    proof = [base64.b64decode(h) for h in to_log["proof"]]
    verify_consistency(old_size, size, old_root, log_root, proof)
    # ... which the log key sealed (a seal covering it) ...
    (seal_doc,) = doc["seals"]
    seal = open_seal(base64.b64decode(seal_doc["note"]), log_verifiers(home))
    assert to_seal["new_size"] == seal.size >= size
    verify_consistency(
        size, seal.size, log_root, seal.root, [base64.b64decode(h) for h in to_seal["proof"]]
    )
    # ... and the claimed root is not that tree: the previous checkpoint does not
    # extend to it with the same proof
    with pytest.raises(ConsistencyProofError):
        verify_consistency(old_size, size, old_root, forged_root, proof)


async def test_a_checkpoint_that_does_not_end_with_a_heads_leaf_is_caught(
    nats_server: EmbeddedNats, home: Home, tmp_path: Path
) -> None:
    """The right root, signed by the log key, but its last leaf is an entry: it commits
    no head map (DESIGN §3)."""
    async with quiet_notary(nats_server.url, home) as ledger:
        await honest_history(ledger)
        bank = ledger.clients[-1]
        for e in deployments(bank, "scorer", 1):
            await bank.submit(e)
        size = ledger.notary.sequencer.reader.size
        root = ledger.notary.tree.root(size)
    note = sign_note(Checkpoint(home.trust().origin, size, root).body(), home.notary_signer())
    await publish_checkpoint(ledger, note)

    result = monitor(home, nats_server.url, "--once", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "[checkpoint_without_heads]" in result.stderr
    doc = evidence_of(
        tmp_path / f"evidence-checkpoint_without_heads-{size}.json", "checkpoint_without_heads"
    )
    checkpoint = signed_checkpoint(doc, "claimed", home)
    data, _ = proven_leaf(doc, "last_leaf", home)
    inclusion = doc["inclusion"]
    verify_inclusion(
        leaf_hash(data),
        size - 1,
        size,
        [base64.b64decode(h) for h in inclusion["proof"]],
        checkpoint.root_hash,
    )
    assert isinstance(parse_leaf(data), Entry)  # not a heads leaf


# --- (c) a prev that skips an entry ----------------------------------------------------------


async def test_an_entry_whose_prev_skips_the_subjects_newest_entry_is_caught(
    nats_server: EmbeddedNats, home: Home, tmp_path: Path
) -> None:
    async with quiet_notary(nats_server.url, home) as ledger:
        key = await honest_history(ledger)
        newest = ledger.notary.state.system("scorer")
        assert newest is not None and newest.chain_head is not None
        head = newest.chain_head
        bank = ledger.clients[-1]
        event = bank.event(
            ev.VersionDeployed, subject="system/scorer", version="9.9", artifact_sha256="ef" * 32
        )
    # signed by the bank's real key; the notary's entry line points before its last entry
    async with bus_admin_connection(ledger) as bus:
        index = (await read_log(bus, home)).size
    skipped_to = head - 1
    entry = forged_entry(index, "system/scorer", skipped_to, sign_event(event, key))
    await append_sealed(
        ledger,
        [(ledger_subject("system/scorer"), entry.encoded, event.event_id)],
        entry.integrated,
    )

    result = monitor(home, nats_server.url, "--once", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "[prev_mismatch]" in result.stderr
    assert f"says prev {skipped_to}, but the newest entry about system/scorer" in result.stderr
    doc = evidence_of(tmp_path / f"evidence-prev_mismatch-{index}.json", "prev_mismatch")
    assert (doc["claimed_prev"], doc["computed_prev"]) == (skipped_to, head)
    # both entries sealed by the log key, about the same subject: the skipped one
    # stands between the offending entry's prev and the offending entry
    offending, _ = proven_leaf(doc, "offending", home)
    skipped, _ = proven_leaf(doc, "newest_of_subject", home)
    o, s = Entry.parse(offending), Entry.parse(skipped)
    assert o.subject == s.subject == "system/scorer"
    assert o.prev is not None and o.prev < s.index < o.index
    assert s.prev == o.prev  # both claim the same predecessor: the chain forks
    pointed, _ = proven_leaf(doc, "pointed_to", home)
    assert Entry.parse(pointed).index == skipped_to
    # each leaf once: the chain from the newest entry down to the prev is all there
    assert sorted(x["index"] for x in doc["leaves"]) == [skipped_to, head, index]


async def test_a_sealed_entry_with_a_forged_signature_is_caught_though_replay_accepts_it(
    nats_server: EmbeddedNats, home: Home, tmp_path: Path
) -> None:
    """Replay trusts the hinted key of a sealed entry (the notary checked it); the monitor
    verifies every signature, so the log key cannot forge an actor's event."""
    async with quiet_notary(nats_server.url, home) as ledger:
        key = await honest_history(ledger)
        scorer = ledger.notary.state.system("scorer")
        assert scorer is not None
        head = scorer.chain_head
        bank = ledger.clients[-1]
        event = bank.event(
            ev.VersionDeployed, subject="system/scorer", version="6.6", artifact_sha256="66" * 32
        )
    envelope = json.loads(sign_event(event, key))
    sig = bytearray(base64.b64decode(envelope["signatures"][0]["sig"]))
    sig[5] ^= 0xFF
    envelope["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    forged_env = json.dumps(envelope, separators=(",", ":")).encode()
    async with bus_admin_connection(ledger) as bus:
        index = (await read_log(bus, home)).size
    entry = forged_entry(index, "system/scorer", head, forged_env)
    await append_sealed(
        ledger,
        [(ledger_subject("system/scorer"), entry.encoded, event.event_id)],
        entry.integrated,
    )
    # the replay the notary and the projector do takes it
    async with bus_admin_connection(ledger) as bus:
        reader = trusted_reader(bus, home.trust())
        state = LedgerState(trust=home.trust())
        async for batch in reader.read():
            pairs = batch.subject_entries()
            if pairs:
                state.replay(
                    [(m.sequence, m.data) for m, _ in pairs], first_index=batch.first_index
                )
        assert state.size == index + 1

    result = monitor(home, nats_server.url, "--once", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "[signature_invalid]" in result.stderr
    doc = evidence_of(tmp_path / f"evidence-signature_invalid-{index}.json", "signature_invalid")
    offending, _ = proven_leaf(doc, "offending", home)
    env = parse_envelope(Entry.parse(offending).envelope)
    # the bank's keys, from its own sealed chain (its enrolment): none made this signature
    keys = []
    for leaf in doc["leaves"]:
        if leaf["role"] == "signer_chain":
            data, _ = proven_leaf({"leaves": [leaf]}, "signer_chain", home)
            payload = json.loads(parse_envelope(Entry.parse(data).envelope).payload)
            keys += payload.get("public_keys", [])
    assert keys == [key.public_key_b64]
    assert not any(env.verify(decode_public_key(k)) for k in keys)


# --- following, and no server --------------------------------------------------------------


async def test_following_reports_then_catches_a_fork_appended_while_it_runs(
    nats_server: EmbeddedNats, home: Home, tmp_path: Path
) -> None:
    async with quiet_notary(nats_server.url, home) as ledger:
        await honest_history(ledger)
        latest = ledger.notary.checkpointer.latest
        assert latest is not None
        size = latest[0].size
    follow = start_monitor(home, nats_server.url, "--json", "--poll", "0.2", cwd=tmp_path)
    try:
        assert follow.stdout is not None
        first = json.loads(follow.stdout.readline())
        assert first["ok"] and first["newest_checkpoint"]["size"] == size
        forged = sign_note(
            Checkpoint(home.trust().origin, size, bytes(32)).body(), home.notary_signer()
        )
        await publish_checkpoint(ledger, forged)
        assert follow.wait(60) == 1
        last = json.loads(follow.stdout.read().strip().splitlines()[-1])
        assert last["finding"] == "fork"
        evidence_of(Path(last["evidence"]), "fork")
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()


async def test_following_an_honest_ledger_stops_cleanly_on_sigint(
    nats_server: EmbeddedNats, home: Home, tmp_path: Path
) -> None:
    async with quiet_notary(nats_server.url, home) as ledger:
        await honest_history(ledger)
    follow = start_monitor(home, nats_server.url, "--poll", "0.2", cwd=tmp_path)
    try:
        assert follow.stdout is not None
        assert "LEDGER:" in follow.stdout.readline()
        await asyncio.sleep(0.5)
        follow.send_signal(signal.SIGINT)
        assert follow.wait(30) == 0
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()


def test_no_server_exits_3(home: Home, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = monitor(home, f"nats://127.0.0.1:{port}", "--once", cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert "[nats_unreachable]" in result.stderr
