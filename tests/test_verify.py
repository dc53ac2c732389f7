"""Evidence bundles exported from a real running ledger, verified offline, and tampered with."""

from __future__ import annotations

import asyncio
import base64
import copy
import dataclasses
import itertools
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from ledger.bus.natsserver import EmbeddedNats
from ledger.bus.proofs import SignedCheckpoint, export_bundle, tlog_proof
from ledger.bus.streams import connect
from ledger.formats.checkpoint import (
    Checkpoint,
    CosignatureSigner,
    cosignature_verifier_key,
    parse_checkpoint,
    parse_tlog_proof,
)
from ledger.formats.entry import Entry
from ledger.formats.keys import generate
from ledger.formats.note import Verifier, Verifiers, open_note, sign_note
from ledger.formats.timeutil import SimulatedClock
from ledger.formats.tree import TreeStore
from ledger.formats.trust import TrustedKey
from ledger.law import events as ev
from ledger.law.rulebook import default_parameters
from ledger.verify.bundle import VerificationError, verify_bundle
from tests.conftest import ORIGIN, Harness, authorized_server, running_notary, serving


async def export(h: Harness, **selection: Any) -> bytes:
    """Checkpoint what is there, then export a bundle (of system/scorer by default)."""
    await h.notary.checkpoint()
    if not {"subjects", "actor", "index_range"} & selection.keys():
        selection["subjects"] = ["system/scorer"]
    nc = await connect(h.url)
    try:
        with TreeStore(h.home.tree_path) as tree:
            return await export_bundle(nc, tree, trust=h.home.trust(), **selection)
    finally:
        await nc.close()


async def small_ledger(h: Harness) -> None:
    _, bank = await h.enrol("bank", ["owner"])
    _, insurer = await h.enrol("insurer", ["insurer"])
    await h.register(bank, "scorer")
    await bank.submit(
        bank.event(
            ev.VersionDeployed, subject="system/scorer", version="1.0", artifact_sha256="a" * 64
        )
    )
    await insurer.submit(
        insurer.event(
            ev.InsurancePolicyChanged,
            subject="system/scorer",
            policy_number="P-1",
            coverage_tenge=1_000_000,
            start=datetime(2026, 1, 1, tzinfo=UTC),
            end=datetime(2027, 1, 1, tzinfo=UTC),
            status="bound",
        )
    )


def failure(bundle: dict[str, Any], trust: Any, **kw: Any) -> VerificationError:
    with pytest.raises(VerificationError) as e:
        verify_bundle(json.dumps(bundle).encode(), trust, **kw)
    return e.value


async def test_a_bundle_from_a_running_ledger_verifies_offline(ledger: Harness) -> None:
    await small_ledger(ledger)
    bundle = await export(ledger)
    report = verify_bundle(bundle, ledger.home.trust())
    # six entries, then the heads leaf at 6 the checkpoint ends with
    assert report.size == 7 and report.entries == 6 and report.signatures == 6
    assert report.chains == {
        "actor/bank": 1,
        "actor/insurer": 2,
        "ledger/genesis": 0,
        "system/scorer": 5,
    }
    assert "6 entries, each proven in the tree" in "\n".join(report.lines)


