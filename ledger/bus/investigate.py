"""Read-only investigation: what an investigator asks of the ledger, answered from the
projector's read model (:class:`~ledger.views.compliance.ComplianceView`) and LEDGER
alone, with the read-only ``_reader`` bus identity: the notary may be down.

Every answer is a msgspec Struct (``msgspec.json.encode(answer)`` or
:func:`to_json` gives its JSON; times are RFC 3339 UTC text). Errors are
:class:`~ledger.formats.errors.LedgerError` with a reason code:
:class:`NotFound` (``not_found``), :class:`BadQuery` (``bad_query``),
:class:`~ledger.bus.proofs.ProofUnavailable` (``proof_unavailable``).

Public API. ``view`` is a :class:`ComplianceView` (keep its calls on one thread:
the CLI runs them on the projector's state thread; ``call`` below, e.g.
``projector.state_thread.call``, says how); ``nc`` a NATS connection (the
``_reader`` identity is enough); ``tree`` the home's
:class:`~ledger.formats.tree.TreeStore`; ``trust`` the trust policy.

On the read model only (synchronous):

- ``search(view, actor=, subject=, type=, key=, after=-1, limit=100) -> SearchPage``:
  entries signed by an actor, about a subject (``system/x``, ``actor/y``, ...), of an
  event type, signed with a key fingerprint (all that are given), by index, paged
  (``page.next_after`` is the ``after`` of the next page, None at the end).
- ``systems(view, at=, at_index=, checkpoint_size=) -> list[SystemStatus]``: every
  system's verdict at a moment, ledger index or checkpoint (default: now).
- ``system_status(view, system, at=, at_index=, checkpoint_size=) -> SystemStatus``:
  one system's verdict and findings (rule, status, deadline, legal basis, evidence).
- ``timeline(view, system, until=, at_index=, checkpoint_size=) -> list[TimelineItem]``:
  who did what, with the signer's key and how the entry stands (default: everything).
- ``due(view, within, at=None, system=None) -> DueReport``: obligations overdue at
  ``at`` (every violation the rules find) and those that fall due within ``within``
  if nothing more is recorded (open preventive measures of incidents, audits and
  insurance about to lapse: the rules R1-R8 judged at ``at + within`` on the facts
  known at ``at``), each with its deadline.
- ``signer(view, index) -> Signer``: who signed an entry, the key's status and history.
- ``checkpoint_index(view, size) -> int``: the entry verdicts as of a checkpoint are
  taken at (the last before its heads leaf).
- ``parse_window("48h") -> timedelta`` (s, m, h, d, w); ``to_json(answer)``.

Who keeps the read model current: the one process that holds its writer lock
(:func:`ledger.views.store.writing`; ``ailedger project``, which ``ailedger up``
runs). Everyone else reads it as it stands: ``writer_active(home.state_dir)``
says whether a projector keeps it current now; without one, the CLI catches up
itself before it asks (``ailedger status``, ``get`` ...).

With LEDGER (asynchronous):

- ``entry(view, nc, tree, trust, index, call=None) -> EntryDetail``: one entry
  decoded (event, payload, signer and key, integration time, its sealed batch) and
  its inclusion proof under the newest checkpoint signed by a log key, verified.
- ``newest_checkpoint(nc, trust, size=None) -> CheckpointInfo``: the newest (or the
  size ``size``) checkpoint signed by a log key.
- ``export_bundle(nc, tree, trust, system=, actor=, checkpoint_size=None, claim=True)
  -> bytes``: an ``ailedger/bundle/v1`` evidence bundle (as ``ailedger export``).
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

import msgspec
from nats.aio.client import Client as NATS

from ledger.bus import proofs
from ledger.bus.sealed import parse_leaf
from ledger.bus.streams import LEDGER, get_message, last_sequence, read_stream, read_subject
from ledger.formats.entry import Entry, MalformedEntryError, ledger_subject
from ledger.formats.errors import USAGE, LedgerError
from ledger.formats.heads import HeadsLeaf
from ledger.formats.merkle import verify_inclusion
from ledger.formats.note import Verifier, Verifiers, open_note
from ledger.formats.seal import HDR_SEAL, SealError, open_seal_header
from ledger.formats.timeutil import SystemClock, format_time
from ledger.formats.tree import TreeStore
from ledger.formats.trust import TrustPolicy
from ledger.law.rules import Finding, SystemVerdict, summarize
from ledger.views.compliance import ComplianceView, EntryRow, SignerRow
from ledger.views.store import writer_active

__all__ = [
    "BadQuery",
    "CheckpointInfo",
    "DueItem",
    "DueReport",
    "EntryDetail",
    "EntrySummary",
    "FindingItem",
    "Inclusion",
    "KeyEventItem",
    "NotFound",
    "SealInfo",
    "SearchPage",
    "Signer",
    "SystemStatus",
    "TimelineItem",
    "checkpoint_index",
    "due",
    "entry",
    "export_bundle",
    "newest_checkpoint",
    "parse_window",
    "search",
    "signer",
    "system_status",
    "systems",
    "timeline",
    "to_json",
    "writer_active",
]

#: The most entries one search page holds.
MAX_PAGE = 1000
#: The largest index a store can hold (SQLite and PostgreSQL integers are 64-bit).
MAX_INDEX = 2**63 - 1
#: The longest window ``due`` looks ahead.
MAX_WINDOW = timedelta(days=100 * 366)
#: Messages read after an entry to find its batch's seal (batches are at most ``ailedger
#: up --batch-size``, 500 by default, plus room for foreign messages).
SEAL_SEARCH = 2048

T = TypeVar("T")


class NotFound(LedgerError, LookupError):
    """What was asked for is not in the ledger (no such entry, system or checkpoint)."""

    code = "not_found"
    exit_status = USAGE


class BadQuery(LedgerError, ValueError):
    """A query that cannot be answered as asked (no criterion, a page too large, ...)."""

    code = "bad_query"
    exit_status = USAGE


# --- answers ---------------------------------------------------------------------------


class EntrySummary(msgspec.Struct, frozen=True):
    """One entry in a list: what it is, about what, by whom, with which key."""

    index: int
    integrated: str
    subject: str
    type: str
    actor: str
    key_fingerprint: str
    event_id: str
    summary: str


class SearchPage(msgspec.Struct, frozen=True):
    query: dict[str, str]
    entries: list[EntrySummary]
    #: The ``after`` of the next page (the last index of this one), None when this is the last.
    next_after: int | None


class FindingItem(msgspec.Struct, frozen=True):
    rule: str
    status: str
    severity: str
    since: str
    deadline: str | None
    legal_basis: str
    evidence: list[int]
    summary: str


class SystemStatus(msgspec.Struct, frozen=True):
    system: str
    at: str
    as_of_index: int
    verdict: str
    policy_index: int
    findings: list[FindingItem]


class TimelineItem(msgspec.Struct, frozen=True):
    index: int
    integrated: str
    signed_at: str
    actor: str
    legal_name: str
    role: str
    key_fingerprint: str
    type: str
    summary: str
    verification: str


class KeyEventItem(msgspec.Struct, frozen=True):
    index: int
    integrated: str
    type: str
    summary: str


class Signer(msgspec.Struct, frozen=True):
    """The signer of an entry and its key, as the ledger's history has it now."""

    actor: str
    legal_name: str
    roles: list[str]
    suspended: bool
    key_fingerprint: str
    #: valid, not_yet, rotated, revoked or unknown, now.
    key_status: str
    key_valid_from: str | None
    key_valid_until: str | None
    key_compromised_at: str | None
    key_history: list[KeyEventItem]
    #: "verified", "<reason code> when integrated", or a compromise learnt later.
    verification: str


