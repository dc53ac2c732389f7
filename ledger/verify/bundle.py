"""Offline verification of an evidence bundle (``ailedger/bundle/v1``).

This is the part of ailedger a court, an auditor or a journalist runs, years
later, without trusting whoever operates the ledger. It needs the bundle and
the regulator's trust policy, no network, and nothing beyond the standard
library and ``cryptography``. Every check is explicit, and the first one that
fails is reported with the entry it concerns.

A bundle is one JSON object::

    {
      "format": "ailedger/bundle/v1",
      "origin": "<log origin>",
      "checkpoint": "<C2SP signed note: tlog-checkpoint body, log signature, cosignatures>",
      "chains": {"<subject>": <index of its last entry at the checkpoint>, ...},
      "entries": [{"index": n, "entry": "<base64 entry bytes>", "proof": ["<base64 hash>", ...]}],
      "heads": {"tlog_proof": "<C2SP tlog-proof of leaf N-1, the heads leaf as its extra>",
                "subjects": {"<subject>": "<ailedger/heads-proof/v1>", ...}},
      "consistency": {"old_size": m, "proof": ["<base64 hash>", ...]},   (optional)
      "claim": {...}                                                       (optional)
    }

``chains`` lists complete subject histories: the verifier follows each one's
``prev`` links from its head to its first entry and requires every link, and
nothing else of that subject, in the bundle. The histories of every signer's
keys (``actor/<id>``) and the genesis entry are among them, so each signature
is judged against the key's enrolment, rotations and revocations, including a
revocation integrated after the entry whose compromise time precedes it.

The checks, in order: ``bundle`` (structure), ``checkpoint`` (log signature
and witness quorum under the trust policy), ``inclusion`` (each entry's RFC
9162 proof against the checkpoint), ``entry`` (format, index, payload),
``chain`` (complete ``prev`` chains), ``heads`` (the heads leaf at N-1: its
index, size and inclusion under the checkpoint), ``completeness`` (each
chain, and each subject the verdict relies on, against its heads proof: the
chain ends at the subject's newest entry and holds all of its entries; an
absence proof contradicted by an included entry is evidence of notary
misbehaviour), ``time`` (integration times never go
back along the index, and lie within the witnesses' window: not after the
covering checkpoint's earliest valid cosignature, nor, past a pinned
cosigned checkpoint, before its cosignatures, with a skew allowance),
``signer`` (each signer's key history is present), ``signature``
(DSSE, over the exact bytes), ``key`` (valid when integrated, as the
notary judged it, and not revealed compromised by a later revocation),
``authority`` (the signer could sign that event: role, own system, not
suspended, not retired, a policy the rules read; the regulator's acts signed by
the trust policy's ``root_quorum`` root keys), ``consistency`` (with a checkpoint the reader pinned
earlier), ``claim`` (the claimed verdict, recomputed).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import itertools
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ledger.formats import strictjson
from ledger.formats.checkpoint import (
    Checkpoint,
    CosignatureVerifier,
    MalformedCheckpointError,
    MalformedTlogProofError,
    cosignature_timestamp,
    parse_checkpoint,
    parse_tlog_proof,
)
from ledger.formats.dsse import EnvelopeError, ParsedEnvelope, pae, parse_envelope
from ledger.formats.entry import Entry, MalformedEntryError
from ledger.formats.errors import CHECK_FAILED, LedgerError
from ledger.formats.heads import (
    HeadsLeaf,
    HeadsProof,
    HeadsProofError,
    HeadValue,
    MalformedHeadsError,
)
from ledger.formats.keys import decode_public_key, fingerprint
from ledger.formats.merkle import (
    HASH_SIZE,
    ProofError,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from ledger.formats.note import (
    Note,
    NoteError,
    UnverifiedNoteError,
    Verifier,
    Verifiers,
    open_note,
)
from ledger.formats.timeutil import ClockError, format_time, parse_time
from ledger.formats.trust import TrustPolicy
from ledger.law.admission import KEY_CODES, Admission, Request, judge_root_quorum

__all__ = ["BUNDLE_FORMAT", "Report", "VerificationError", "verify_bundle"]

BUNDLE_FORMAT = "ailedger/bundle/v1"
CLAIM_FORMAT = "ailedger/verdict/v1"
#: Clock skew allowed between the notary's ``integrated`` and witnesses' times.
WITNESS_SKEW = timedelta(minutes=5)

_T = TypeVar("_T")
_R = TypeVar("_R")


class VerificationError(LedgerError):
    """A bundle that does not verify: which check failed, for which entry, and why."""

    code = "verify_failed"
    exit_status = CHECK_FAILED

    def __init__(
        self,
        check: str,
        message: str,
        index: int | None = None,
        *,
        subject: str | None = None,
        misbehaviour: bool = False,
    ) -> None:
        self.check = check
        self.index = index
        self.subject = subject
        #: The bundle proves the notary signed contradicting statements.
        self.misbehaviour = misbehaviour
        self.message = message
        where = ", ".join(
            ([subject] if subject is not None else [])
            + ([f"entry {index}"] if index is not None else [])
        )
        super().__init__(f"{check}{f' ({where})' if where else ''}: {message}")


@dataclass
class Report:
    """What was verified, for a short human report."""

    origin: str
    size: int
    root: bytes
    log_key: str
    witnesses: list[str]
    entries: int
    chains: dict[str, int]
    signatures: int
    consistent_with: int | None = None
    recomputed: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    #: Each subject with a heads proof: its head as of the checkpoint (None: no entries).
    completeness: dict[str, HeadValue | None] = field(default_factory=dict)
    #: The earliest counted witness cosignature of the checkpoint (None: not cosigned).
    cosigned_at: datetime | None = None
    #: The bundle's checkpoint, as signed (what a reader pins).
    checkpoint_note: bytes = b""

    def completeness_line(self, subject: str) -> str:
        """``complete as of checkpoint N (cosigned at T)``, or that it has no entries."""
        when = (
            f"cosigned at {format_time(self.cosigned_at)}"
            if self.cosigned_at is not None
            else "not cosigned"
        )
        head = self.completeness[subject]
        if head is None:
            return f"no entries as of checkpoint {self.size} ({when})"
        return (
            f"complete as of checkpoint {self.size} ({when}): {_entries_count(head.count)}, "
            f"newest {head.index}"
        )


@dataclass(slots=True)
class _Item:
    """One entry of the bundle, parsed once (never changed after)."""

    index: int
    raw: bytes
    proof: list[bytes]
    entry: Entry
    envelope: ParsedEnvelope
    payload: dict[str, Any]
    #: The payload's ``actor`` and ``type`` (strings, checked by :func:`_parse_item`).
    actor: str
    type: str


def verify_bundle(
    data: bytes,
    trust: TrustPolicy,
    *,
    since: bytes | None = None,
    recompute: bool = False,
    threads: int | None = None,
    now: datetime | None = None,
    exclusive: bool | None = None,
) -> Report:
    """Verify ``data`` (a bundle) offline against ``trust``; raise :class:`VerificationError`.

    ``since`` is a checkpoint (signed note) the reader verified before and
    pinned: the bundle must prove its own checkpoint is an append-only
    extension of it. A claimed verdict in the bundle is always recomputed from
    its entries; ``recompute`` also requires the bundle to carry one. ``now``
    is the verifier's clock (default: the system's): no checkpoint was signed
    after it.

    The signatures are checked in ``threads`` threads (default: one per core).
    ``exclusive`` says whether the call may act on the whole process, as the
    ``ailedger verify`` command does: lower the interpreter's GIL switch
    interval (``sys.setswitchinterval``) while it runs, and start worker
    processes (``sys.executable -I -S``) for large bundles. A server verifying
    for its clients passes ``exclusive=False``: threads only, nothing
    process-wide is touched, the verdict is the same. ``None`` (the default):
    exclusive only when called from the main thread.
    """
    now = now or datetime.now(UTC)
    if exclusive is None:
        exclusive = threading.current_thread() is threading.main_thread()
    doc = _structure(data)
    checkpoint, note = _checkpoint(doc, trust)
    workers = threads or min(32, os.cpu_count() or 1)
    with _Signatures(workers, len(doc["entries"]), exclusive=exclusive) as signatures:
        items = _entries(doc, checkpoint, signatures)
        chains = _chains(doc, items, checkpoint.size)
        completeness = _completeness(doc, checkpoint, items, chains)
        cosigned = [t for _, t in _witness_times(note, trust)]
        _times(items, cosigned)
        log_key = _log_key_in_window(note, trust, items, min([now, *cosigned]))
        signing_keys = _signing_keys(items, signatures)
    _replay(items, signing_keys, trust)
    report = Report(
        origin=checkpoint.origin,
        size=checkpoint.size,
        root=checkpoint.root_hash,
        log_key=log_key,
        witnesses=_witnesses(note, trust),
        entries=len(items),
        chains={s: h for s, h in sorted(chains.items())},
        signatures=len(signing_keys),
        completeness=completeness,
        cosigned_at=min(cosigned, default=None),
        checkpoint_note=doc["checkpoint"].encode(),
    )
    if since is not None:
        report.consistent_with = _consistency(doc, checkpoint, since, trust, items)
    if recompute or "claim" in doc:
        report.recomputed = _recompute(doc, items, checkpoint)
    report.lines = _report_lines(report)
    return report


# --- structure ----------------------------------------------------------------


def _structure(data: bytes) -> dict[str, Any]:
    try:
        doc = strictjson.loads(data)
    except strictjson.StrictJsonError as e:
        raise VerificationError("bundle", f"not strict JSON: {e}") from None
    if not isinstance(doc, dict):
        raise VerificationError("bundle", "a bundle is a JSON object")
    allowed = {
        "format",
        "origin",
        "checkpoint",
        "chains",
        "entries",
        "heads",
        "consistency",
        "claim",
    }
    for name in ("format", "origin", "checkpoint", "chains", "entries"):
        if name not in doc:
            raise VerificationError("bundle", f"missing field {name!r}")
    for name in doc:
        if name not in allowed:
            raise VerificationError("bundle", f"unknown field {name!r}")
    if doc["format"] != BUNDLE_FORMAT:
        raise VerificationError("bundle", f"format must be {BUNDLE_FORMAT!r}")
    if not isinstance(doc["checkpoint"], str) or not isinstance(doc["origin"], str):
        raise VerificationError("bundle", "origin and checkpoint must be strings")
    if not isinstance(doc["entries"], list) or not isinstance(doc["chains"], dict):
        raise VerificationError("bundle", "entries must be a list and chains an object")
    return doc


_B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _b64(text: object, what: str, index: int | None = None) -> bytes:
    """Canonical standard base64 (RFC 4648 §4, padded), decoded."""
    if not isinstance(text, str):
        raise VerificationError("bundle", f"{what} must be a base64 string", index)
    try:
        raw = binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        raise VerificationError("bundle", f"{what} is not valid base64", index) from None
    # The strict decoder refuses other characters, misplaced or excess padding; what
    # else could spell the same bytes is a final quantum whose unused bits are not
    # zero (RFC 4648 §3.5): 4 bits before "==", 2 before "=". (Equivalent to
    # re-encoding and comparing, without copying a whole entry again.)
    if len(text) % 4 or (
        _B64_ALPHABET.find(text[-3]) & 0x0F
        if text.endswith("==")
        else text.endswith("=") and _B64_ALPHABET.find(text[-2]) & 0x03
    ):
        raise VerificationError("bundle", f"{what} is not canonical base64", index)
    return raw


def _hashes(
    value: object, what: str, index: int | None = None, seen: dict[str, bytes] | None = None
) -> list[bytes]:
    """Each base64 hash of ``value``, decoded. ``seen`` holds hashes already decoded
    (the inclusion proofs of a bundle's entries share most of their upper nodes):
    the same text always decodes the same way, so each distinct text is checked once."""
    if not isinstance(value, list):
        raise VerificationError("bundle", f"{what} must be a list of base64 hashes", index)
    seen = {} if seen is None else seen
    try:
        known: list[bytes | None] = list(map(seen.get, value))
    except TypeError:  # not a string (unhashable): _b64 says so below
        known = [None] * len(value)
    if None not in known:
        return cast("list[bytes]", known)
    short = False
    for position in [i for i, raw in enumerate(known) if raw is None]:
        text = value[position]
        raw = known[position] = _b64(text, what, index)
        if len(raw) == HASH_SIZE:
            seen[str(text)] = raw
        else:
            short = True
    if short:
        raise VerificationError("bundle", f"{what} holds a hash that is not 32 bytes", index)
    return cast("list[bytes]", known)


# --- checkpoint -------------------------------------------------------------------


def _verifiers(trust: TrustPolicy) -> Verifiers:
    log = [Verifier.from_vkey(k) for k in trust.log_vkeys()]
    witnesses = [CosignatureVerifier.from_vkey(k) for k in trust.witness_vkeys()]
    return Verifiers(*log, *witnesses)


def _key_names(vkeys: list[str]) -> str:
    return ", ".join("+".join(k.split("+")[:2]) for k in vkeys) or "none"


def _origin_mismatch(origin: str, trust: TrustPolicy, what: str) -> VerificationError:
    whose = "the bundle's" if what == "checkpoint" else "your pinned checkpoint's"
    return VerificationError(
        what, f"{whose} origin {origin} is not the trust policy's origin {trust.origin}"
    )


def _untrusted(note: Note, trust: TrustPolicy, what: str) -> VerificationError:
    """Why no key of the trust policy signed: another ledger, or an unlisted key."""
    try:
        origin = parse_checkpoint(note.text).origin
    except MalformedCheckpointError:
        origin = None
    if origin is not None and origin != trust.origin:
        return _origin_mismatch(origin, trust, what)
    signers = ", ".join(f"{s.name}+{s.key_hash:08x}" for s in note.unverified_sigs)
    whose = "the checkpoint" if what == "checkpoint" else "your pinned checkpoint"
    return VerificationError(
        what,
        f"{whose} is signed by key {signers}, which the trust policy does not list "
        f"(its log keys: {_key_names(trust.log_vkeys())})",
    )


def _open_checkpoint(text: bytes, trust: TrustPolicy, what: str) -> tuple[Checkpoint, Note]:
    try:
        note = open_note(text, _verifiers(trust))
    except UnverifiedNoteError as e:
        raise _untrusted(e.note, trust, what) from None
    except NoteError as e:
        raise VerificationError(what, f"signature does not verify: {e}") from None
    log_names = {(v.name, v.key_hash) for v in (Verifier.from_vkey(k) for k in trust.log_vkeys())}
    if not any((s.name, s.key_hash) in log_names for s in note.sigs):
        signers = ", ".join(f"{s.name}+{s.key_hash:08x}" for s in note.sigs + note.unverified_sigs)
        raise VerificationError(
            what,
            f"not signed by a log key of the trust policy: signed by {signers} "
            f"(its log keys: {_key_names(trust.log_vkeys())})",
        )
    try:
        checkpoint = parse_checkpoint(note.text)
    except MalformedCheckpointError as e:
        raise VerificationError(what, f"malformed checkpoint: {e}") from None
    if checkpoint.origin != trust.origin:
        raise _origin_mismatch(checkpoint.origin, trust, what)
    return checkpoint, note


def _checkpoint(doc: dict[str, Any], trust: TrustPolicy) -> tuple[Checkpoint, Note]:
    try:
        text = doc["checkpoint"].encode()
    except UnicodeEncodeError:
        raise VerificationError("checkpoint", "not valid text") from None
    checkpoint, note = _open_checkpoint(text, trust, "checkpoint")
    if doc["origin"] != checkpoint.origin:
        raise VerificationError("bundle", "origin differs from the checkpoint's")
    witnesses = _witnesses(note, trust)
    if len(witnesses) < trust.witness_quorum:
        raise VerificationError(
            "checkpoint",
            f"{len(witnesses)} valid witness cosignatures, the trust policy requires "
            f"{trust.witness_quorum}",
        )
    return checkpoint, note


def _witnesses(note: Note, trust: TrustPolicy) -> list[str]:
    """Witness keys of the trust policy that cosigned, each within its validity window
    at the time it cosigned, each counted once."""
    return sorted(name for name, _ in _witness_times(note, trust))


def _witness_times(note: Note, trust: TrustPolicy) -> list[tuple[str, datetime]]:
    """Each counted witness (see :func:`_witnesses`) with the time it cosigned."""
    counted: dict[str, tuple[str, datetime]] = {}
    for key in trust.witness_keys:
        v = CosignatureVerifier.from_vkey(key.key)
        for sig in note.sigs:
            if (sig.name, sig.key_hash) != (v.name, v.key_hash):
                continue
            try:
                when = datetime.fromtimestamp(cosignature_timestamp(sig), UTC)
            except (ValueError, OverflowError, OSError, MalformedCheckpointError) as e:
                raise VerificationError(
                    "checkpoint", f"cosignature by {sig.name} has no usable time: {e}"
                ) from None
            if key.valid_at(when):
                counted[key.key] = (v.name, when)
    return list(counted.values())


def _log_key_in_window(
    note: Note, trust: TrustPolicy, items: list[_Item], signed_by: datetime
) -> str:
    """The checkpoint was signed after the newest entry in the bundle was integrated
    and no later than ``signed_by`` (the verifier's clock, or the earliest counted
    cosignature): the log key that signed must be valid at some moment in between
    (not retired before the first, not yet valid after the second)."""
    latest = max(item.entry.integrated for item in items)
    signers = []
    for key in trust.log_keys:
        v = Verifier.from_vkey(key.key)
        if not any((s.name, s.key_hash) == (v.name, v.key_hash) for s in note.sigs):
            continue
        signers.append(key)
        retired = key.valid_until is not None and key.valid_until <= latest
        not_yet = key.valid_from is not None and key.valid_from > signed_by
        if not retired and not not_yet:
            return key.key
    if signers and all(k.valid_from is not None and k.valid_from > signed_by for k in signers):
        raise VerificationError(
            "checkpoint",
            f"signed only by log keys not valid before "
            f"{format_time(min(k.valid_from for k in signers if k.valid_from is not None))}, "
            f"after the checkpoint was signed (by {format_time(signed_by)})",
        )
    raise VerificationError(
        "checkpoint", f"signed only by log keys retired before {format_time(latest)}"
    )


# --- entries ------------------------------------------------------------------------


_ITEM_FIELDS = frozenset(("index", "entry", "proof"))
#: The memos of proof hashes and interior nodes are emptied past this many each (about
#: 7 MB): neighbouring entries share the upper nodes, so little is lost.
MEMO_LIMIT = 1 << 16


def _entries(doc: dict[str, Any], checkpoint: Checkpoint, signatures: _Signatures) -> list[_Item]:
    items: list[_Item] = []
    last = -1
    hashes: dict[str, bytes] = {}
    nodes: dict[bytes, bytes] = {}
    for position, raw_item in enumerate(doc["entries"]):
        if not isinstance(raw_item, dict) or raw_item.keys() != _ITEM_FIELDS:
            raise VerificationError("bundle", f"entries[{position}] needs index, entry, proof")
        index = raw_item["index"]
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise VerificationError("bundle", f"entries[{position}].index is not an index")
        if index <= last:
            raise VerificationError("bundle", "entries must be in increasing index order", index)
        last = index
        if len(nodes) > MEMO_LIMIT or len(hashes) > MEMO_LIMIT:
            nodes.clear()
            hashes.clear()
        raw = _b64(raw_item["entry"], "entry", index)
        proof = _hashes(raw_item["proof"], "proof", index, hashes)
        if index >= checkpoint.size:
            raise VerificationError(
                "inclusion", f"index beyond the checkpoint's tree size {checkpoint.size}", index
            )
        try:
            verify_inclusion(
                leaf_hash(raw), index, checkpoint.size, proof, checkpoint.root_hash, memo=nodes
            )
        except ProofError as e:
            raise VerificationError(
                "inclusion",
                f"not in the tree of the checkpoint (size {checkpoint.size}): {e}",
                index,
            ) from None
        item = _parse_item(index, raw, proof)
        signatures.parsed(item)
        items.append(item)
    if not items:
        raise VerificationError("bundle", "no entries")
    return items


def _parse_item(index: int, raw: bytes, proof: list[bytes]) -> _Item:
    try:
        entry = Entry.parse(raw)
    except MalformedEntryError as e:
        raise VerificationError("entry", f"malformed: {e}", index) from None
    if entry.index != index:
        raise VerificationError("entry", f"says index {entry.index}", index)
    try:
        envelope = parse_envelope(entry.envelope)
        payload = strictjson.loads(envelope.payload)
    except (EnvelopeError, strictjson.StrictJsonError) as e:
        raise VerificationError("entry", f"envelope: {e}", index) from None
    if not isinstance(payload, dict):
        raise VerificationError("entry", "payload is not a JSON object", index)
    for name in ("type", "actor", "subject", "event_id", "signed_at"):
        if not isinstance(payload.get(name), str):
            raise VerificationError("entry", f"payload has no {name}", index)
    if payload["subject"] != entry.subject:
        raise VerificationError(
            "entry", f"payload subject {payload['subject']!r} is not the entry's", index
        )
    return _Item(index, raw, proof, entry, envelope, payload, payload["actor"], payload["type"])


def _chains(doc: dict[str, Any], items: list[_Item], size: int) -> dict[str, int]:
    by_index = {item.index: item for item in items}
    chains: dict[str, int] = {}
    covered: set[int] = set()
    for subject, head in doc["chains"].items():
        if not isinstance(head, int) or isinstance(head, bool) or not 0 <= head < size:
            raise VerificationError("bundle", f"chains[{subject!r}] is not an index below {size}")
        chains[subject] = head
        index: int | None = head
        while index is not None:
            item = by_index.get(index)
            if item is None:
                raise VerificationError(
                    "chain", f"{subject} links to entry {index}, which is missing", index
                )
            if item.entry.subject != subject:
                raise VerificationError(
                    "chain",
                    f"linked from the {subject} chain but its subject is {item.entry.subject}",
                    index,
                )
            covered.add(index)
            index = item.entry.prev
    for item in items:
        if item.entry.subject not in chains:
            raise VerificationError(
                "chain",
                f"subject {item.entry.subject} has no complete chain in the bundle",
                item.index,
            )
        if item.index not in covered:
            raise VerificationError(
                "chain",
                f"not on the {item.entry.subject} chain from its head {chains[item.entry.subject]}",
                item.index,
            )
    if "ledger/genesis" not in chains or 0 not in by_index:
        raise VerificationError("chain", "the genesis entry (index 0) is missing", 0)
    return chains


# --- completeness ------------------------------------------------------------------


def _heads_leaf(doc: dict[str, Any], checkpoint: Checkpoint) -> HeadsLeaf:
    """The heads leaf at N-1, proven in the checkpoint's tree, covering leaves [0, N-1)."""
    heads = doc.get("heads")
    if heads is None:
        raise VerificationError(
            "heads",
            "the bundle carries no heads leaf, so nothing shows its chains hold the newest "
            "entries: export it again with a current ailedger",
        )
    if not isinstance(heads, dict) or set(heads) != {"tlog_proof", "subjects"}:
        raise VerificationError("bundle", "heads needs exactly tlog_proof and subjects")
    if not isinstance(heads["tlog_proof"], str) or not isinstance(heads["subjects"], dict):
        raise VerificationError("bundle", "heads.tlog_proof is a string, heads.subjects an object")
    try:
        tlog = parse_tlog_proof(heads["tlog_proof"].encode())
    except (MalformedTlogProofError, UnicodeEncodeError) as e:
        raise VerificationError("heads", f"malformed tlog-proof of the heads leaf: {e}") from None
    # Its checkpoint may carry other cosignatures; it must be the same tree head.
    if tlog.checkpoint.partition(b"\n\n")[0] != doc["checkpoint"].encode().partition(b"\n\n")[0]:
        raise VerificationError(
            "heads", "the heads leaf's tlog-proof is under another checkpoint than the bundle's"
        )
    m = checkpoint.size - 1
    if tlog.index != m:
        raise VerificationError(
            "heads",
            f"the tlog-proof is for leaf {tlog.index}; the heads leaf of the checkpoint of "
            f"size {checkpoint.size} is leaf {m}",
        )
    if tlog.extra is None:
        raise VerificationError("heads", "the tlog-proof carries no heads leaf (extra data)")
    try:
        leaf = HeadsLeaf.parse(tlog.extra)
    except MalformedHeadsError as e:
        raise VerificationError("heads", f"leaf {m} is not a heads leaf: {e}") from None
    if leaf.size != m:
        raise VerificationError(
            "heads",
            f"the heads leaf says size {leaf.size}; at leaf {m} it must cover the {m} leaves "
            "before it",
        )
    try:
        verify_inclusion(leaf.leaf_hash, m, checkpoint.size, list(tlog.proof), checkpoint.root_hash)
    except ProofError as e:
        raise VerificationError(
            "heads", f"the heads leaf is not leaf {m} of the checkpoint's tree: {e}"
        ) from None
    return leaf


def _entries_count(n: int) -> str:
    return "1 entry" if n == 1 else f"{n} entries"


def _relied_on(items: list[_Item], chains: dict[str, int]) -> set[str]:
    """The subjects whose completeness the verdict relies on: every chain carried, every
    signer's actor subject (its key history) and the genesis rulebook's policy subject."""
    subjects = set(chains) | {f"actor/{item.actor}" for item in items}
    genesis = next((item for item in items if item.index == 0), None)
    policy = genesis.payload.get("policy") if genesis is not None else None
    if isinstance(policy, dict) and isinstance(policy.get("policy_id"), str):
        subjects.add(f"policy/{policy['policy_id']}")
    return subjects


def _completeness(
    doc: dict[str, Any], checkpoint: Checkpoint, items: list[_Item], chains: dict[str, int]
) -> dict[str, HeadValue | None]:
    """Each subject's heads proof against the heads leaf at N-1 (DESIGN §3, "Heads proof"):
    a carried chain ends at the subject's newest entry, holds all of its entries; a
    subject without a chain has none. Returns each proven subject's head (None: absent)."""
    leaf = _heads_leaf(doc, checkpoint)
    by_index = {item.index: item for item in items}
    proofs: dict[str, HeadsProof] = {}
    for subject, text in doc["heads"]["subjects"].items():
        if not isinstance(text, str):
            raise VerificationError("bundle", "a heads proof is a string", subject=subject)
        try:
            proof = HeadsProof.parse(text)
        except MalformedHeadsError as e:
            raise VerificationError(
                "completeness", f"malformed heads proof: {e}", subject=subject
            ) from None
        if proof.subject != subject:
            raise VerificationError(
                "completeness", f"its heads proof is about {proof.subject}", subject=subject
            )
        try:
            proof.verify(leaf.root)
        except HeadsProofError as e:
            raise VerificationError("completeness", str(e), subject=subject) from None
        proofs[subject] = proof
    missing = sorted(_relied_on(items, chains) - proofs.keys())
    if missing:
        raise VerificationError(
            "completeness",
            "no heads proof: nothing shows the bundle holds its newest entries",
            subject=missing[0],
        )
    out: dict[str, HeadValue | None] = {}
    under = f"the heads leaf at {leaf.index}, under the signed checkpoint of size {checkpoint.size}"
    for subject, proof in sorted(proofs.items()):
        head = chains.get(subject)
        value = proof.value
        if value is None:
            if head is not None:
                raise VerificationError(
                    "completeness",
                    f"EVIDENCE OF NOTARY MISBEHAVIOUR: {under}, proves the subject has no "
                    f"entries ({proof.result}), yet the bundle includes its entries up to "
                    f"{head} under the same checkpoint",
                    head,
                    subject=subject,
                    misbehaviour=True,
                )
            out[subject] = None
            continue
        if head is None:
            raise VerificationError(
                "completeness",
                f"{under}, counts {_entries_count(value.count)} (newest {value.index}); the bundle "
                "carries none of them",
                subject=subject,
            )
        if value.index > head:
            raise VerificationError(
                "completeness",
                f"its chain in the bundle ends at entry {head}, but its newest entry at the "
                f"checkpoint is {value.index} ({under}): the bundle leaves out its newest "
                "entries",
                head,
                subject=subject,
            )
        count = 0
        index: int | None = head
        while index is not None:
            count += 1
            index = by_index[index].entry.prev
        if value.index < head or value.leaf_hash != leaf_hash(by_index[head].raw):
            what = (
                f"its newest entry is {value.index}"
                if value.index < head
                else f"entry {head} has another leaf hash"
            )
            raise VerificationError(
                "completeness",
                f"EVIDENCE OF NOTARY MISBEHAVIOUR: {under}, says {what}, yet the bundle "
                f"includes entry {head} of this subject under the same checkpoint",
                head,
                subject=subject,
                misbehaviour=True,
            )
        if value.count != count:
            raise VerificationError(
                "completeness",
                f"EVIDENCE OF NOTARY MISBEHAVIOUR: {under}, counts "
                f"{_entries_count(value.count)}, but the chain from its newest entry {head} "
                f"down to prev none holds {count}",
                head,
                subject=subject,
                misbehaviour=True,
            )
        out[subject] = value
    return out


def _times(items: list[_Item], cosigned: list[datetime]) -> None:
    """``integrated`` never decreases along the index, and no entry was integrated
    after a counted witness cosigned the checkpoint covering it (with skew)."""
    for a, b in itertools.pairwise(items):
        if b.entry.integrated < a.entry.integrated:
            raise VerificationError(
                "time", f"integrated before entry {a.index} although it comes after it", b.index
            )
    if cosigned:
        bound = min(cosigned)
        for item in items:
            if item.entry.integrated > bound + WITNESS_SKEW:
                raise VerificationError(
                    "time",
                    f"integrated {format_time(item.entry.integrated)}, after a witness "
                    f"cosigned the checkpoint covering it at {format_time(bound)}",
                    item.index,
                )


# --- keys and signatures --------------------------------------------------------------


def _time_field(item: _Item, name: str) -> datetime:
    try:
        return parse_time(str(item.payload[name]))
    except (KeyError, ClockError) as e:
        raise VerificationError("entry", f"{name}: {e}", item.index) from None


def _keys_in(item: _Item) -> tuple[str, list[object]]:
    """Whose keys an entry of a key history lists, and those keys (as written)."""
    target = item.entry.subject.partition("/")[2]
    p = item.payload
    found: list[object] = []
    if item.type == "LedgerGenesis":
        target, found = item.actor, list(p.get("regulator_keys") or [])
    elif item.type == "ActorEnrolled":
        found = list(p.get("public_keys") or [])
    elif item.type == "KeyRotated":
        found = [p.get("new_key")]
    return target, found


def _enrolled_keys(items: list[_Item]) -> dict[str, list[str]]:
    """Every public key each actor ever had in the bundle's histories."""
    keys: dict[str, list[str]] = {}
    for item in items:
        target, found = _keys_in(item)
        keys.setdefault(target, []).extend(str(k) for k in found)
    return keys


#: Signatures checked ahead are handed to the pool in batches of this many.
AHEAD_BATCH = 64
#: The GIL switch interval while signatures are checked beside the parsing (seconds).
SWITCH_INTERVAL = 1e-4

_switching = threading.Lock()
_switch_users = 0
_switch_saved = 0.0


def _switch_often(start: bool) -> None:
    """Let a thread back from an Ed25519 verification take the GIL within
    :data:`SWITCH_INTERVAL`, not CPython's default 5 ms, while the main thread
    parses entries (else each verifying thread waits out the parsing thread's
    interval after every signature, and the checks made ahead barely overlap
    the parsing). Process-wide, so counted: the first verification to start
    lowers the interval, the last to end restores it."""
    global _switch_users, _switch_saved
    with _switching:
        if start:
            if _switch_users == 0:
                _switch_saved = sys.getswitchinterval()
                sys.setswitchinterval(min(_switch_saved, SWITCH_INTERVAL))
            _switch_users += 1
        else:
            _switch_users -= 1
            if _switch_users == 0:
                sys.setswitchinterval(_switch_saved)


#: From this many entries per worker process, the checks made ahead run in worker
#: processes (about 11 ms of CPU each to start), when the call is exclusive; below
#: it, in the pool's threads (whose GIL hand-overs while the caller's thread parses
#: cost CPU).
PROCESS_MIN_ENTRIES = 1000
#: How long to wait for one batch of checks made ahead before giving up on the
#: worker processes (seconds).
WORKER_TIMEOUT = 60.0

#: A worker process: reads frames of (32-byte key, 64-byte signature, 4-byte length,
#: message) triples, answers one byte per triple: 1 when the key's Ed25519
#: signature over the message verifies (the verification returned without raising),
#: else 0. Nothing else: which message, which key and what the answer means are the
#: verifier's (:meth:`_Process.verify`). It loads ``cryptography``'s Ed25519 binding
#: directly (about 11 ms of CPU to start, 23 ms through the public module, which
#: imports ``typing``; that one is the fallback should the binding move).
_WORKER = """
import sys
sys.path[:0] = sys.argv[1:]
try:
    from cryptography.hazmat.bindings._rust import openssl
    load = openssl.ed25519.from_public_bytes
except Exception:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    load = Ed25519PublicKey.from_public_bytes
read, out = sys.stdin.buffer.read, sys.stdout.buffer
keys = {}
while len(head := read(4)) == 4:
    data, at, answers = read(int.from_bytes(head, "big")), 0, bytearray()
    view = memoryview(data)
    while at < len(data):
        key, sig = data[at : at + 32], data[at + 32 : at + 96]
        end = at + 100 + int.from_bytes(data[at + 96 : at + 100], "big")
        public = keys.get(key) or keys.setdefault(key, load(key))
        try:
            public.verify(sig, view[at + 100 : end])
            answers.append(1)
        except Exception:
            answers.append(0)
        at = end
    out.write(len(answers).to_bytes(4, "big") + answers)
    out.flush()
"""


class _Process:
    """One worker process (:data:`_WORKER`), used by one pool thread at a time: the
    Ed25519 verifications run there, so the threads need the GIL once a batch, not
    once a signature (a thread back from a verification otherwise waits for the
    parsing thread to drop the GIL, and each such hand-over costs tens of us)."""

    def __init__(self) -> None:
        self.broken = False
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _WORKER, *sys.path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        if self.proc.stdin is None or self.proc.stdout is None:  # pragma: no cover
            raise OSError("no pipes to the worker process")
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout

    def verify(
        self, batch: list[tuple[_Item, bytes, Ed25519PublicKey]]
    ) -> list[tuple[int, bytes, bool]]:
        """As :func:`_verify_batch`. An envelope of one signature is verified in the
        process: ``ParsedEnvelope.verify`` is then exactly that signature over the PAE
        of its payload. Others (the regulator's m-of-n acts), and every batch once
        the process failed, are verified here."""
        out: list[tuple[int, bytes, bool]] = []
        sent: list[tuple[_Item, bytes, Ed25519PublicKey]] = []
        parts: list[bytes] = []
        for job in batch:
            env = job[0].envelope
            if self.broken or len(env.signatures) != 1:
                out.append((job[0].index, job[1], env.verify(job[2])))
                continue
            message = pae(env.payload_type, env.payload)
            parts += (job[1], env.signature, len(message).to_bytes(4, "big"), message)
            sent.append(job)
        if not sent:
            return out
        frame = b"".join(parts)
        try:
            self.stdin.write(len(frame).to_bytes(4, "big"))
            self.stdin.write(frame)
            self.stdin.flush()
            size = int.from_bytes(self.stdout.read(4), "big")
            answers = self.stdout.read(size)
            if size != len(sent) or len(answers) != size or set(answers) - {0, 1}:
                raise OSError("no answer from the worker process")
        except (OSError, ValueError):
            self.broken = True
            return out + _verify_batch(sent)
        return out + [(i.index, p, a == 1) for (i, p, _), a in zip(sent, answers, strict=True)]

    def close(self, grace: float = 2.0) -> None:
        """End the worker: its input closed, its loop ends; killed after ``grace`` s."""
        with contextlib.suppress(OSError, ValueError):
            self.stdin.close()
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.stdout.close()


class _Signatures:
    """The DSSE signature checks of one verification, in a pool of threads sized to
    the cores (``cryptography``'s Ed25519 releases the GIL); for an exclusive call
    (see :func:`verify_bundle`) and bundles of :data:`PROCESS_MIN_ENTRIES` entries
    per process or more, in worker processes instead, one per core but the caller's,
    each fed by a thread of its own. The caller's thread verifies its share once it
    has parsed the entries (:meth:`settle`).

    While the entries are parsed, each one's signature is checked ahead with the
    key its key id names among the keys enrolled in entries before it (the key
    the notary found, in every bundle it exported). :func:`_signing_keys` then
    decides which key signed as before; a check it needs that was made ahead is
    not made again, so each (entry, key) pair is verified at most once."""

    #: Whether :meth:`settle` verifies the batches no thread has started (tests
    #: turn it off to have every batch go to the threads and worker processes).
    steal = True

    def __init__(self, threads: int, entries: int = 0, *, exclusive: bool = True) -> None:
        self.workers = max(1, threads)
        self.pool = ThreadPoolExecutor(self.workers) if self.workers > 1 else None
        #: May lower the switch interval and start worker processes (see verify_bundle).
        self.exclusive = exclusive
        self._processes: queue.SimpleQueue[_Process] | None = None
        self._started: list[_Process] = []
        #: Where the checks made ahead run: the pool, or a thread per worker process.
        self.ahead = self.pool
        # One process per core but the caller's: its thread parses the entries, then
        # verifies its share (settle); more would only contend for the same cores.
        processes = self.workers - 1
        if self.pool is not None and exclusive and entries >= PROCESS_MIN_ENTRIES * processes:
            try:
                for _ in range(processes):
                    self._started.append(_Process())
            except (OSError, ValueError, TypeError):  # no interpreter to run: threads only
                self._close_processes()
            else:
                self._processes = queue.SimpleQueue()
                for process in self._started:
                    self._processes.put(process)
                self.ahead = ThreadPoolExecutor(processes)
        self._objects: dict[bytes, Ed25519PublicKey] = {}
        self._fingerprints: dict[bytes, str] = {}
        self._known: dict[str, bytes] = {}
        self._batch: list[tuple[_Item, bytes, Ed25519PublicKey]] = []
        #: Batches handed to the pool, each with its future.
        self._futures: list[
            tuple[
                list[tuple[_Item, bytes, Ed25519PublicKey]], Future[list[tuple[int, bytes, bool]]]
            ]
        ] = []
        self._done: dict[tuple[int, bytes], bool] = {}

    def __enter__(self) -> _Signatures:
        if self.pool is not None and self.exclusive:
            _switch_often(True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            if self.ahead is not None and self.ahead is not self.pool:
                self.ahead.shutdown(wait=True, cancel_futures=True)
            self.pool.shutdown(wait=True, cancel_futures=True)
            self._close_processes()
            if self.exclusive:
                _switch_often(False)

    def _close_processes(self, grace: float = 2.0) -> None:
        for process in self._started:
            process.close(grace)
        self._started = []

    def fingerprint(self, public: bytes) -> str:
        fp = self._fingerprints.get(public)
        if fp is None:
            fp = self._fingerprints[public] = fingerprint(public)
        return fp

    def key(self, public: bytes) -> Ed25519PublicKey:
        """The key object of raw key bytes, made once (in the calling thread)."""
        obj = self._objects.get(public)
        if obj is None:
            obj = self._objects[public] = Ed25519PublicKey.from_public_bytes(public)
        return obj

    def parsed(self, item: _Item) -> None:
        """Learn the keys a parsed entry enrols; check its signature ahead with the
        key its key id names, if one was enrolled before it."""
        if item.type in ("LedgerGenesis", "ActorEnrolled", "KeyRotated"):
            for text in _keys_in(item)[1]:
                try:
                    public = decode_public_key(str(text))
                except ValueError:
                    continue  # judged (and reported) by _signing_keys
                self._known.setdefault(self.fingerprint(public), public)
        named = self._known.get(item.envelope.keyid_fingerprint)
        if named is None:
            return
        self._batch.append((item, named, self.key(named)))
        if len(self._batch) >= AHEAD_BATCH:
            self._submit()

    def _submit(self) -> None:
        batch, self._batch = self._batch, []
        if not batch:
            return
        if self.ahead is None:
            self._done.update(((i, p), ok) for i, p, ok in _verify_batch(batch))
        elif self._processes is None:
            self._futures.append((batch, self.ahead.submit(_verify_batch, batch)))
        else:
            future = self.ahead.submit(self._in_process, self._processes, batch)
            self._futures.append((batch, future))

    @staticmethod
    def _in_process(
        processes: queue.SimpleQueue[_Process], batch: list[tuple[_Item, bytes, Ed25519PublicKey]]
    ) -> list[tuple[int, bytes, bool]]:
        process = processes.get()  # as many as threads: one is free
        try:
            return process.verify(batch)
        finally:
            processes.put(process)

    def settle(self) -> None:
        """Wait for every check made ahead. The calling thread, done parsing, takes its
        share: from the last batch back, each one no thread has started yet it cancels
        and verifies itself. Should a worker process never answer (an interpreter that
        is not Python), the workers are stopped: their batches are then verified in
        the threads."""
        self._submit()
        results: dict[int, list[tuple[int, bytes, bool]]] = {}
        for position in range(len(self._futures) - 1, -1, -1):
            batch, future = self._futures[position]
            if self.steal and future.cancel():
                results[position] = _verify_batch(batch)
        for position, (_, future) in enumerate(self._futures):
            done = results.get(position)
            if done is None:
                try:
                    done = future.result(timeout=WORKER_TIMEOUT)
                except TimeoutError:
                    self._close_processes(grace=0)
                    done = future.result()
            self._done.update(((i, p), ok) for i, p, ok in done)
        self._futures = []

    def verified(self, item: _Item, public: bytes) -> bool | None:
        """Whether ``public`` made a signature of ``item``, if checked already."""
        return self._done.get((item.index, public))

    def verify(self, item: _Item, public: bytes, obj: Ed25519PublicKey) -> bool:
        ok = self._done.get((item.index, public))
        return item.envelope.verify(obj) if ok is None else ok

    def map(self, fn: Callable[[_T], _R], jobs: list[_T]) -> list[_R]:
        """``fn`` over ``jobs``, in order, in a few chunks per thread."""
        if self.pool is None or len(jobs) < 2:
            return [fn(job) for job in jobs]
        size = max(1, -(-len(jobs) // (self.workers * 4)))
        chunks = [jobs[i : i + size] for i in range(0, len(jobs), size)]
        done = self.pool.map(lambda chunk: [fn(job) for job in chunk], chunks)
        return [result for chunk in done for result in chunk]


def _verify_batch(
    batch: list[tuple[_Item, bytes, Ed25519PublicKey]],
) -> list[tuple[int, bytes, bool]]:
    return [(item.index, public, item.envelope.verify(obj)) for item, public, obj in batch]


#: Which keys may have made an entry's signature, tried in order (the key its key id
#: names first), whether that first one is the signer's own, and another actor's
#: key the key id names (None: none, or it is the signer's).
_Plan = tuple[
    list[tuple[str, bytes, Ed25519PublicKey]], bool, tuple[bytes, Ed25519PublicKey] | None
]


def _signing_keys(
    items: list[_Item], signatures: _Signatures
) -> dict[int, tuple[str, bytes | None]]:
    """Which key made each entry's DSSE signature, as the notary finds it: one of the
    signer's keys that verifies; else the key id's key when it is another actor's
    key that verifies (signer_not_actor) or no key in the bundle (unknown_key, with
    no public key). Each (entry, key) is checked once, in parallel threads."""
    enrolled = _enrolled_keys(items)
    decoded: dict[str, list[bytes] | ValueError] = {}
    plans: dict[tuple[str, str], _Plan] = {}
    everyone: dict[str, bytes] | None = None
    signatures.settle()
    # Most were checked ahead with their first candidate: only the rest go to the pool.
    found: list[tuple[str, bytes | None] | None] = []
    rest: list[tuple[int, _Item, _Plan]] = []
    for position, item in enumerate(items):
        actor, hint = item.actor, item.envelope.keyid_fingerprint
        if actor not in enrolled:
            raise VerificationError(
                "signer",
                f"signed by {actor}, whose key history (actor/{actor}) is not in the bundle",
                item.index,
            )
        plan = plans.get((actor, hint))
        if plan is None:
            keys = decoded.get(actor)
            if keys is None:
                try:
                    keys = [decode_public_key(k) for k in enrolled[actor]]
                except ValueError as e:
                    keys = e
                decoded[actor] = keys
            if isinstance(keys, ValueError):
                raise VerificationError("entry", f"a key of {actor}: {keys}", item.index)
            candidates = [(signatures.fingerprint(k), k, signatures.key(k)) for k in keys]
            candidates.sort(key=lambda c: c[0] != hint)
            hinted_own = bool(candidates) and candidates[0][0] == hint
            other = None
            if not hinted_own:
                everyone = _every_key(enrolled) if everyone is None else everyone
                public = everyone.get(hint)
                other = None if public is None else (public, signatures.key(public))
            plan = plans[(actor, hint)] = (candidates, hinted_own, other)
        first = plan[0][0] if plan[0] else None
        if first is not None and signatures.verified(item, first[1]):
            found.append((first[0], first[1]))
        else:
            found.append(None)
            rest.append((position, item, plan))

    def check(job: tuple[int, _Item, _Plan]) -> tuple[str, bytes | None] | None:
        _, item, (candidates, hinted_own, other) = job
        for fp, public, obj in candidates:
            if signatures.verify(item, public, obj):
                return fp, public
        hint = item.envelope.keyid_fingerprint
        if hinted_own:
            return None
        if other is None:
            return hint, None
        return (hint, other[0]) if signatures.verify(item, *other) else None

    for (position, _, _), signing in zip(rest, signatures.map(check, rest), strict=True):
        found[position] = signing
    out: dict[int, tuple[str, bytes | None]] = {}
    for item, signing in zip(items, found, strict=True):
        if signing is None:
            raise VerificationError(
                "signature", f"no key of {item.actor} verifies its DSSE signature", item.index
            )
        out[item.index] = signing
    return out


def _every_key(enrolled: dict[str, list[str]]) -> dict[str, bytes]:
    """Every well-formed public key in the bundle's histories, by fingerprint."""
    out: dict[str, bytes] = {}
    for keys in enrolled.values():
        for key in keys:
            try:
                public = decode_public_key(key)
            except ValueError:
                continue
            out.setdefault(fingerprint(public), public)
    return out


def _replay(
    items: list[_Item], signing_keys: dict[int, tuple[str, bytes | None]], trust: TrustPolicy
) -> None:
    """Judge every entry in ledger order as the notary had to (:mod:`ledger.law.admission`):
    who may sign it, with which key, under the histories as they stood; then what
    later revocations reveal."""
    state = Admission()
    requests: list[Request] = []
    for item in items:
        at = item.entry.integrated
        fp, public = signing_keys[item.index]
        request = Request(
            item.type,
            item.actor,
            item.entry.subject,
            fp,
            at,
            item.payload,
            item.index,
            item.envelope.keyid,
        )
        try:
            if item.type == "LedgerGenesis":
                if item.index != 0:
                    raise VerificationError("entry", "a second genesis", item.index)
                root = public is not None and trust.regulator_key_valid(public, at)
                if not root or item.actor != trust.regulator:
                    raise VerificationError(
                        "key", "the genesis is not signed by a regulator root key of the "
                        "trust policy", 0
                    )  # fmt: skip
            else:
                # An evidence bundle holds the histories of some actors only.
                judgement = state.judge(request, every_actor_known=False)
                if not judgement.admitted:
                    check = "key" if judgement.code in KEY_CODES else "authority"
                    raise VerificationError(check, str(judgement), item.index)
                _judge_root_key(item, trust, fp, public)
                if item.type == "PolicyAdopted" and _time_field(item, "effective_from") < at:
                    raise VerificationError(
                        "authority", "a rulebook back-dated before its integration", item.index
                    )
            quorum = judge_root_quorum(request, item.envelope, trust)
            if not quorum.admitted:
                raise VerificationError("authority", str(quorum), item.index)
            state.apply(request)
        except (KeyError, ValueError, TypeError) as e:
            raise VerificationError("entry", f"cannot be applied: {e}", item.index) from None
        requests.append(request)
    for request in requests:
        revealed = state.compromise_revealed_later(request)
        if revealed is not None:
            revoked_in, compromised = revealed
            raise VerificationError(
                "key",
                f"signed with {request.actor}/{request.key}, which was revoked: compromised at "
                f"{format_time(compromised)} (revoked in entry {revoked_in}); integrated "
                f"{format_time(request.at)}",
                request.index,
            )


def _judge_root_key(item: _Item, trust: TrustPolicy, fp: str, public: bytes | None) -> None:
    """The regulator's root keys are valid only within their trust-policy windows."""
    if public is None or item.actor != trust.regulator:
        return
    root = any(decode_public_key(k.key) == public for k in trust.regulator_keys)
    if root and not trust.regulator_key_valid(public, item.entry.integrated):
        raise VerificationError(
            "key", f"regulator root key {fp} is outside its trust-policy window", item.index
        )


# --- consistency ---------------------------------------------------------------------


def _consistency(
    doc: dict[str, Any],
    checkpoint: Checkpoint,
    since: bytes,
    trust: TrustPolicy,
    items: list[_Item],
) -> int:
    pinned, pinned_note = _open_checkpoint(since, trust, "consistency")
    _after_pinned(items, pinned.size, [t for _, t in _witness_times(pinned_note, trust)])
    if pinned.size > checkpoint.size:
        raise VerificationError(
            "consistency",
            f"your pinned checkpoint (size {pinned.size}) is newer than the bundle's "
            f"(size {checkpoint.size}): ask for a bundle at a later checkpoint",
        )
    if pinned.size == checkpoint.size:
        if pinned.root_hash != checkpoint.root_hash:
            raise VerificationError(
                "consistency", f"same size {pinned.size}, different root: the ledger forked"
            )
        return pinned.size
    proof_doc = doc.get("consistency")
    if not isinstance(proof_doc, dict) or set(proof_doc) != {"old_size", "proof"}:
        raise VerificationError(
            "consistency", f"the bundle has no consistency proof from size {pinned.size}"
        )
    if proof_doc["old_size"] != pinned.size:
        raise VerificationError(
            "consistency",
            f"the bundle proves consistency from size {proof_doc['old_size']}, "
            f"you pinned size {pinned.size}",
        )
    proof = _hashes(proof_doc["proof"], "consistency proof")
    try:
        verify_consistency(
            pinned.size, checkpoint.size, pinned.root_hash, checkpoint.root_hash, proof
        )
    except ProofError as e:
        raise VerificationError(
            "consistency",
            f"the checkpoint of size {checkpoint.size} does not extend your pinned checkpoint "
            f"of size {pinned.size} (a forked or rewritten ledger): {e}",
        ) from None
    return pinned.size


def _after_pinned(items: list[_Item], size: int, cosigned: list[datetime]) -> None:
    """Entries the pinned checkpoint does not cover were integrated after it was signed,
    so not before its witnesses cosigned it (with skew): no back-dating past it."""
    if not cosigned:
        return
    bound = min(cosigned)
    for item in items:
        if item.index >= size and item.entry.integrated < bound - WITNESS_SKEW:
            raise VerificationError(
                "time",
                f"integrated {format_time(item.entry.integrated)}, before the witnesses "
                f"cosigned your pinned checkpoint of size {size} ({format_time(bound)}), "
                "which does not cover it: back-dated",
                item.index,
            )


def _recompute(doc: dict[str, Any], items: list[_Item], checkpoint: Checkpoint) -> list[str]:
    """Recompute the claimed verdicts from the bundle's entries with the rule engine."""
    from ledger.law.rules import evaluate, fact_from_entry

    claim = doc.get("claim")
    if not isinstance(claim, dict) or claim.get("format") != CLAIM_FORMAT:
        raise VerificationError("claim", f"the bundle carries no {CLAIM_FORMAT} claim to recompute")
    verdicts = claim.get("verdicts")
    if not isinstance(verdicts, list) or not verdicts:
        raise VerificationError("claim", "the claim holds no verdicts")
    facts = [fact_from_entry(item.entry) for item in items]
    out = []
    for claimed in verdicts:
        try:
            if not isinstance(claimed, dict) or not isinstance(claimed.get("findings"), list):
                raise TypeError("a verdict is an object with a list of findings")
            system = str(claimed["system"])
            at = parse_time(str(claimed["at"]))
            as_of = claimed["as_of_index"]
            if not isinstance(as_of, int) or isinstance(as_of, bool):
                raise TypeError("as_of_index is not an index")
        except (KeyError, TypeError, ValueError, ClockError) as e:
            raise VerificationError("claim", f"malformed verdict: {e}") from None
        if not 0 <= as_of < checkpoint.size:
            raise VerificationError("claim", f"as_of_index {as_of} is not under the checkpoint")
        if f"system/{system}" not in doc["chains"]:
            raise VerificationError("claim", f"the bundle lacks the chain of system/{system}")
        try:
            recomputed = evaluate(system, facts, at, as_of_index=as_of).to_json()
        except (KeyError, ValueError) as e:
            raise VerificationError("claim", f"cannot recompute {system}: {e}") from None
        if recomputed != claimed:
            raise VerificationError("claim", _difference(system, claimed, recomputed))
        out.append(
            f"{system}: {recomputed['verdict']} as of entry {as_of} at {claimed['at']} "
            f"({len(recomputed['findings'])} findings), recomputed offline: matches the claim"
        )
    return out


def _difference(system: str, claimed: dict[str, Any], recomputed: dict[str, Any]) -> str:
    if claimed.get("verdict") != recomputed["verdict"]:
        return (
            f"{system}: the bundle claims {claimed.get('verdict')!r}, its entries give "
            f"{recomputed['verdict']!r}"
        )
    theirs, ours = claimed.get("findings", []), recomputed["findings"]
    for a, b in zip(theirs, ours, strict=False):
        if a != b:
            return f"{system}: claimed finding {a} differs from the recomputed {b}"
    return (
        f"{system}: the claim lists {len(theirs)} findings, the entries give {len(ours)}"
        if len(theirs) != len(ours)
        else f"{system}: the claim differs from the recomputed verdict"
    )


def _report_lines(report: Report) -> list[str]:
    witnesses = ", ".join(report.witnesses) if report.witnesses else "none required"
    lines = [
        f"checkpoint   {report.origin}, size {report.size}, root "
        f"{base64.b64encode(report.root).decode()}",
        f"             signed by log key {'+'.join(report.log_key.split('+')[:2])}; "
        f"witnesses: {witnesses}",
        f"inclusion    {report.entries} entries, each proven in the tree (RFC 9162)",
        f"chains       {len(report.chains)} complete subject histories, no missing link",
        "             heads: " + ", ".join(f"{s} {h}" for s, h in report.chains.items()),
        f"signatures   {report.signatures} DSSE signatures over the exact bytes, each key "
        "valid at its integration time",
    ]
    for i, subject in enumerate(report.completeness):
        label = "completeness" if i == 0 else ""
        lines.append(f"{label:<12} {subject}: {report.completeness_line(subject)}")
    if report.consistent_with is not None:
        lines.append(
            f"consistency  extends your pinned checkpoint of size {report.consistent_with}"
        )
    lines += [f"verdict      {line}" for line in report.recomputed]
    return lines