async def test_every_flipped_byte_is_caught_and_named(ledger: Harness) -> None:
    await small_ledger(ledger)
    doc = json.loads(await export(ledger))
    trust = ledger.home.trust()
    flips = 0

    def attempt(mutated: dict[str, Any], checks: set[str], index: int | None) -> None:
        nonlocal flips
        flips += 1
        err = failure(mutated, trust)
        assert err.check in checks, (err, checks)
        if index is not None:
            assert err.index == index, err

    # every byte of the checkpoint note (its ASCII characters; the em dash is
    # the separator of the signature line)
    note = doc["checkpoint"]
    for i, c in enumerate(note):
        if ord(c) < 128:
            mutated = copy.deepcopy(doc)
            mutated["checkpoint"] = note[:i] + chr(ord(c) ^ 1) + note[i + 1 :]
            attempt(mutated, {"checkpoint", "bundle"}, None)
    # every byte of two whole entries: the genesis and a system event (header,
    # payload, DSSE signature, key id ...)
    for position in (0, len(doc["entries"]) - 1):
        raw = base64.b64decode(doc["entries"][position]["entry"])
        index = doc["entries"][position]["index"]
        for i in range(len(raw)):
            flipped = bytearray(raw)
            flipped[i] ^= 0x01
            mutated = copy.deepcopy(doc)
            mutated["entries"][position]["entry"] = base64.b64encode(bytes(flipped)).decode()
            attempt(mutated, {"inclusion"}, index)
    # every byte of every proof hash of one entry
    position = len(doc["entries"]) // 2
    index = doc["entries"][position]["index"]
    for h, b64 in enumerate(doc["entries"][position]["proof"]):
        raw = base64.b64decode(b64)
        for i in range(len(raw)):
            flipped = bytearray(raw)
            flipped[i] ^= 0x80
            mutated = copy.deepcopy(doc)
            mutated["entries"][position]["proof"][h] = base64.b64encode(bytes(flipped)).decode()
            attempt(mutated, {"inclusion"}, index)
    # a proof hash dropped, or one added
    mutated = copy.deepcopy(doc)
    mutated["entries"][position]["proof"].pop()
    attempt(mutated, {"inclusion"}, index)
    mutated = copy.deepcopy(doc)
    mutated["entries"][position]["proof"].append(base64.b64encode(b"\0" * 32).decode())
    attempt(mutated, {"inclusion"}, index)
    assert flips > 2000


async def test_a_hole_in_a_prev_chain_is_found(ledger: Harness) -> None:
    await small_ledger(ledger)
    doc = json.loads(await export(ledger))
    trust = ledger.home.trust()
    # drop the VersionDeployed entry (index 4) from the system's chain
    without = copy.deepcopy(doc)
    without["entries"] = [e for e in doc["entries"] if e["index"] != 4]
    err = failure(without, trust)
    assert err.check == "chain" and err.index == 4 and "missing" in err.message
    # drop the bank's enrolment: its signatures cannot be judged any more
    without = copy.deepcopy(doc)
    without["entries"] = [e for e in doc["entries"] if e["index"] != 1]
    assert failure(without, trust).check == "chain"
    without["chains"].pop("actor/bank")
    err = failure(without, trust)
    # the heads leaf says the bank has an entry: the bundle left its key history out
    assert (err.check, err.subject) == ("completeness", "actor/bank")
    assert "carries none of them" in err.message
    # an extra entry of the subject that is not on the chain from its head
    shortened = copy.deepcopy(doc)
    shortened["chains"]["system/scorer"] = 4
    err = failure(shortened, trust)
    assert err.check == "chain" and err.index == 5


async def test_entries_signed_after_a_later_revealed_compromise_fail(
    nats_server: EmbeddedNats, home: Any
) -> None:
    t0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
    clock = SimulatedClock(t0)
    async with running_notary(nats_server.url, home, clock) as h:
        bank_key, bank = await h.enrol("bank", ["owner"])
        await h.register(bank, "scorer")
        clock.set(t0 + timedelta(days=2))
        await bank.submit(
            bank.event(
                ev.VersionDeployed, subject="system/scorer", version="2", artifact_sha256="b" * 64
            )
        )
        # verifies before anyone knows the key leaked
        verify_bundle(await export(h), home.trust())
        clock.set(t0 + timedelta(days=3))
        reg = await h.regulator()
        await reg.submit(
            reg.event(
                ev.KeyRevoked,
                subject="actor/bank",
                key=bank_key.public_key_b64,
                compromised_at=t0 + timedelta(days=1),
                reason="the key leaked on day 1",
            )
        )
        bundle = await export(h)
        entries = [e for e in await ledger_entries(h) if isinstance(e, Entry)]
    # the first export's checkpoint ended with a heads leaf at 4: the revocation is 5
    err = failure(json.loads(bundle), home.trust())
    assert err.check == "key" and err.index == 3
    assert "compromised at 2026-05-05T09:00:00Z (revoked in entry 5)" in err.message
    # the timeline says the same of that entry, and nothing of the earlier ones
    from eventsourcing.persistence import Tracking

    from ledger.views.store import open_view

    view = open_view(
        {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(home.path / "v.db")}
    )
    view.process_event(
        [(e.index + 1, e.encoded) for e in entries], Tracking("LEDGER", entries[-1].index + 1)
    )
    rows = view.timeline("scorer")
    assert [r.verification for r in rows] == [
        "verified",
        "key compromised at 2026-05-05T09:00:00Z (revoked in entry 5, learnt later)",
    ]


