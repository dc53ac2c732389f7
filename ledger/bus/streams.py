"""NATS JetStream: the one connection helper, the streams of DESIGN §4, atomic batches.

Streams are declared here as JetStream API JSON so that every setting the
contract depends on (``deny_delete``, ``allow_atomic``, ``persist_mode`` ...)
is explicit. :func:`ensure_streams` is idempotent and refuses to run against a
LEDGER stream whose settings would allow deleting history.

nats-py pitfalls handled here: a failed publish may never resolve its future
(nats.py #985), so every wait is bounded; a permission violation shows up only
as a timeout plus an ``error_cb`` call, so errors are logged, not swallowed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import uuid
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec
import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from ledger.formats.errors import CHECK_FAILED, UNAVAILABLE, LedgerError
from ledger.law.events import EVENT_TYPES

__all__ = [
    "CHECKPOINTS",
    "HEADS_SUBJECT",
    "INTAKE",
    "LEDGER",
    "REJECTED",
    "BatchRejected",
    "BusError",
    "Fenced",
    "NatsUnreachable",
    "UnsafeLedgerStream",
    "Verdict",
    "connect",
    "ensure_notary_consumer",
    "ensure_streams",
    "intake_subject",
    "last_sequence",
    "publish_atomic",
    "read_stream",
]

log = logging.getLogger("ailedger.bus")

INTAKE = "INTAKE"
LEDGER = "LEDGER"
REJECTED = "REJECTED"
CHECKPOINTS = "CHECKPOINTS"
CHECKPOINT_SUBJECT = "checkpoint"
#: The LEDGER subject of the notary's heads leaves (DESIGN §3), ``Nats-Msg-Id`` ``heads-<m>``.
HEADS_SUBJECT = "ledger.heads"

#: Where the notary answers "what happened to event <id>?" requests.
LOOKUP_SUBJECT = "ailedger.notary.lookup"

# Headers of the ailedger protocol (the Nats-* ones belong to JetStream).
HDR_REPLY = "Ailedger-Reply"
HDR_REASON = "Ailedger-Reason"
HDR_DETAIL = "Ailedger-Detail"
HDR_EVENT = "Ailedger-Event-Id"
HDR_INTAKE_SUBJECT = "Ailedger-Intake-Subject"
HDR_INTAKE_SEQ = "Ailedger-Intake-Sequence"
HDR_MSG_ID = "Nats-Msg-Id"

_NS = 1_000_000_000
DUPLICATE_WINDOW_NS = 10 * 60 * _NS
MAX_BATCH = 1000  # the server's limit on an atomic batch (ADR-50)

# --- sizes and quotas (docs/operations.md) -----------------------------------

#: The largest envelope the notary accepts (DESIGN §2).
MAX_ENVELOPE = 64 * 1024
#: INTAKE refuses larger messages (headers and body) at publish: the margin over
#: MAX_ENVELOPE lets a slightly oversize submission reach the notary, which
#: rejects it with a reason code and keeps its hash and first bytes.
INTAKE_MAX_MSG_SIZE = MAX_ENVELOPE + 8 * 1024
#: The embedded server's ``max_payload``: above every message ailedger writes
#: (an entry is an envelope plus a few header lines, a receipt a few KiB).
MAX_PAYLOAD = 256 * 1024
#: A rejected submission larger than this is kept in REJECTED as its SHA-256,
#: its size and its first :data:`REJECTED_HEAD` bytes, never whole.
REJECTED_KEEP_WHOLE = MAX_ENVELOPE
REJECTED_HEAD = 4 * 1024
#: An actor's INTAKE backlog: at most this many unprocessed submissions per
#: subject ``intake.<actor>.<type>``; more are refused by the server (discard
#: new per subject) until the notary has worked through them.
INTAKE_MAX_PER_SUBJECT = 1000
#: The whole INTAKE backlog (far above actors x event types x the per-subject cap).
INTAKE_MAX_MSGS = 10_000_000
#: No byte limit: JetStream reserves a stream's max_bytes of its storage at
#: creation (a server with less fails with "insufficient storage resources");
#: the bytes are bounded by the message counts times INTAKE_MAX_MSG_SIZE.
INTAKE_MAX_BYTES = -1
#: REJECTED keeps, per actor (subject ``rejected.<actor>``), the latest
#: REJECTED_MAX_PER_SUBJECT rejections, each for at most REJECTED_MAX_AGE_DAYS:
#: one actor's flood only rolls over its own older rejections.
REJECTED_MAX_PER_SUBJECT = 10_000
REJECTED_MAX_AGE_DAYS = 365


def intake_subjects() -> list[str]:
    """INTAKE's subjects: ``intake.*.<type>``, one per event type. An actor thus has a
    bounded set of subjects (its backlog is at most the event types times
    :data:`INTAKE_MAX_PER_SUBJECT`); a publish on any other intake subject is
    stored nowhere (the publisher gets no acknowledgement)."""
    return [f"intake.*.{t}" for t in EVENT_TYPES]


#: The settings of INTAKE and REJECTED that :func:`ensure_streams` brings an
#: existing stream (created by an older version) up to.
UPGRADED_SETTINGS = (
    "subjects",
    "discard",
    "discard_new_per_subject",
    "max_msgs_per_subject",
    "max_msgs",
    "max_bytes",
    "max_msg_size",
    "max_age",
)


def stream_configs(replicas: int = 1) -> dict[str, dict[str, Any]]:
    """The streams of DESIGN §4, as JetStream API JSON."""
    intake: dict[str, Any] = {
        "name": INTAKE,
        "subjects": intake_subjects(),
        "retention": "workqueue",
        "storage": "file",
        "num_replicas": replicas,
        "duplicate_window": DUPLICATE_WINDOW_NS,
        # discard new: a full INTAKE refuses submissions (the client retries),
        # it never drops unprocessed ones; per subject: one actor's flood
        # fills its own subjects only.
        "discard": "new",
        "discard_new_per_subject": True,
        "max_msgs_per_subject": INTAKE_MAX_PER_SUBJECT,
        "max_msgs": INTAKE_MAX_MSGS,
        "max_bytes": INTAKE_MAX_BYTES,
        "max_msg_size": INTAKE_MAX_MSG_SIZE,
    }
    if replicas == 1:
        # An unreceipted submission is retried by its client with the same
        # event id, so INTAKE may trade fsync-per-message for speed.
        intake["persist_mode"] = "async"
    return {
        INTAKE: intake,
        LEDGER: {
            "name": LEDGER,
            "subjects": ["ledger.>"],
            "retention": "limits",
            "storage": "file",
            "num_replicas": replicas,
            "discard": "new",
            "max_msgs": -1,
            "max_bytes": -1,
            "max_age": 0,
            "max_msgs_per_subject": -1,
            "deny_delete": True,
            "deny_purge": True,
            "allow_rollup_hdrs": False,
            "allow_direct": True,
            "allow_atomic": True,
            "duplicate_window": DUPLICATE_WINDOW_NS,
        },
        REJECTED: {
            "name": REJECTED,
            "subjects": ["rejected.>"],
            "retention": "limits",
            "storage": "file",
            "num_replicas": replicas,
            "duplicate_window": DUPLICATE_WINDOW_NS,
            "allow_direct": True,
            "discard": "old",
            "max_msgs_per_subject": REJECTED_MAX_PER_SUBJECT,
            "max_age": REJECTED_MAX_AGE_DAYS * 86400 * _NS,
            "max_msg_size": REJECTED_KEEP_WHOLE + 16 * 1024,
        },
        CHECKPOINTS: {
            "name": CHECKPOINTS,
            "subjects": [CHECKPOINT_SUBJECT],
            "retention": "limits",
            "storage": "file",
            "num_replicas": replicas,
            "discard": "new",
            "max_msgs": -1,
            "max_age": 0,
            "deny_delete": True,
            "deny_purge": True,
            "allow_direct": True,
        },
    }


class BusError(LedgerError, RuntimeError):
    """A NATS or JetStream request failed: an error answer, or none in time."""

    code = "nats_error"
    exit_status = UNAVAILABLE


class NatsUnreachable(BusError):
    """No NATS server answers at the URL (after a few quick attempts)."""

    code = "nats_unreachable"
    exit_status = UNAVAILABLE


class UnsafeLedgerStream(BusError):
    """The LEDGER stream exists with settings that would let history be deleted."""

    code = "unsafe_ledger_stream"
    exit_status = CHECK_FAILED


class Fenced(BusError):
    """The LEDGER stream moved on: another notary appended first (wrong last sequence)."""

    code = "fenced"
    exit_status = UNAVAILABLE


class BatchRejected(BusError):
    """The server refused an atomic batch for another reason."""

    code = "batch_rejected"
    exit_status = UNAVAILABLE


def intake_subject(actor: str, event_type: str) -> str:
    return f"intake.{actor}.{event_type}"


def rejected_subject(actor: str) -> str:
    return f"rejected.{actor}"


HDR_SHA256 = "Ailedger-Sha256"
HDR_SIZE = "Ailedger-Size"
HDR_TRUNCATED = "Ailedger-Truncated"


def rejected_copy(data: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    """What REJECTED keeps of a rejected submission: the bytes, their SHA-256 and
    size; beyond :data:`REJECTED_KEEP_WHOLE` only the first :data:`REJECTED_HEAD`
    bytes (header ``Ailedger-Truncated: 1``), so the copy never exceeds any
    server's ``max_payload`` and a huge submission cannot break the notary's
    connection."""
    kept = dict(headers)
    kept[HDR_SHA256] = hashlib.sha256(data).hexdigest()
    kept[HDR_SIZE] = str(len(data))
    if len(data) <= REJECTED_KEEP_WHOLE:
        return data, kept
    kept[HDR_TRUNCATED] = "1"
    return data[:REJECTED_HEAD], kept


#: A bus identity's seed file, for processes given no other (DESIGN §7).
CREDS_ENV = "AILEDGER_NATS_CREDS"

#: Attempts at the first connection before giving up: an unreachable server
#: fails in about a second (refused) or ``CONNECT_ATTEMPTS`` x 3 s (no answer).
CONNECT_ATTEMPTS = 3
#: Seconds between reconnection attempts of a ``forever`` connection (plus
#: nats-py's jitter): the backoff is bounded, the attempts are not.
RECONNECT_WAIT = 1.0


async def connect(
    url: str, *, name: str = "ailedger", forever: bool = False, **options: Any
) -> NATS:
    """Connect with bounded timeouts, logging async errors instead of losing them.

    The first connection is tried :data:`CONNECT_ATTEMPTS` times, then
    :class:`NatsUnreachable` names the URL; once connected, the client
    reconnects up to ``max_reconnect_attempts`` times (default 30), or, with
    ``forever`` (long-running processes: notary, projector), without end,
    every :data:`RECONNECT_WAIT` seconds. Such a process must still watch
    ``nc.is_closed`` (nats-py closes for good on some server errors) and exit
    non-zero then (:func:`ensure_open`).
    """
    connected = False
    failures: list[Exception] = []

    async def error_cb(e: Exception) -> None:
        if connected:
            log.error("NATS error (%s): %s", name, e)
        else:  # reported once, in NatsUnreachable, not once per attempt
            failures.append(e)

    reconnect_attempts = options.pop("max_reconnect_attempts", -1 if forever else 30)

    async def disconnected_cb() -> None:
        # nats-py calls this on close and drain too: only a lost connection is news.
        if connected and not nc.is_closed and not nc.is_draining:
            log.warning("NATS connection of %s lost; reconnecting", name)

    async def reconnected_cb() -> None:
        log.warning("NATS connection of %s is back (%s)", name, nc.connected_url)

    options.setdefault("disconnected_cb", disconnected_cb)
    options.setdefault("reconnected_cb", reconnected_cb)
    if "nkeys_seed" not in options and os.environ.get(CREDS_ENV):
        # The bus identity of a process that names none (like NATS_CREDS):
        # the seed file, its inbox prefix after the identity named by its stem.
        seed = Path(os.environ[CREDS_ENV])
        options["nkeys_seed"] = str(seed)
        options.setdefault("inbox_prefix", f"_INBOX.{seed.name.split('.')[0]}")
    try:
        nc: NATS = await nats.connect(
            url,
            name=name,
            connect_timeout=3,
            max_reconnect_attempts=CONNECT_ATTEMPTS - 1,
            reconnect_time_wait=0.5,
            error_cb=error_cb,
            **options,
        )
    except Exception as e:  # nats-py raises several unrelated types here
        # A refused identity says more than the resets of the attempts after it.
        refused = [f for f in failures if "authorization" in str(f).lower()]
        cause = refused[-1] if refused else failures[-1] if failures else e
        raise NatsUnreachable(
            f"cannot connect to NATS at {url}: {str(cause) or type(cause).__name__}"
        ) from None
    connected = True
    nc.options["max_reconnect_attempts"] = reconnect_attempts
    if forever:
        nc.options["reconnect_time_wait"] = RECONNECT_WAIT
    return nc


def ensure_open(nc: NATS, what: str) -> None:
    """Raise :class:`NatsUnreachable` once ``nc`` is closed for good: a long-running
    process then exits non-zero for its supervisor instead of staying up idle."""
    if nc.is_closed:
        raise NatsUnreachable(
            f"{what}: the connection to NATS ({nc.connected_url or 'the server'}) was closed "
            "and will not come back; exiting for the supervisor to restart"
        )


async def api(nc: NATS, subject: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """One JetStream API call; errors become :class:`BusError` with the server's words."""
    payload = json.dumps(body).encode() if body is not None else b""
    try:
        msg = await nc.request(f"$JS.API.{subject}", payload, timeout=5)
    except Exception as e:
        raise BusError(f"JetStream API {subject}: {e or type(e).__name__}") from None
    resp: dict[str, Any] = json.loads(msg.data)
    return resp


