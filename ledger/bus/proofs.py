"""Serving proofs: checkpoints, tlog-proofs, consistency proofs and evidence bundles.

Everything here is derived from LEDGER and CHECKPOINTS: the Merkle tree file
(:class:`ledger.formats.tree.TreeStore`) is brought up to date from LEDGER before use,
so any process can serve proofs, and a proof costs O(log n) reads of stored
hashes, never a recomputation of the tree.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client as NATS

from ledger.bus.sealed import Leaf, SealedReader, trusted_reader
from ledger.bus.streams import (
    CHECKPOINTS,
    LEDGER,
    BusError,
    get_message,
    last_sequence,
    read_stream,
    read_subject,
)
from ledger.formats import strictjson
from ledger.formats.checkpoint import Checkpoint, format_tlog_proof, parse_checkpoint
from ledger.formats.dsse import parse_envelope
from ledger.formats.entry import Entry, ledger_subject
from ledger.formats.errors import USAGE, LedgerError
from ledger.formats.headmap import HeadMap, MemoryNodeStore
from ledger.formats.heads import HeadsLeaf
from ledger.formats.note import NoteError, Verifier, Verifiers, open_note
from ledger.formats.tree import TreeStore
from ledger.formats.trust import TrustPolicy
from ledger.law.rules import evaluate, fact_from_entry
from ledger.verify.bundle import BUNDLE_FORMAT, CLAIM_FORMAT

__all__ = [
    "ProofUnavailable",
    "SignedCheckpoint",
    "consistency",
    "export_bundle",
    "find_checkpoint",
    "sync_tree",
    "tlog_proof",
]


class ProofUnavailable(LedgerError):
    """What was asked cannot be proven (no checkpoint yet, index beyond it ...)."""

    code = "proof_unavailable"
    exit_status = USAGE


@dataclass(frozen=True)
class SignedCheckpoint:
    checkpoint: Checkpoint
    note: bytes

    @staticmethod
    def parse(note: bytes) -> SignedCheckpoint:
        # The body ends at the blank line before the signatures; the signature
        # itself is checked by whoever relies on it (the verifier, the client).
        body, sep, _ = note.partition(b"\n\n")
        if not sep:
            raise ProofUnavailable("not a signed note")
        return SignedCheckpoint(parse_checkpoint(body.decode() + "\n"), note)


#: CHECKPOINTS messages read back from the end for the newest checkpoint, one request
#: each, before it is looked for in one ordered read of the whole stream.
NEWEST_LOOKBACK = 32


async def find_checkpoint(
    nc: NATS, size: int | None = None, *, verifiers: Verifiers | None = None
) -> SignedCheckpoint:
    """The latest checkpoint, or the one of tree size ``size``. Messages in
    CHECKPOINTS that are not checkpoints (or, given ``verifiers``, not signed by
    one of them) are foreign: skipped."""
    last = await last_sequence(nc, CHECKPOINTS)
    if last == 0:
        raise ProofUnavailable("no checkpoint has been signed yet")

    def opened(data: bytes) -> SignedCheckpoint | None:
        try:
            signed = SignedCheckpoint.parse(data)
            if verifiers is not None:
                open_note(data, verifiers)
        except (ProofUnavailable, NoteError, ValueError):
            return None
        return signed

    if size is None:
        # The newest: looked for from the end first (CHECKPOINTS grows by up to one a
        # second), one message back unless foreign ones were appended after it; past
        # NEWEST_LOOKBACK of those, read in order like any size.
        for seq in range(last, max(0, last - NEWEST_LOOKBACK), -1):
            m = await get_message(nc, CHECKPOINTS, seq)
            if m is not None and (newest := opened(m.data)) is not None:
                return newest
    found = None
    async for m in read_stream(nc, CHECKPOINTS, 1, last):
        signed = opened(m.data)
        if signed is not None and (size is None or signed.checkpoint.size == size):
            found = signed
    if found is None:
        raise ProofUnavailable(f"no checkpoint of size {size}")
    return found


async def sealed_pass(
    nc: NATS,
    trust: TrustPolicy,
    size: int,
    on_entry: Callable[[int, Leaf], None] | None = None,
) -> SealedReader:
    """Read LEDGER through its seals up to (at least) ``size`` sealed entries, calling
    ``on_entry(sequence, entry)`` for each entry below ``size``; return the reader,
    which maps index to sequence. Foreign messages are skipped."""
    reader = trusted_reader(nc, trust)
    reader.keep_seals = False
    async with contextlib.aclosing(reader.read()) as batches:
        async for batch in batches:
            if on_entry is not None:
                for m, e in zip(batch.messages, batch.entries, strict=True):
                    if e.index < size:
                        on_entry(m.sequence, e)
            if reader.size >= size:
                break
    if reader.size < size:
        raise ProofUnavailable(f"LEDGER holds {reader.size} sealed entries, not {size}")
    return reader


async def sync_tree(nc: NATS, tree: TreeStore, up_to: int, *, trust: TrustPolicy) -> None:
    """Append LEDGER's sealed leaves to ``tree`` until it holds ``up_to`` entries."""
    if tree.size >= up_to:
        return
    leaves: list[bytes] = []

    def leaf(seq: int, entry: Leaf) -> None:
        if entry.index >= tree.size + len(leaves):
            leaves.append(entry.leaf_hash)

    await sealed_pass(nc, trust, up_to, leaf)
    if leaves:
        tree.append(tree.size, leaves)