async def test_a_forked_ledger_fails_against_a_pinned_checkpoint(tmp_path: Path, home: Any) -> None:
    a_server, b_server = (
        authorized_server(tmp_path / "a", home),
        authorized_server(tmp_path / "b", home),
    )
    with serving(a_server, home), serving(b_server, home):
        async with running_notary(a_server.url, home) as a:
            _, bank = await a.enrol("bank", ["owner"])
            await a.register(bank, "scorer")
            await a.notary.checkpoint()
            pinned = a.notary.latest_checkpoint
            assert pinned is not None and pinned[0].size == 4  # 3 entries, a heads leaf
            pinned_note = pinned[1]
            await a.enrol("media", ["owner"])
            # the honest ledger grew: it proves it extends the pinned checkpoint
            honest = await export(a, since=4)
            report = verify_bundle(honest, home.trust(), since=pinned_note)
            assert report.consistent_with == 4
        # another ledger from the same keys and genesis envelope, other history
        home.tree_path.unlink()
        async with running_notary(b_server.url, home) as b:
            _, bank_b = await b.enrol("bank", ["owner"])
            await b.register(bank_b, "scorer")
            await b.enrol("media", ["owner"])
            forked = await export(b, since=4)
    # on its own the fork is a well-signed bundle ...
    verify_bundle(forked, home.trust())
    # ... but not an extension of what the reader saw before
    err = failure(json.loads(forked), home.trust(), since=pinned_note)
    assert err.check == "consistency" and "forked or rewritten" in err.message
    err = failure(
        {k: v for k, v in json.loads(forked).items() if k != "consistency"},
        home.trust(),
        since=pinned_note,
    )
    assert err.check == "consistency" and "no consistency proof" in err.message


async def test_witness_quorum_is_enforced(ledger: Harness) -> None:
    await small_ledger(ledger)
    doc = json.loads(await export(ledger))
    witness = generate("witness")
    name = "witness.example/w1"
    trust = dataclasses.replace(
        ledger.home.trust(),
        witness_keys=[TrustedKey(key=cosignature_verifier_key(name, witness.public_key))],
        witness_quorum=1,
    )
    err = failure(doc, trust)
    assert err.check == "checkpoint" and "requires 1" in err.message
    # the witness cosigns the checkpoint it saw: now the quorum is met
    log = Verifiers(*(Verifier.from_vkey(k) for k in trust.log_vkeys()))
    opened = open_note(doc["checkpoint"].encode(), log)
    cosigned = sign_note(opened, CosignatureSigner(name, witness.private_key))
    doc["checkpoint"] = cosigned.decode()
    report = verify_bundle(json.dumps(doc).encode(), trust)
    assert report.witnesses == [name]


async def test_receipt_gains_a_verified_tlog_proof_once_checkpointed(ledger: Harness) -> None:
    _, bank = await ledger.enrol("bank", ["owner"])
    receipt = await bank.submit(
        bank.event(
            ev.SystemRegistered,
            subject="system/scorer",
            name="Scorer",
            purpose="p",
            sector="s",
            owner="bank",
            holder="bank",
            generates_synthetic_content=False,
        )
    )
    with pytest.raises(Exception, match="not covered by a checkpoint yet"):
        await bank.inclusion_proof(receipt)
    await ledger.notary.checkpoint()
    proof = await bank.inclusion_proof(receipt)
    assert proof.index == receipt.index == 2
    # the checkpoint ends with the heads leaf at 3
    assert parse_checkpoint(open_note(proof.checkpoint, bank._verifiers).text).size == 4