def _ledger_unsafe_settings(cfg: dict[str, Any]) -> list[str]:
    bad = []
    if not cfg.get("deny_delete"):
        bad.append("deny_delete is off")
    if not cfg.get("deny_purge"):
        bad.append("deny_purge is off")
    if cfg.get("allow_rollup_hdrs"):
        bad.append("rollup is allowed")
    if cfg.get("retention", "limits") != "limits":
        bad.append(f"retention is {cfg.get('retention')}")
    if cfg.get("max_age", 0):
        bad.append("max_age is set")
    if cfg.get("allow_msg_ttl"):
        bad.append("per-message TTL is allowed")
    if cfg.get("subject_delete_marker_ttl"):
        bad.append("subject delete markers are on")
    if cfg.get("max_msgs_per_subject", -1) > 0:
        bad.append("max_msgs_per_subject is set")
    if cfg.get("discard", "old") != "new":
        bad.append("discard policy is old")
    if cfg.get("mirror"):
        bad.append("it is a mirror")
    if cfg.get("max_msgs", -1) > 0:
        bad.append(f"max_msgs is {cfg.get('max_msgs')}")
    if cfg.get("max_bytes", -1) > 0:
        bad.append(f"max_bytes is {cfg.get('max_bytes')}")
    if cfg.get("sources"):
        bad.append("it has sources")
    return bad