class SealInfo(msgspec.Struct, frozen=True):
    """The sealed batch the entry was appended in (its seal opened with a log key)."""

    first_sequence: int
    first_index: int
    last_index: int
    sealed_last: str
    signed_by: list[str]
    #: The seal's root is the tree's root at its size (None: the tree is not that large).
    root_matches_tree: bool | None


class CheckpointInfo(msgspec.Struct, frozen=True):
    origin: str
    size: int
    root: str
    #: The signed note, as published.
    note: str
    #: Names of the verified signatures (log keys of the trust policy).
    signed_by: list[str]
    #: Other signatures on the note (witness cosignatures), not checked here.
    cosignatures: list[str]


class Inclusion(msgspec.Struct, frozen=True):
    checkpoint: CheckpointInfo
    proof: list[str]
    #: The inclusion proof was checked against the checkpoint's root.
    verified: bool
    #: C2SP tlog-proof text (as ``ailedger prove INDEX``).
    tlog_proof: str


class EntryDetail(msgspec.Struct, frozen=True):
    index: int
    subject: str
    type: str
    actor: str
    integrated: str
    signed_at: str
    event_id: str
    prev: int | None
    summary: str
    payload: dict[str, Any]
    signer: Signer
    leaf_hash: str
    #: The entry's bytes (ailedger/entry/v1), base64.
    entry: str
    seal: SealInfo | None
    inclusion: Inclusion | None
    #: Why there is no inclusion proof (not yet covered by a checkpoint, ...).
    inclusion_note: str | None