def test_proofs_read_at_most_2_log2_n_stored_hashes(tmp_path: Path) -> None:
    """The proof path of `ailedger prove` on a tree of 10^5 entries."""
    import hashlib
    import random

    n = 100_000
    tree = TreeStore(tmp_path / "tree.hashes")
    for start in range(0, n, 5000):
        tree.append(
            start,
            [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(start, start + 5000)],
        )
    signer_key = generate("notary")
    from ledger.formats.checkpoint import Checkpoint
    from ledger.formats.note import Signer

    signer = Signer.from_private_key("tree.example/log", signer_key.private_key)
    note = sign_note(Checkpoint("tree.example/log", n, tree.root(n)).body(), signer)
    signed = SignedCheckpoint.parse(note)
    rng = random.Random(9)
    bound = 2 * math.ceil(math.log2(n))
    worst = 0
    for index in rng.sample(range(n), 300):
        tree.reads = 0
        proof = parse_tlog_proof(tlog_proof(tree, index, signed))
        worst = max(worst, tree.reads)
        assert proof.index == index
    assert worst <= bound, (worst, bound)


async def test_exported_bundles_match_the_published_schema(ledger: Harness) -> None:
    from ailedger.schemas import Bundle

    await small_ledger(ledger)
    bundle = await export(ledger)
    decoded = msgspec.json.decode(bundle, type=Bundle)
    assert decoded.format == "ailedger/bundle/v1" and len(decoded.entries) == 6


async def test_a_notary_refuses_to_sign_over_a_rewritten_history(tmp_path: Path, home: Any) -> None:
    """CHECKPOINTS restored next to another LEDGER (a wrong backup, a rewrite): the
    notary must not sign a checkpoint inconsistent with the one it signed before."""
    from ledger.bus.streams import CHECKPOINTS
    from services.notary import NotaryError

    a_server, b_server = (
        authorized_server(tmp_path / "a", home),
        authorized_server(tmp_path / "b", home),
    )
    with serving(a_server, home), serving(b_server, home):
        async with running_notary(a_server.url, home) as a:
            _, bank = await a.enrol("bank", ["owner"])
            await a.register(bank, "scorer")
            signed = await a.notary.checkpoint()
        assert signed is not None
        home.tree_path.unlink()
        async with running_notary(b_server.url, home) as b:
            _, bank_b = await b.enrol("bank", ["owner"])
            await b.register(bank_b, "other")
            await b.enrol("media", ["owner"])  # as many leaves as the checkpoint of a
        nc = await connect(b_server.url)
        try:
            await nc.jetstream().publish("checkpoint", signed, stream=CHECKPOINTS)
        finally:
            await nc.close()
        with pytest.raises(NotaryError, match="rewritten; refusing to sign"):
            async with running_notary(b_server.url, home):
                pass


async def test_checkpoints_follow_the_cadence_and_extend_each_other(
    nats_server: EmbeddedNats, home: Any
) -> None:
    from ledger.bus.streams import CHECKPOINTS, last_sequence, read_stream
    from ledger.formats.merkle import verify_consistency

    async with running_notary(
        nats_server.url, home, checkpoint_every=4, checkpoint_interval=3600
    ) as h:
        _, bank = await h.enrol("bank", ["owner"])
        await h.register(bank, "scorer")
        for i in range(9):
            await bank.submit(
                bank.event(
                    ev.VersionDeployed,
                    subject="system/scorer",
                    version=str(i),
                    artifact_sha256="c" * 64,
                )
            )
        await asyncio.sleep(1.2)  # the run loop checks the cadence twice a second
        nc = await connect(h.url)
        try:
            last = await last_sequence(nc, CHECKPOINTS)
            notes = [m.data async for m in read_stream(nc, CHECKPOINTS, 1, last)]
        finally:
            await nc.close()
        sizes = [SignedCheckpoint.parse(n).checkpoint.size for n in notes]
        assert sizes and all(b - a >= 4 for a, b in itertools.pairwise(sizes))
        assert sizes[-1] >= 9
        with TreeStore(h.home.tree_path) as tree:
            for old, new in itertools.pairwise(notes):
                o, n = (
                    SignedCheckpoint.parse(old).checkpoint,
                    SignedCheckpoint.parse(new).checkpoint,
                )
                proof = tree.consistency_proof(o.size, n.size)
                verify_consistency(o.size, n.size, o.root_hash, n.root_hash, proof)