def required_settings_problems(name: str, cfg: dict[str, Any]) -> list[str]:
    """How the config of LEDGER or CHECKPOINTS departs from DESIGN §4 (empty: none).

    History is safe only while deletes, purges, rollups, TTLs and every limit
    that would make the server drop old messages stay off; readers need
    ``allow_direct``, the notary needs ``allow_atomic`` on LEDGER.
    """
    bad = _ledger_unsafe_settings(cfg)
    if not cfg.get("allow_direct"):
        bad.append("allow_direct is off")
    if name == LEDGER and not cfg.get("allow_atomic"):
        bad.append("allow_atomic is off")
    expected = stream_configs()[name]["subjects"]
    if cfg.get("subjects") != expected:
        bad.append(f"subjects are {cfg.get('subjects')}, expected {expected}")
    if cfg.get("storage", "file") != "file":
        bad.append(f"storage is {cfg.get('storage')}")
    return bad


#: The streams whose settings guard history, re-checked by the notary.
GUARDED_STREAMS = (LEDGER, CHECKPOINTS)


async def check_guarded_streams(nc: NATS) -> dict[str, list[str]]:
    """STREAM.INFO of LEDGER and CHECKPOINTS: what is wrong with each (empty lists: fine).

    A stream the server says it does not have is a problem too (deleted); no
    answer at all raises :class:`BusError` (the settings are unknown, not changed).
    """
    problems: dict[str, list[str]] = {}
    for name in GUARDED_STREAMS:
        # No answer (disconnected, slow) raises BusError: unknown is not "changed".
        info = await api(nc, f"STREAM.INFO.{name}")
        if "error" in info:
            problems[name] = [f"stream info: {info['error'].get('description')}"]
            continue
        problems[name] = required_settings_problems(name, info["config"])
    return problems


