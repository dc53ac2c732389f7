"""Serving proofs: checkpoints, tlog-proofs, consistency proofs and evidence bundles.

Everything here is derived from LEDGER and CHECKPOINTS: the Merkle tree file
(:class:`ledger.formats.tree.TreeStore`) is brought up to date from LEDGER before use,
so any process can serve proofs, and a proof costs O(log n) reads of stored
hashes, never a recomputation of the tree.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client as NATS

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
from ledger.formats.merkle import leaf_hash
from ledger.formats.tree import TreeStore
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


async def find_checkpoint(nc: NATS, size: int | None = None) -> SignedCheckpoint:
    """The latest checkpoint, or the one of tree size ``size``."""
    last = await last_sequence(nc, CHECKPOINTS)
    if last == 0:
        raise ProofUnavailable("no checkpoint has been signed yet")
    found = None
    async for m in read_stream(nc, CHECKPOINTS, 1, last):
        signed = SignedCheckpoint.parse(m.data)
        if size is None or signed.checkpoint.size == size:
            found = signed
    if found is None:
        raise ProofUnavailable(f"no checkpoint of size {size}")
    return found


async def sync_tree(nc: NATS, tree: TreeStore, up_to: int) -> None:
    """Append LEDGER's leaves to ``tree`` until it holds ``up_to`` entries."""
    size = tree.size
    if size >= up_to:
        return
    leaves: list[bytes] = []
    async for m in read_stream(nc, LEDGER, size + 1, up_to):
        leaves.append(leaf_hash(m.data))
        if len(leaves) >= 10_000:
            size = tree.append(size, leaves)
            leaves = []
    if leaves:
        tree.append(size, leaves)


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
    claim: bool = False,
) -> bytes:
    """An ``ailedger/bundle/v1`` for the chosen subjects, actor or index range.

    It carries the complete ``prev`` chain (as of the checkpoint) of every
    chosen subject, of every signer's key history and of the genesis, each
    entry with its inclusion proof; with ``since``, a consistency proof from
    the reader's pinned checkpoint of that size.
    """
    signed = await find_checkpoint(nc, checkpoint_size)
    size = signed.checkpoint.size
    await sync_tree(nc, tree, size)
    if tree.root(size) != signed.checkpoint.root_hash:
        raise ProofUnavailable(f"LEDGER's first {size} entries do not give the checkpoint's root")

    wanted = set(subjects)
    if actor is not None or index_range is not None:
        first, last = index_range if index_range is not None else (0, size - 1)
        if not 0 <= first <= last < size:
            raise ProofUnavailable(
                f"range {first}..{last} is not within the checkpoint (size {size})"
            )
        if actor is not None:
            wanted.add(f"actor/{actor}")
        async for m in read_stream(nc, LEDGER, first + 1, last + 1):
            if actor is None or _signer(m.data) == actor:
                wanted.add(Entry.parse(m.data).subject)
    if not wanted:
        raise ProofUnavailable("choose a system, an actor or an index range")

    chains: dict[str, list[Entry]] = {}
    todo = sorted(wanted | {"ledger/genesis"})
    while todo:
        subject = todo.pop()
        if subject in chains:
            continue
        try:
            messages = await read_subject(nc, LEDGER, ledger_subject(subject), size)
        except BusError as e:
            raise ProofUnavailable(f"reading {subject}: {e}") from None
        if not messages:
            if subject in wanted:
                raise ProofUnavailable(
                    f"no entries about {subject} up to the checkpoint (size {size})"
                )
            continue  # e.g. a regulator with no actor chain: its keys are in the genesis
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
    }
    if since is not None:
        doc["consistency"] = {
            "old_size": since,
            "proof": [_b64(h) for h in consistency(tree, since, size)],
        }
    if claim:
        doc["claim"] = await _claim(nc, entries, wanted, size)
    return json.dumps(doc, indent=1).encode() + b"\n"


async def _claim(nc: NATS, entries: list[Entry], wanted: set[str], size: int) -> dict[str, Any]:
    """The exporter's verdict on each system in the bundle, as of the checkpoint:
    the entries up to its last index, judged at that entry's integration time."""
    last = await get_message(nc, LEDGER, size)
    if last is None:
        raise ProofUnavailable(f"LEDGER #{size} is missing")
    at = Entry.parse(last.data).integrated
    facts = [fact_from_entry(e) for e in entries]
    systems = sorted(s.partition("/")[2] for s in wanted if s.startswith("system/"))
    return {
        "format": CLAIM_FORMAT,
        "verdicts": [evaluate(s, facts, at, as_of_index=size - 1).to_json() for s in systems],
    }