DueState = Literal["overdue", "due"]


class DueItem(msgspec.Struct, frozen=True):
    system: str
    #: overdue: unmet at ``at``; due: unmet at its deadline, within the window, if
    #: nothing more is recorded.
    state: DueState
    rule: str
    severity: str
    deadline: str | None
    legal_basis: str
    evidence: list[int]
    summary: str


class DueReport(msgspec.Struct, frozen=True):
    at: str
    until: str
    as_of_index: int
    items: list[DueItem]
    overdue: int
    due: int


def to_json(answer: msgspec.Struct | list[Any]) -> Any:
    """An answer as JSON values (dicts, lists, text, numbers)."""
    return msgspec.to_builtins(answer)


# --- on the read model ----------------------------------------------------------------


def _t(t: datetime | None) -> str | None:
    return None if t is None else format_time(t)


def _summary(row: EntryRow) -> EntrySummary:
    fact = row.fact()
    return EntrySummary(
        row.index,
        row.integrated,
        row.subject,
        row.type,
        row.actor,
        row.key_fingerprint,
        str(fact.payload.get("event_id", "")),
        summarize(fact),
    )


def search(
    view: ComplianceView,
    *,
    actor: str | None = None,
    subject: str | None = None,
    type: str | None = None,
    key: str | None = None,
    after: int = -1,
    limit: int = 100,
) -> SearchPage:
    """Entries by signer, subject, event type and/or signing key fingerprint, by index."""
    query = {
        name: value
        for name, value in (("actor", actor), ("subject", subject), ("type", type), ("key", key))
        if value is not None
    }
    if not query:
        raise BadQuery("search by --actor, --subject, --type or --key (at least one)")
    if not 1 <= limit <= MAX_PAGE:
        raise BadQuery(f"a page holds 1 to {MAX_PAGE} entries, not {limit}")
    if key is not None and "/" in key:  # a key id (actor/fingerprint) names its fingerprint
        key = key.partition("/")[2]
    after = max(-1, min(after, MAX_INDEX))
    rows = view.search(
        actor=actor, subject=subject, type=type, key=key, after=after, limit=limit + 1
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return SearchPage(query, [_summary(r) for r in rows], rows[-1].index if more else None)


def _finding(f: Finding) -> FindingItem:
    return FindingItem(
        f.rule,
        f.status,
        f.severity,
        format_time(f.since),
        _t(f.deadline),
        f.legal_basis,
        list(f.evidence),
        f.summary,
    )


def _status(v: SystemVerdict) -> SystemStatus:
    return SystemStatus(
        v.system,
        format_time(v.at),
        v.as_of_index,
        v.verdict,
        v.policy_index,
        [_finding(f) for f in v.findings],
    )


def _moment(
    view: ComplianceView,
    at: datetime | None,
    at_index: int | None,
    checkpoint_size: int | None,
) -> tuple[datetime | None, int | None]:
    """(time, index) the verdicts are asked at: a checkpoint of size N is its last
    entry before the heads leaf at N-1, judged when it was integrated (as the claim
    of a bundle exported at that checkpoint)."""
    given = sum(x is not None for x in (at, at_index, checkpoint_size))
    if given > 1:
        raise BadQuery("give one of a time, an index or a checkpoint size")
    if checkpoint_size is not None:
        return None, checkpoint_index(view, checkpoint_size)
    if at_index is not None:
        row = view.view.row(at_index) if 0 <= at_index <= MAX_INDEX else None
        if row is None:
            raise NotFound(_no_entry(view, at_index))
        return None, at_index
    when = at if at is not None else SystemClock().now()
    genesis = view.view.row(0)
    if genesis is None:
        raise NotFound("the ledger is empty (or not projected yet)")
    if when < genesis.fact().integrated:
        raise BadQuery(
            f"the ledger starts at {genesis.integrated}; nothing is recorded before "
            f"{format_time(when)}"
        )
    return when, None


def checkpoint_index(view: ComplianceView, size: int) -> int:
    """The index verdicts as of the checkpoint of ``size`` are taken at: its last entry
    about a subject (the leaf before its heads leaf at ``size - 1``)."""
    if size < 2:
        raise BadQuery(f"no entry before a checkpoint of size {size}")
    if size > MAX_INDEX:
        raise NotFound(f"no checkpoint of size {size}")
    last = view.last_index(size - 2)
    if last is None or (view.last_index() or -1) < size - 2:
        raise NotFound(f"the read model holds no entries up to {size - 2}")
    return last


def systems(
    view: ComplianceView,
    *,
    at: datetime | None = None,
    at_index: int | None = None,
    checkpoint_size: int | None = None,
) -> list[SystemStatus]:
    """Every system registered by then, with its verdict (default: now)."""
    when, index = _moment(view, at, at_index, checkpoint_size)
    out = []
    for s in view.systems():
        try:
            out.append(_status(view.status(s, at=when, at_index=index)))
        except ValueError:  # not registered yet then
            continue
    return out


def system_status(
    view: ComplianceView,
    system: str,
    *,
    at: datetime | None = None,
    at_index: int | None = None,
    checkpoint_size: int | None = None,
) -> SystemStatus:
    """One system's verdict and findings then (default: now)."""
    when, index = _moment(view, at, at_index, checkpoint_size)
    if system not in view.systems():
        raise NotFound(f"no system {system}")
    try:
        return _status(view.status(system, at=when, at_index=index))
    except ValueError as e:
        raise NotFound(str(e)) from None


def timeline(
    view: ComplianceView,
    system: str,
    *,
    until: datetime | None = None,
    at_index: int | None = None,
    checkpoint_size: int | None = None,
) -> list[TimelineItem]:
    """Who did what to ``system`` (up to ``until``, index ``at_index`` or the checkpoint
    of ``checkpoint_size``: one of them, default everything), in ledger order."""
    if sum(x is not None for x in (until, at_index, checkpoint_size)) > 1:
        raise BadQuery("give one of a time, an index or a checkpoint size")
    if checkpoint_size is not None:
        at_index = checkpoint_index(view, checkpoint_size)
    if at_index is not None and not 0 <= at_index <= MAX_INDEX:
        raise NotFound(_no_entry(view, at_index))
    try:
        rows = view.timeline(system, until=until, up_to_index=at_index)
    except KeyError:
        raise  # a bug, not an answer
    except LookupError as e:
        raise NotFound(str(e)) from None
    return [
        TimelineItem(
            r.index,
            format_time(r.integrated),
            r.signed_at,
            r.actor,
            r.legal_name,
            r.role,
            r.key_fingerprint,
            r.type,
            r.summary,
            r.verification,
        )
        for r in rows
    ]


def due(
    view: ComplianceView,
    within: timedelta,
    *,
    at: datetime | None = None,
    system: str | None = None,
) -> DueReport:
    """What is overdue at ``at`` (default: now) and what falls due by ``at + within``.

    Overdue: every violation the rules find at ``at``. Due: each violation the rules
    find at ``at + within`` on the facts known at ``at`` that is not one yet, with its
    deadline (an incident's preventive measure, an audit's or an insurance policy's
    end, a rulebook coming into force ...); ordered by deadline."""
    if within < timedelta(0):
        raise BadQuery("the window must not be negative")
    if within > MAX_WINDOW:
        raise BadQuery(f"the window must be at most {MAX_WINDOW.days} days")
    when, _ = _moment(view, at, None, None)
    assert when is not None
    try:
        until = when + within
    except OverflowError:
        raise BadQuery(f"{format_time(when)} plus the window is beyond the year 9999") from None
    names = view.systems() if system is None else [system]
    if system is not None and system not in view.systems():
        raise NotFound(f"no system {system}")
    items: list[DueItem] = []
    as_of = -1
    for s in names:
        try:
            now, later = view.statuses(s, at=when, judged_at=(when, until))
        except ValueError:  # not registered yet
            continue
        as_of = max(as_of, now.as_of_index)
        for f in now.findings:
            if f.status == "violation":
                items.append(_due_item(s, "overdue", f))
        for f in later.findings:
            if f.status == "violation" and f.deadline is not None and f.deadline > when:
                items.append(_due_item(s, "due", f))
    items.sort(key=lambda i: (i.deadline or "", i.system, i.rule))
    overdue = sum(i.state == "overdue" for i in items)
    return DueReport(
        format_time(when), format_time(until), as_of, items, overdue, len(items) - overdue
    )


def _due_item(system: str, state: DueState, f: Finding) -> DueItem:
    return DueItem(
        system,
        state,
        f.rule,
        f.severity,
        _t(f.deadline),
        f.legal_basis,
        list(f.evidence),
        f.summary,
    )


def _no_entry(view: ComplianceView, index: int) -> str:
    last = view.last_index()
    if last is None:
        return f"no entry {index}: the ledger is empty (or not projected yet)"
    if index < 0:
        return f"no entry {index}: indexes start at 0"
    if index > MAX_INDEX:
        return f"no entry {index}: indexes end at {MAX_INDEX}"
    if index > last:
        return f"no entry {index}: the newest entry about a subject is {last}"
    return _HEADS_LEAF.format(index=index)


_HEADS_LEAF = (
    "index {index} is a heads leaf (the notary's commitment to the subjects' heads), "
    "not an entry about a subject: `ailedger prove {index}` proves it"
)


async def _heads_leaf_at(nc: NATS, index: int) -> bool:
    """Whether LEDGER holds a heads leaf of ``index`` where it would be without foreign
    messages before it (for the message that says why there is no such entry)."""
    m = await get_message(nc, LEDGER, index + 1)
    if m is None:
        return False
    try:
        leaf = parse_leaf(m.data)
    except (LedgerError, ValueError):
        return False
    return isinstance(leaf, HeadsLeaf) and leaf.index == index


def _signer(s: SignerRow, now: datetime) -> Signer:
    return Signer(
        s.actor,
        s.legal_name,
        list(s.roles),
        s.suspended,
        s.key_fingerprint,
        s.key_status(now),
        _t(s.key_valid_from),
        _t(s.key_valid_until),
        _t(s.key_compromised_at),
        [
            KeyEventItem(k.index, format_time(k.integrated), k.type, k.summary)
            for k in s.key_history
        ],
        s.verification,
    )


def signer(view: ComplianceView, index: int) -> Signer:
    """Who signed entry ``index``, with which key, and how that key stands now."""
    try:
        if not 0 <= index <= MAX_INDEX:
            raise LookupError(index)
        return _signer(view.signer(index), SystemClock().now())
    except KeyError:
        raise  # a bug, not an answer
    except LookupError:
        raise NotFound(_no_entry(view, index)) from None


# --- with LEDGER ---------------------------------------------------------------------


def _verifiers(trust: TrustPolicy) -> Verifiers:
    return Verifiers(*(Verifier.from_vkey(k) for k in trust.log_vkeys()))


def _checkpoint_info(signed: proofs.SignedCheckpoint, trust: TrustPolicy) -> CheckpointInfo:
    note = open_note(signed.note, _verifiers(trust))
    c = signed.checkpoint
    return CheckpointInfo(
        c.origin,
        c.size,
        base64.b64encode(c.root_hash).decode(),
        signed.note.decode(),
        [s.name for s in note.sigs],
        [s.name for s in note.unverified_sigs],
    )


async def newest_checkpoint(
    nc: NATS, trust: TrustPolicy, size: int | None = None
) -> CheckpointInfo:
    """The newest checkpoint signed by a log key of ``trust`` (or the one of ``size``)."""
    signed = await proofs.find_checkpoint(nc, size, verifiers=_verifiers(trust))
    return _checkpoint_info(signed, trust)


async def _inline(fn: Callable[..., T], *args: Any) -> T:
    return fn(*args)


async def _find_entry(nc: NATS, row: EntryRow) -> tuple[Entry, int]:
    """The LEDGER message of the view's ``row``: the entry with its index, about its
    subject, with its payload (the view holds only sealed entries; its inclusion
    proof, checked after, is what proves the bytes). Tried first where it is when no
    foreign message came before it, then among the subject's messages."""

    def matches(data: bytes) -> Entry | None:
        try:
            e = Entry.parse(data)
        except (MalformedEntryError, ValueError):
            return None
        if e.index != row.index or e.subject != row.subject:
            return None
        try:
            same = EntryRow.of(e).payload == row.payload
        except (LedgerError, ValueError, KeyError):
            return None
        return e if same else None

    m = await get_message(nc, LEDGER, row.index + 1)
    if m is not None and (e := matches(m.data)) is not None:
        return e, m.sequence
    last = await last_sequence(nc, LEDGER)
    for m in await read_subject(nc, LEDGER, ledger_subject(row.subject), last):
        if (e := matches(m.data)) is not None:
            return e, m.sequence
    raise NotFound(f"entry {row.index} is in the read model but not found in LEDGER")


async def _seal(
    nc: NATS, trust: TrustPolicy, tree: TreeStore, index: int, sequence: int
) -> SealInfo | None:
    """The seal of the batch holding ``index`` at ``sequence``: the first sealed message
    from there on, opened with the log keys, if it covers that sequence at that index."""
    last = min(await last_sequence(nc, LEDGER), sequence + SEAL_SEARCH)
    messages = read_stream(nc, LEDGER, sequence, last)
    async with contextlib.aclosing(messages):
        async for m in messages:
            value = m.headers.get(HDR_SEAL)
            if value is None:
                continue
            try:
                seal = open_seal_header(value, _verifiers(trust))
            except SealError:
                continue  # a foreign seal: the notary's is further on, or none
            count = m.sequence - seal.seq + 1
            first = seal.size - count
            if not seal.seq <= sequence <= m.sequence or first + sequence - seal.seq != index:
                return None
            root = tree.root(seal.size) == seal.root if tree.size >= seal.size else None
            return SealInfo(
                seal.seq,
                first,
                seal.size - 1,
                format_time(seal.last),
                [name for name, _ in seal.signed_by],
                root,
            )
    return None


async def entry(
    view: ComplianceView,
    nc: NATS,
    tree: TreeStore,
    trust: TrustPolicy,
    index: int,
    *,
    call: Callable[..., Awaitable[Any]] | None = None,
) -> EntryDetail:
    """Entry ``index`` decoded, with its signer, its batch's seal and its inclusion
    proof under the newest checkpoint (checked against that checkpoint's root).

    ``call(fn, *args)`` runs the view's questions (default: here, at once)."""
    run = call or _inline
    row: EntryRow | None = await run(view.view.row, index) if 0 <= index <= MAX_INDEX else None
    if row is None:
        if 0 <= index <= MAX_INDEX and await _heads_leaf_at(nc, index):
            raise NotFound(_HEADS_LEAF.format(index=index))
        raise NotFound(await run(_no_entry, view, index))
    signer_row: SignerRow = await run(view.signer, index)
    e, sequence = await _find_entry(nc, row)
    fact = row.fact()
    inclusion: Inclusion | None = None
    why: str | None = None
    try:
        signed = await proofs.find_checkpoint(nc, verifiers=_verifiers(trust))
    except proofs.ProofUnavailable as err:
        signed, why = None, str(err)
    if signed is not None:
        size = signed.checkpoint.size
        if index >= size:
            why = f"not yet covered by a checkpoint (the newest is of size {size})"
        else:
            await proofs.sync_tree(nc, tree, size, trust=trust)
            hashes = tree.inclusion_proof(index, size)
            verify_inclusion(e.leaf_hash, index, size, hashes, signed.checkpoint.root_hash)
            inclusion = Inclusion(
                _checkpoint_info(signed, trust),
                [base64.b64encode(h).decode() for h in hashes],
                True,
                proofs.tlog_proof(tree, index, signed).decode(),
            )
    return EntryDetail(
        index=index,
        subject=row.subject,
        type=row.type,
        actor=row.actor,
        integrated=row.integrated,
        signed_at=str(fact.payload.get("signed_at", "")),
        event_id=str(fact.payload.get("event_id", "")),
        prev=e.prev,
        summary=summarize(fact),
        payload=dict(fact.payload),
        signer=_signer(signer_row, SystemClock().now()),
        leaf_hash=base64.b64encode(e.leaf_hash).decode(),
        entry=base64.b64encode(e.encoded).decode(),
        seal=await _seal(nc, trust, tree, index, sequence),
        inclusion=inclusion,
        inclusion_note=why,
    )


async def export_bundle(
    nc: NATS,
    tree: TreeStore,
    trust: TrustPolicy,
    *,
    system: str | None = None,
    actor: str | None = None,
    checkpoint_size: int | None = None,
    claim: bool = True,
    since: int | None = None,
) -> bytes:
    """An ``ailedger/bundle/v1`` for ``system`` (and/or ``actor``) as of the checkpoint
    of ``checkpoint_size`` (default: the newest), with the verdict claimed on each
    system (``claim``): what ``ailedger export --system S --claim`` writes."""
    if system is None and actor is None:
        raise BadQuery("export a system or an actor")
    return await proofs.export_bundle(
        nc,
        tree,
        subjects=[f"system/{system}"] if system else [],
        actor=actor,
        checkpoint_size=checkpoint_size,
        since=since,
        claim=claim,
        trust=trust,
    )


def parse_window(text: str) -> timedelta:
    """``48h``, ``7d``, ``90m``, ``2w``, ``3600s``: a window of time."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    number, unit = text[:-1], text[-1:].lower()
    if unit not in units or not number.isascii() or not number.isdigit():
        raise BadQuery(f"{text!r} is not a window: a number and a unit, e.g. 48h, 7d, 30m, 2w")
    seconds = int(number) * units[unit]
    if seconds > MAX_WINDOW // timedelta(seconds=1):
        raise BadQuery(f"{text!r} is not a window: at most {MAX_WINDOW.days} days")
    return timedelta(seconds=seconds)