async def ensure_streams(nc: NATS, *, replicas: int = 1) -> None:
    """Create INTAKE, LEDGER and REJECTED if missing; refuse an unsafe LEDGER."""
    for name, cfg in stream_configs(replicas).items():
        info = await api(nc, f"STREAM.INFO.{name}")
        if "error" in info:
            if info["error"].get("err_code") != 10059:  # stream not found
                raise BusError(f"stream {name}: {info['error'].get('description')}")
            created = await api(nc, f"STREAM.CREATE.{name}", cfg)
            if "error" in created:
                raise BusError(
                    f"cannot create stream {name}: {created['error'].get('description')}"
                )
            info = created
        existing = info["config"]
        if name in (LEDGER, CHECKPOINTS):
            bad = _ledger_unsafe_settings(existing)
            if bad:
                raise UnsafeLedgerStream(
                    f"refusing to use stream {name}: " + "; ".join(bad) + " (history could be lost)"
                )
        if name == LEDGER and not existing.get("allow_atomic"):
            raise UnsafeLedgerStream("stream LEDGER does not allow atomic batches")
        if name in (INTAKE, REJECTED):
            existing = await _upgrade(nc, name, cfg, existing)
            continue  # what could not be upgraded was logged
        if existing.get("subjects") != cfg["subjects"]:
            raise BusError(
                f"stream {name} has subjects {existing.get('subjects')}, expected {cfg['subjects']}"
            )


