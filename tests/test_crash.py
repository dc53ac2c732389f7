"""Notary processes killed mid-burst, and two notaries at once: one gap-free ledger.

The notaries run as real processes (``python -m ailedger up``) against a
nats-server started here; clients keep submitting while they are killed
with SIGKILL and restarted.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import re
from pathlib import Path

from ledger.bus.client import SubmissionError
from ledger.bus.home import Home
from ledger.bus.natsserver import EmbeddedNats
from ledger.bus.proofs import SignedCheckpoint
from ledger.bus.sealed import Leaf, parse_leaf
from ledger.bus.streams import CHECKPOINTS, LEDGER, connect, last_sequence, read_stream
from ledger.formats.dsse import parse_envelope
from ledger.formats.entry import Entry
from ledger.formats.heads import HeadsLeaf, HeadValue, reference_root, subject_key
from ledger.formats.merkle import MemoryHashStore, leaf_hash
from ledger.formats.receipt import Receipt
from tests.conftest import NotaryProcess, deployments, prepare


async def check_ledger(url: str) -> list[Leaf]:
    """An independent reading of LEDGER: gap-free, prev links right, event ids unique,
    every heads leaf the map of the entries before it (the reference ROOT)."""
    nc = await connect(url)
    try:
        last = await last_sequence(nc, LEDGER)
        messages = [m async for m in read_stream(nc, LEDGER, 1, last)]
    finally:
        await nc.close()
    assert [m.sequence for m in messages] == list(range(1, last + 1))
    entries = [parse_leaf(m.data) for m in messages]
    heads: dict[str, int] = {}
    values: dict[bytes, HeadValue] = {}
    seen: set[str] = set()
    for seq, entry in enumerate(entries, start=1):
        assert entry.index == seq - 1, "index = stream sequence - 1"
        if isinstance(entry, HeadsLeaf):
            assert entry.size == entry.index and entry.subjects == len(values)
            assert entry.root == reference_root(values), f"heads leaf {entry.index}"
            continue
        assert entry.prev == heads.get(entry.subject), f"prev of entry {entry.index}"
        key = subject_key(entry.subject)
        count = values[key].count + 1 if key in values else 1
        values[key] = HeadValue(entry.index, count, entry.leaf_hash)
        heads[entry.subject] = entry.index
        event_id = json.loads(parse_envelope(entry.envelope).payload)["event_id"]
        assert event_id not in seen, f"event {event_id} integrated twice"
        seen.add(event_id)
    subject_entries = [e for e in entries if isinstance(e, Entry)]
    assert all(a.integrated <= b.integrated for a, b in itertools.pairwise(subject_entries))
    return entries


async def check_checkpoints(url: str, entries: list[Leaf]) -> int:
    """Every signed checkpoint is a prefix of the one ledger: no two are inconsistent,
    and each ends with a heads leaf."""
    nc = await connect(url)
    try:
        last = await last_sequence(nc, CHECKPOINTS)
        notes = [m.data async for m in read_stream(nc, CHECKPOINTS, 1, last)]
    finally:
        await nc.close()
    if any(SignedCheckpoint.parse(note).checkpoint.size > len(entries) for note in notes):
        # A notary still running appended a heads leaf and signed a checkpoint after
        # ``entries`` were read: LEDGER read (and checked) again, after CHECKPOINTS.
        entries = await check_ledger(url)
    tree = MemoryHashStore()
    roots = {0: tree.root()}
    for entry in entries:
        tree.append(entry.encoded)
        roots[tree.size] = tree.root()
    sizes = []
    for note in notes:
        checkpoint = SignedCheckpoint.parse(note).checkpoint
        assert checkpoint.root_hash == roots[checkpoint.size], "a checkpoint off the ledger"
        assert isinstance(entries[checkpoint.size - 1], HeadsLeaf), "its last leaf is heads"
        sizes.append(checkpoint.size)
    assert sizes == sorted(sizes), "checkpoints only grow (or are cosigned again)"
    return len(notes)


def assert_receipts_in_ledger(receipts: list[Receipt], entries: list[Leaf]) -> None:
    for r in receipts:
        entry = entries[r.index]
        assert isinstance(entry, Entry)
        assert leaf_hash(entry.encoded) == r.leaf_hash, f"receipt {r.index} matches its entry"
        assert json.loads(parse_envelope(entry.envelope).payload)["event_id"] == r.event_id


def test_notary_killed_during_a_burst_loses_no_acknowledged_event(
    tmp_path: Path, nats_server: EmbeddedNats, home: Home
) -> None:
    notary = NotaryProcess.in_dir(
        home,
        nats_server.url,
        tmp_path,
        "notary",
        *("--batch-size", "40", "--ack-wait", "2", "--checkpoint-every", "50"),
    )
    rng = random.Random(230)

    async def run() -> list[Receipt | SubmissionError]:
        clients = await prepare(nats_server.url, home, owners=3)
        try:
            tasks = [
                asyncio.create_task(
                    c.submit_many(deployments(c, f"sys{i}", 200), concurrency=40, timeout=120)
                )
                for i, c in enumerate(clients)
            ]
            for _ in range(3):  # kill at random moments while receipts are being issued
                await asyncio.sleep(rng.uniform(0.2, 0.8))
                await asyncio.to_thread(notary.kill)
                await asyncio.sleep(rng.uniform(0.0, 0.3))
                await asyncio.to_thread(notary.restart)
            return [r for t in tasks for r in await t]
        finally:
            for c in clients:
                await c.close()

    try:
        notary.start()
        notary.wait_ready()
        results = asyncio.run(run())
        failures = [r for r in results if isinstance(r, SubmissionError)]
        assert not failures, failures[:3]
        receipts = [r for r in results if isinstance(r, Receipt)]
        entries = asyncio.run(check_ledger(nats_server.url))
        # genesis + 3 enrolments + 3 registrations + 600 deployments, each exactly once
        assert sum(isinstance(e, Entry) for e in entries) == 1 + 3 + 3 + 600
        assert_receipts_in_ledger(receipts, entries)
        assert notary.log.read_text().count("--- start ---") == 3
        assert asyncio.run(check_checkpoints(nats_server.url, entries)) >= 5
    finally:
        if notary.proc and notary.proc.poll() is None:
            notary.terminate()


def test_two_notaries_at_once_produce_one_gap_free_ledger(
    tmp_path: Path, nats_server: EmbeddedNats, home: Home
) -> None:
    notaries = [
        NotaryProcess.in_dir(
            home,
            nats_server.url,
            tmp_path,
            f"n{i}",
            *("--batch-size", "20"),
            *("--checkpoint-every", "50"),
        )
        for i in (1, 2)
    ]

    async def run() -> list[Receipt | SubmissionError]:
        clients = await prepare(nats_server.url, home, owners=4)
        try:
            tasks = [
                asyncio.create_task(
                    c.submit_many(deployments(c, f"sys{i}", 150), concurrency=50, timeout=120)
                )
                for i, c in enumerate(clients)
            ]
            return [r for t in tasks for r in await t]
        finally:
            for c in clients:
                await c.close()

    try:
        for n in notaries:
            n.start()
        for n in notaries:
            n.wait_ready()
        results = asyncio.run(run())
        assert all(isinstance(r, Receipt) for r in results), [
            r for r in results if not isinstance(r, Receipt)
        ][:3]
        entries = asyncio.run(check_ledger(nats_server.url))
        assert sum(isinstance(e, Entry) for e in entries) == 1 + 4 + 4 + 600
        assert_receipts_in_ledger([r for r in results if isinstance(r, Receipt)], entries)
        assert asyncio.run(check_checkpoints(nats_server.url, entries)) >= 5
        accepted = []
        for n in notaries:
            out = n.terminate()
            m = re.search(r"stopped cleanly: accepted (\d+)", out)
            assert m, out
            accepted.append(int(m.group(1)))
        # both sequenced entries, and together exactly the ledger (genesis aside)
        assert all(a > 0 for a in accepted), accepted
        assert sum(accepted) == sum(isinstance(e, Entry) for e in entries) - 1
    finally:
        for n in notaries:
            if n.proc and n.proc.poll() is None:
                n.terminate()