async def test_actor_and_range_bundles_verify(ledger: Harness) -> None:
    await small_ledger(ledger)
    by_actor = await export(ledger, actor="insurer")
    by_range = await export(ledger, index_range=(3, 4))
    report = verify_bundle(by_actor, ledger.home.trust())
    # the insurer's own chain, the system it signed about, and every signer there
    assert set(report.chains) == {"actor/insurer", "system/scorer", "actor/bank", "ledger/genesis"}
    report = verify_bundle(by_range, ledger.home.trust())
    assert "system/scorer" in report.chains


async def test_a_claimed_verdict_is_recomputed_offline(ledger: Harness) -> None:
    await small_ledger(ledger)
    bundle = await export(ledger, claim=True)
    plain = await export(ledger)
    trust = ledger.home.trust()
    doc = json.loads(bundle)
    (claimed,) = doc["claim"]["verdicts"]
    # registered, deployed, insured, never classified or put in operation
    assert claimed["verdict"] == "compliant" and claimed["as_of_index"] == 5
    assert "policy/rulebook" not in doc["chains"]  # no adoption yet: the genesis holds the rules
    report = verify_bundle(bundle, trust, recompute=True)
    assert report.recomputed and "matches the claim" in report.recomputed[0]
    # a claim the entries do not support is caught and named
    lying = copy.deepcopy(doc)
    lying["claim"]["verdicts"][0]["verdict"] = "non_compliant"
    err = failure(lying, trust, recompute=True)
    assert err.check == "claim" and "its entries give 'compliant'" in err.message
    lying = copy.deepcopy(doc)
    lying["claim"]["verdicts"][0]["findings"] = [
        {"rule": "R1", "status": "violation", "severity": "high", "since": "2026-01-01T00:00:00Z",
         "deadline": None, "legal_basis": "x", "evidence": [], "summary": "x"}
    ]  # fmt: skip
    assert failure(lying, trust, recompute=True).check == "claim"
    err = failure(json.loads(plain), trust, recompute=True)
    assert err.check == "claim" and "no ailedger/verdict/v1 claim" in err.message
    # a claim is always recomputed, asked for or not
    err = failure(lying, trust)
    assert err.check == "claim"


# --- what a log operator could forge, and honest histories that must verify ---------------


async def ledger_entries(h: Harness) -> list[Any]:
    """Every leaf of LEDGER (entries and heads leaves), at its index."""
    from ledger.bus.sealed import parse_leaf
    from ledger.bus.streams import LEDGER, last_sequence, read_stream

    nc = await connect(h.url)
    try:
        last = await last_sequence(nc, LEDGER)
        return [parse_leaf(m.data) async for m in read_stream(nc, LEDGER, 1, last)]
    finally:
        await nc.close()