async def _upgrade(
    nc: NATS, name: str, cfg: dict[str, Any], existing: dict[str, Any]
) -> dict[str, Any]:
    """Bring the subjects, limits and quotas of an existing INTAKE or REJECTED to
    this version's (docs/operations.md); its messages stay."""
    changed = {k: cfg[k] for k in UPGRADED_SETTINGS if k in cfg and existing.get(k) != cfg[k]}
    if not changed:
        return existing
    try:
        updated = await api(nc, f"STREAM.UPDATE.{name}", {**existing, **changed})
    except BusError as e:  # e.g. an operator identity without STREAM.UPDATE
        updated = {"error": {"description": str(e)}}
    if "error" in updated:
        # Not fatal: the notary's own copies stay small; the operator must act.
        log.error(
            "stream %s lacks this version's limits (%s) and could not be updated (%s): "
            "see docs/operations.md",
            name,
            ", ".join(sorted(changed)),
            updated["error"].get("description"),
        )
        return existing
    log.warning("stream %s updated: %s", name, ", ".join(sorted(changed)))
    config: dict[str, Any] = updated["config"]
    return config


#: The notary's durable consumer on INTAKE.
NOTARY_CONSUMER = "notary"


async def ensure_notary_consumer(nc: NATS, *, ack_wait: float = 10.0) -> None:
    """Create the notary's durable INTAKE consumer if missing (the operator's job at setup:
    the notary itself may only bind to it, DESIGN §7)."""
    info = await api(nc, f"CONSUMER.INFO.{INTAKE}.{NOTARY_CONSUMER}")
    if "error" not in info:
        return
    if info["error"].get("err_code") != 10014:  # consumer not found
        raise BusError(f"consumer {NOTARY_CONSUMER}: {info['error'].get('description')}")
    config = {
        "durable_name": NOTARY_CONSUMER,
        "name": NOTARY_CONSUMER,
        "filter_subject": "intake.>",
        "ack_policy": "explicit",
        "deliver_policy": "all",
        "ack_wait": int(ack_wait * _NS),
        "max_ack_pending": 20_000,
        "max_deliver": -1,
    }
    created = await api(
        nc,
        f"CONSUMER.DURABLE.CREATE.{INTAKE}.{NOTARY_CONSUMER}",
        {"stream_name": INTAKE, "config": config},
    )
    if "error" in created:
        raise BusError(f"cannot create consumer: {created['error'].get('description')}")