def tlog_proof(tree: TreeStore, index: int, signed: SignedCheckpoint) -> bytes:
    """C2SP tlog-proof: the entry's inclusion under a signed checkpoint."""
    if not 0 <= index < signed.checkpoint.size:
        raise ProofUnavailable(
            f"entry {index} is not covered by the checkpoint of size {signed.checkpoint.size}"
        )
    return format_tlog_proof(
        index, tree.inclusion_proof(index, signed.checkpoint.size), signed.note
    )


def consistency(tree: TreeStore, old_size: int, new_size: int) -> list[bytes]:
    if not 0 <= old_size <= new_size <= tree.size:
        raise ProofUnavailable(f"cannot prove {old_size} -> {new_size} with {tree.size} entries")
    return tree.consistency_proof(old_size, new_size)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _signer(entry_bytes: bytes) -> str:
    payload = strictjson.loads(parse_envelope(Entry.parse(entry_bytes).envelope).payload)
    return str(payload["actor"])


async def export_bundle(
    nc: NATS,
    tree: TreeStore,
    *,
    subjects: Iterable[str] = (),
    actor: str | None = None,
    index_range: tuple[int, int] | None = None,
    checkpoint_size: int | None = None,
    since: int | None = None,
    pinned: int | None = None,
    claim: bool = False,
    trust: TrustPolicy,
) -> bytes:
    """An ``ailedger/bundle/v1`` for the chosen subjects, actor or index range.

    It carries the complete ``prev`` chain (as of the checkpoint) of every
    chosen subject, of every signer's key history and of the genesis, each
    entry with its inclusion proof; the heads leaf at N-1 with its inclusion
    proof and a heads proof for every chain and every subject it relies on
    without a chain (DESIGN §3); with ``since``, a consistency proof from the
    reader's pinned checkpoint of that size (``pinned``: the same, only when that
    size is below the exported checkpoint's). LEDGER is read through its seals
    (:mod:`ledger.bus.sealed`): foreign messages never enter a bundle.
    """
    verifiers = Verifiers(*(Verifier.from_vkey(k) for k in trust.log_vkeys()))
    signed = await find_checkpoint(nc, checkpoint_size, verifiers=verifiers)
    size = signed.checkpoint.size
    wanted = set(subjects)
    first, last = index_range if index_range is not None else (0, size - 1)
    if (actor is not None or index_range is not None) and not 0 <= first <= last < size:
        raise ProofUnavailable(f"range {first}..{last} is not within the checkpoint (size {size})")
    if actor is not None:
        wanted.add(f"actor/{actor}")
    leaves: list[bytes] = []
    heads = HeadMap(MemoryNodeStore())
    found: dict[str, Leaf] = {}

    def visit(seq: int, entry: Leaf) -> None:
        if entry.index >= tree.size + len(leaves):
            leaves.append(entry.leaf_hash)
        if entry.index == size - 1:
            found["heads"] = entry
        if isinstance(entry, HeadsLeaf):
            return
        if entry.index < size - 1:
            heads.note(entry.subject, entry.index, entry.leaf_hash)
            found["newest"] = entry
        in_range = (actor is not None or index_range is not None) and first <= entry.index <= last
        if in_range and (actor is None or _signer(entry.encoded) == actor):
            wanted.add(entry.subject)

    reader = await sealed_pass(nc, trust, size, visit)
    if leaves:
        tree.append(tree.size, leaves)
    if tree.root(size) != signed.checkpoint.root_hash:
        raise ProofUnavailable(f"LEDGER's first {size} entries do not give the checkpoint's root")
    last_sequence_covered = reader.sequence_of(size - 1)
    assert last_sequence_covered is not None
    if not wanted:
        raise ProofUnavailable("choose a system, an actor or an index range")
    heads_leaf = found.get("heads")
    if not isinstance(heads_leaf, HeadsLeaf):
        raise ProofUnavailable(
            f"leaf {size - 1} is not a heads leaf: the checkpoint of size {size} commits to no "
            "subject heads (a notary before heads leaves signed it)"
        )
    staged = heads.stage(size - 1)
    if staged != heads_leaf:
        raise ProofUnavailable(
            f"the head map of LEDGER's first {size - 1} entries ({staged.subjects} subjects, "
            f"root {_b64(staged.root)}) is not the one the heads leaf at {size - 1} commits to "
            f"({heads_leaf.subjects} subjects, root {_b64(heads_leaf.root)})"
        )
    heads.commit()

    chains: dict[str, list[Entry]] = {}
    absent: set[str] = set()
    todo = sorted(wanted | {"ledger/genesis"})
    while todo:
        subject = todo.pop()
        if subject in chains:
            continue
        try:
            messages = await read_subject(
                nc, LEDGER, ledger_subject(subject), last_sequence_covered
            )
        except BusError as e:
            raise ProofUnavailable(f"reading {subject}: {e}") from None
        # Only sealed entries: a foreign message on the subject is not one.
        messages = [m for m in messages if _sealed_at(reader, m.sequence, m.data)]
        if not messages:
            if subject in wanted:
                raise ProofUnavailable(
                    f"no entries about {subject} up to the checkpoint (size {size})"
                )
            # e.g. a regulator with no actor chain: its keys are in the genesis; its
            # heads proof shows it has none
            absent.add(subject)
            continue
        chains[subject] = [Entry.parse(m.data) for m in messages]
        for entry in chains[subject]:
            signer_chain = f"actor/{_signer(entry.encoded)}"
            if signer_chain not in chains:
                todo.append(signer_chain)
        if subject == "ledger/genesis":
            # The rulebook's history travels with every bundle, so verdicts
            # can be recomputed from the bundle alone.
            genesis = fact_from_entry(chains[subject][0])
            todo.append(f"policy/{genesis.payload['policy']['policy_id']}")

    entries = sorted(
        {e.index: e for chain in chains.values() for e in chain}.values(), key=lambda e: e.index
    )
    doc: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "origin": signed.checkpoint.origin,
        "checkpoint": signed.note.decode(),
        "chains": {subject: chain[-1].index for subject, chain in sorted(chains.items())},
        "entries": [
            {
                "index": e.index,
                "entry": _b64(e.encoded),
                "proof": [_b64(h) for h in tree.inclusion_proof(e.index, size)],
            }
            for e in entries
        ],
        "heads": {
            "tlog_proof": format_tlog_proof(
                size - 1,
                tree.inclusion_proof(size - 1, size),
                signed.note,
                extra=heads_leaf.encoded,
            ).decode(),
            "subjects": {s: heads.prove(s).encode() for s in sorted(chains.keys() | absent)},
        },
    }
    if since is None and pinned is not None and pinned < size:
        since = pinned
    if since is not None:
        doc["consistency"] = {
            "old_size": since,
            "proof": [_b64(h) for h in consistency(tree, since, size)],
        }
    if claim:
        newest = found.get("newest")
        assert isinstance(newest, Entry)  # the genesis, at least
        doc["claim"] = _claim(entries, wanted, newest)
    return json.dumps(doc, indent=1).encode() + b"\n"


def _sealed_at(reader: SealedReader, sequence: int, data: bytes) -> bool:
    """Whether the message at ``sequence`` is the sealed entry the seals put there."""
    try:
        entry = Entry.parse(data)
    except ValueError:
        return False
    return reader.sequence_of(entry.index) == sequence


def _claim(entries: list[Entry], wanted: set[str], newest: Entry) -> dict[str, Any]:
    """The exporter's verdict on each system in the bundle, as of the checkpoint: the
    entries up to the newest one it covers (the leaf before its heads leaf), judged at
    that entry's integration time."""
    facts = [fact_from_entry(e) for e in entries]
    systems = sorted(s.partition("/")[2] for s in wanted if s.startswith("system/"))
    at, as_of = newest.integrated, newest.index
    return {
        "format": CLAIM_FORMAT,
        "verdicts": [evaluate(s, facts, at, as_of_index=as_of).to_json() for s in systems],
    }