def forged_bundle(h: Harness, entries: list[Any], chains: dict[str, int]) -> dict[str, Any]:
    """A bundle over ``entries`` (the real leaves plus forged ones) and a heads leaf over
    them, with a checkpoint the operator signs with the notary key: what the log key
    alone allows."""
    from ledger.formats import strictjson
    from ledger.formats.checkpoint import format_tlog_proof
    from ledger.formats.dsse import parse_envelope
    from ledger.formats.heads import (
        HeadsLeaf,
        HeadValue,
        reference_proof,
        reference_root,
        subject_key,
    )
    from ledger.formats.merkle import MemoryHashStore, prove_record
    from ledger.law.rulebook import DEFAULT_POLICY_ID

    values: dict[bytes, HeadValue] = {}
    for e in entries:
        if isinstance(e, Entry):
            old = values.get(subject_key(e.subject))
            count = old.count + 1 if old else 1
            values[subject_key(e.subject)] = HeadValue(e.index, count, e.leaf_hash)
    heads = HeadsLeaf(len(entries), len(values), reference_root(values))
    tree = MemoryHashStore()
    for e in [*entries, heads]:
        tree.append(e.encoded)
    note = sign_note(Checkpoint(ORIGIN, tree.size, tree.root()).body(), h.home.notary_signer())
    wanted = set()
    for head in chains.values():
        index: int | None = head
        while index is not None:
            wanted.add(index)
            index = entries[index].prev
    signers = {
        str(strictjson.loads(parse_envelope(entries[i].envelope).payload)["actor"]) for i in wanted
    }
    relied = {*chains, *(f"actor/{a}" for a in signers), f"policy/{DEFAULT_POLICY_ID}"}
    heads_proof = prove_record(tree.size, heads.index, tree.read_hashes)
    return {
        "format": "ailedger/bundle/v1",
        "origin": ORIGIN,
        "checkpoint": note.decode(),
        "chains": chains,
        "entries": [
            {
                "index": i,
                "entry": base64.b64encode(entries[i].encoded).decode(),
                "proof": [
                    base64.b64encode(x).decode()
                    for x in prove_record(tree.size, i, tree.read_hashes)
                ],
            }
            for i in sorted(wanted)
        ],
        "heads": {
            "tlog_proof": format_tlog_proof(
                heads.index, heads_proof, note, extra=heads.encoded
            ).decode(),
            "subjects": {s: reference_proof(values, s).encode() for s in sorted(relied)},
        },
    }


async def test_an_operator_forged_entry_by_an_unauthorized_signer_fails(ledger: Harness) -> None:
    from ledger.bus.client import sign_event
    from ledger.formats.entry import Entry

    bank_key, bank = await ledger.enrol("bank", ["owner"])
    await ledger.register(bank, "scorer")
    entries = await ledger_entries(ledger)
    # the bank "adopts" a rulebook without insurance or audits: the notary would
    # refuse it (role_not_allowed), so only someone holding the log key could append it
    loose = default_parameters(insurance_required_levels=[], audit_required_levels=[])
    forged = sign_event(
        ev.PolicyAdopted(
            v=1,
            event_id=ev.new_event_id(),
            actor="bank",
            subject="policy/rulebook",
            signed_at=entries[-1].integrated,
            title="loose",
            effective_from=entries[-1].integrated + timedelta(days=1),
            parameters=loose,
            legal_references=["none"],
        ),
        bank_key,
    )
    entries.append(Entry(len(entries), entries[-1].integrated, "policy/rulebook", None, forged))
    chains = {"ledger/genesis": 0, "actor/bank": 1, "system/scorer": 2, "policy/rulebook": 3}
    bundle = forged_bundle(ledger, entries, chains)
    err = failure(bundle, ledger.home.trust())
    assert err.check == "authority" and err.index == 3
    assert "bank (roles: owner) may not sign PolicyAdopted" in err.message
    # the same bundle without the forged entry is fine: the check is about the entry
    honest = forged_bundle(
        ledger, entries[:3], {"ledger/genesis": 0, "actor/bank": 1, "system/scorer": 2}
    )
    verify_bundle(json.dumps(honest).encode(), ledger.home.trust())