async def last_sequence(nc: NATS, stream: str) -> int:
    info = await api(nc, f"STREAM.INFO.{stream}")
    if "error" in info:
        raise BusError(f"stream {stream}: {info['error'].get('description')}")
    seq: int = info["state"]["last_seq"]
    return seq


@dataclass(frozen=True)
class StoredMessage:
    sequence: int
    subject: str
    data: bytes
    headers: dict[str, str]


async def get_message(nc: NATS, stream: str, sequence: int) -> StoredMessage | None:
    """Direct get by sequence (LEDGER has ``allow_direct``); None when absent."""
    try:
        msg = await nc.request(
            f"$JS.API.DIRECT.GET.{stream}", json.dumps({"seq": sequence}).encode(), timeout=5
        )
    except Exception as e:
        raise BusError(f"direct get {stream} #{sequence}: {e or type(e).__name__}") from None
    headers = dict(msg.headers or {})
    if headers.get("Status") == "404":
        return None
    if "Status" in headers:
        raise BusError(f"direct get {stream} #{sequence}: {headers.get('Description', headers)}")
    return StoredMessage(int(headers["Nats-Sequence"]), headers["Nats-Subject"], msg.data, headers)


async def read_stream(
    nc: NATS,
    stream: str,
    start: int,
    end: int,
    *,
    subject: str | None = None,
    batch: int = 500,
    timeout: float = 10.0,
) -> AsyncGenerator[StoredMessage]:
    """Yield the messages with sequences ``start..end`` in order.

    Reads in request/response batches (batched direct get), so a slow reader
    never makes the server outrun it: nothing is dropped. Without ``subject``
    the sequences must be contiguous (LEDGER never deletes), and a gap raises
    :class:`BusError` instead of passing unnoticed; with ``subject`` only that
    subject's messages come back.
    """
    if end < start:
        return
    inbox = nc.new_inbox()
    queue: asyncio.Queue[Msg] = asyncio.Queue()

    async def deliver(msg: Msg) -> None:
        queue.put_nowait(msg)

    sub = await nc.subscribe(inbox, cb=deliver)
    try:
        seq = start
        while seq <= end:
            body: dict[str, Any] = {"seq": seq, "batch": min(batch, end - seq + 1)}
            if subject is not None:
                body["next_by_subj"] = subject
            await nc.publish(f"$JS.API.DIRECT.GET.{stream}", json.dumps(body).encode(), reply=inbox)
            got = 0
            while True:
                try:
                    # Messages already delivered are taken without a timer each.
                    msg = (
                        queue.get_nowait()
                        if queue.qsize()
                        else await asyncio.wait_for(queue.get(), timeout)
                    )
                except TimeoutError:
                    raise BusError(
                        f"reading {stream} from #{seq}: no answer in {timeout}s"
                    ) from None
                headers = dict(msg.headers or {})
                status = headers.get("Status")
                if status in ("204", "404"):  # end of this batch / nothing (more) there
                    break
                if status is not None:
                    raise BusError(f"reading {stream}: {headers.get('Description', status)}")
                stored = StoredMessage(
                    int(headers["Nats-Sequence"]), headers["Nats-Subject"], msg.data, headers
                )
                if stored.sequence > end:
                    continue
                if subject is None and stored.sequence != seq:
                    raise BusError(f"{stream} skips from #{seq} to #{stored.sequence}")
                got += 1
                seq = stored.sequence + 1
                yield stored
            if got == 0:
                if subject is None:
                    raise BusError(f"{stream} has no message #{seq} (expected up to #{end})")
                return
    finally:
        await sub.unsubscribe()


async def read_subject(nc: NATS, stream: str, subject: str, up_to: int) -> list[StoredMessage]:
    """Every message of ``subject`` with sequence <= ``up_to``, in order."""
    return [m async for m in read_stream(nc, stream, 1, up_to, subject=subject)]


async def last_message(nc: NATS, stream: str) -> StoredMessage | None:
    seq = await last_sequence(nc, stream)
    return await get_message(nc, stream, seq) if seq else None