async def test_rotations_and_self_revocations_signed_with_the_old_key_verify(
    nats_server: EmbeddedNats, home: Any
) -> None:
    """Judged as the notary judged them: against the keys as they stood at each entry."""
    t0 = datetime(2026, 6, 1, 9, tzinfo=UTC)
    clock = SimulatedClock(t0)
    async with running_notary(nats_server.url, home, clock) as h:
        old, bank = await h.enrol("bank", ["owner"])
        await h.register(bank, "scorer")
        new = generate("bank")
        clock.set(t0 + timedelta(hours=1))
        # rotate out the old key at once, signed with the old key itself
        await bank.submit(
            bank.event(
                ev.KeyRotated,
                subject="actor/bank",
                new_key=new.public_key_b64,
                old_key=old.public_key_b64,
                old_key_valid_until=t0 + timedelta(hours=1),
            )
        )
        renewed = await h.client(new)
        await renewed.submit(
            renewed.event(
                ev.VersionDeployed, subject="system/scorer", version="2", artifact_sha256="d" * 64
            )
        )
        clock.set(t0 + timedelta(hours=2))
        # the bank revokes its new key, compromised now, with that very key
        await renewed.submit(
            renewed.event(
                ev.KeyRevoked,
                subject="actor/bank",
                key=new.public_key_b64,
                compromised_at=t0 + timedelta(hours=2),
                reason="laptop lost",
            )
        )
        report = verify_bundle(await export(h), home.trust())
        assert report.chains["actor/bank"] == 5 and report.signatures == 6


async def test_trust_windows_of_witnesses_and_log_keys(ledger: Harness) -> None:
    await small_ledger(ledger)
    doc = json.loads(await export(ledger))
    trust = ledger.home.trust()
    latest = max(Entry.parse(base64.b64decode(e["entry"])).integrated for e in doc["entries"])
    witness = generate("witness")
    name = "witness.example/w1"
    vkey = cosignature_verifier_key(name, witness.public_key)
    log = Verifiers(*(Verifier.from_vkey(k) for k in trust.log_vkeys()))
    opened = open_note(doc["checkpoint"].encode(), log)
    doc["checkpoint"] = sign_note(opened, CosignatureSigner(name, witness.private_key)).decode()
    expired = dataclasses.replace(
        trust,
        witness_keys=[TrustedKey(key=vkey, valid_until=datetime(2020, 1, 1, tzinfo=UTC))],
        witness_quorum=1,
    )
    err = failure(doc, expired)
    assert err.check == "checkpoint" and "0 valid witness cosignatures" in err.message
    # a log key retired before the newest entry cannot have signed the checkpoint
    (log_key,) = trust.log_keys
    retired = dataclasses.replace(
        trust, log_keys=[dataclasses.replace(log_key, valid_until=latest - timedelta(seconds=1))]
    )
    assert failure(doc, retired).check == "checkpoint"
    # a log key that took over after these entries (a rotation) may sign a later checkpoint
    rotated = dataclasses.replace(
        trust, log_keys=[dataclasses.replace(log_key, valid_from=latest + timedelta(days=30))]
    )
    verify_bundle(json.dumps(doc).encode(), rotated, now=latest + timedelta(days=31))


async def test_hostile_bundles_are_refused_without_a_traceback(ledger: Harness) -> None:
    await small_ledger(ledger)
    doc = json.loads(await export(ledger, claim=True))
    trust = ledger.home.trust()
    bad = copy.deepcopy(doc)
    bad["claim"]["verdicts"][0]["findings"] = 5
    assert failure(bad, trust, recompute=True).check == "claim"
    bad = copy.deepcopy(doc)
    bad["claim"]["verdicts"][0]["as_of_index"] = True
    assert failure(bad, trust, recompute=True).check == "claim"
    bad = copy.deepcopy(doc)
    bad["checkpoint"] = "\ud800"
    assert failure(bad, trust).check == "checkpoint"
    for mutation in ({"chains": []}, {"entries": {}}, {"entries": [1]}, {"format": 1}):
        assert failure({**doc, **mutation}, trust).check == "bundle"
    with pytest.raises(VerificationError):
        verify_bundle(b"\xff\xfe", trust)