async def publish_atomic(
    nc: NATS,
    messages: Sequence[tuple[str, bytes, dict[str, str]]],
    expected_last_sequence: int,
    *,
    timeout: float = 10.0,
) -> int:
    """Append ``messages`` atomically, fenced on the stream's last sequence: one message
    as a plain publish, more as one ADR-50 atomic batch.

    The whole batch is stored or none of it. Returns the sequence of the last
    message. Raises :class:`Fenced` when another writer appended first.
    """
    if not messages:
        raise ValueError("empty batch")
    if len(messages) > MAX_BATCH:
        raise ValueError(f"an atomic batch holds at most {MAX_BATCH} messages")
    if len(messages) == 1:
        # One message is atomic by itself: a plain fenced publish. An ADR-50 batch
        # stages its messages on disk before the commit (measured here: 16-22 ms
        # for a batch of one against 1-3 ms for this), the whole latency of a
        # lightly loaded notary.
        subject, data, headers = messages[0]
        hdrs = dict(headers)
        hdrs["Nats-Expected-Last-Sequence"] = str(expected_last_sequence)
        reply = await _request(nc, subject, data, hdrs, timeout)
        return _batch_ack(reply, expected_last_sequence, 1)
    batch_id = uuid.uuid4().hex
    last = len(messages)
    for n, (subject, data, headers) in enumerate(messages, start=1):
        hdrs = dict(headers)
        hdrs["Nats-Batch-Id"] = batch_id
        hdrs["Nats-Batch-Sequence"] = str(n)
        if n == 1:
            hdrs["Nats-Expected-Last-Sequence"] = str(expected_last_sequence)
        if n == last:
            hdrs["Nats-Batch-Commit"] = "1"
            reply = await _request(nc, subject, data, hdrs, timeout)
            return _batch_ack(reply, expected_last_sequence, last)
        if n == 1 or n % 250 == 0:
            # Acked (empty reply) requests give flow control and early errors.
            reply = await _request(nc, subject, data, hdrs, timeout)
            if reply.data:
                _batch_ack(reply, expected_last_sequence, last)
        else:
            await nc.publish(subject, data, headers=hdrs)
    raise AssertionError("unreachable")


async def _request(
    nc: NATS, subject: str, data: bytes, headers: dict[str, str], timeout: float
) -> Msg:
    try:
        return await nc.request(subject, data, headers=headers, timeout=timeout)
    except Exception as e:
        raise BusError(f"publishing to {subject}: {e or type(e).__name__}") from None


def _batch_ack(reply: Msg, expected_last_sequence: int, count: int) -> int:
    try:
        ack = json.loads(reply.data)
    except ValueError:
        raise BatchRejected(f"unexpected reply to batch: {reply.data[:200]!r}") from None
    err = ack.get("error")
    if err:
        if err.get("err_code") == 10071:
            raise Fenced(err.get("description", "wrong last sequence"))
        raise BatchRejected(err.get("description", str(err)))
    seq: int = ack["seq"]
    if seq != expected_last_sequence + count:
        raise BatchRejected(f"batch landed at {seq}, expected {expected_last_sequence + count}")
    return seq


async def wait_bounded(aw: asyncio.Future[Any], timeout: float, what: str) -> Any:
    try:
        return await asyncio.wait_for(aw, timeout)
    except TimeoutError:
        raise BusError(f"{what}: no answer within {timeout}s") from None


class Verdict(msgspec.Struct, omit_defaults=True, kw_only=True):
    """What the notary answers a submitter: a receipt, or a reason code."""

    status: Literal["accepted", "rejected", "unknown"]
    event_id: str | None = None
    index: int | None = None
    receipt: str | None = None
    #: C2SP tlog-proof (index, inclusion hashes, signed checkpoint), once a
    #: checkpoint covers the entry; only in answers to lookups.
    proof: str | None = None
    #: SHA-256 (hex) of the envelope the receipt is for: a client that sent
    #: other bytes under the same event id learns that they were not integrated.
    envelope_sha256: str | None = None
    code: str | None = None
    detail: str | None = None
    #: The signed rejection note (``ailedger/rejection/v1``) of a final
    #: rejection; a "rejected" verdict without it is not a verdict.
    rejection: str | None = None

    def encode(self) -> bytes:
        return msgspec.json.encode(self)

    @staticmethod
    def decode(data: bytes) -> Verdict:
        return msgspec.json.decode(data, type=Verdict)
