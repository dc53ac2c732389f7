"""The client SDK: sign events with an actor's key, submit them, get receipts.

::

    async with await LedgerClient.connect(url, key, trust=trust, creds="bank.creds") as client:
        receipt = await client.submit(client.event(ev.SystemRegistered, subject=..., ...))

``creds`` is the actor's bus credentials file (``ailedger creds issue ACTOR``):
the server lets it publish only to its own intake subjects (docs/authorization.md).

A submission is published to ``intake.<actor>.<type>`` with ``Nats-Msg-Id`` =
event id, so retries are safe: INTAKE drops duplicates within its window and
the notary answers a resubmitted envelope with the receipt it already gave.
The receipt's signature is checked against the trust policy's log keys. A
rejection raises :class:`SubmissionRejected` carrying the notary's reason code.
:class:`SyncLedgerClient` wraps it for scripts.

An envelope signed elsewhere (``ailedger sign``, an HSM, another service) is
sent without holding the actor's key: connect with no key and call
:meth:`LedgerClient.submit_signed`; the receipt is still checked against the
trust policy::

    async with await LedgerClient.connect(url, trust=trust) as client:
        receipt = await client.submit_signed(envelope_bytes)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Coroutine, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from ledger.bus.sealed import trusted_seals
from ledger.bus.streams import (
    HDR_MSG_ID,
    HDR_REPLY,
    LOOKUP_SUBJECT,
    Verdict,
    connect,
    intake_subject,
)
from ledger.formats.checkpoint import TlogProof, parse_checkpoint, parse_tlog_proof
from ledger.formats.dsse import EnvelopeError, parse_envelope, sign_envelope
from ledger.formats.errors import CHECK_FAILED, UNAVAILABLE, LedgerError
from ledger.formats.keys import ActorKey
from ledger.formats.merkle import verify_inclusion
from ledger.formats.note import Verifier, Verifiers, open_note
from ledger.formats.receipt import Receipt, ReceiptError, open_receipt
from ledger.formats.rejection import RejectionNoteError, open_rejection
from ledger.formats.seal import SealCache
from ledger.formats.timeutil import Clock, SystemClock
from ledger.formats.trust import TrustedKey, TrustPolicy
from ledger.law import events as ev

__all__ = [
    "LedgerClient",
    "SubmissionError",
    "SubmissionRejected",
    "SubmissionTimeout",
    "SyncLedgerClient",
    "UnverifiedVerdict",
    "envelope_head",
    "sign_event",
]

E = TypeVar("E", bound=ev.Event)
T = TypeVar("T")


def sign_event(event: ev.Event, key: ActorKey) -> bytes:
    """Encode, validate locally against the catalogue, and sign: the envelope bytes."""
    payload = ev.encode_event(event)
    ev.decode_event(payload)  # fail here, not at the notary, on a bad event
    if event.actor != key.actor:
        raise ValueError(f"event actor {event.actor!r} is not the key's actor {key.actor!r}")
    return sign_envelope(payload, key)


def envelope_head(envelope: bytes) -> ev.Event:
    """The event inside signed envelope bytes, checked locally (DSSE structure, payload
    type, the catalogue's schema); raises EnvelopeError or ev.SchemaError. The
    signature itself is the notary's to judge."""
    return ev.decode_event(parse_envelope(envelope).payload)


def _payload_event_id(envelope: bytes) -> str | None:
    """The event id in the envelope's payload, if it can be read."""
    try:
        return envelope_head(envelope).event_id
    except (EnvelopeError, ev.SchemaError):
        return None


class SubmissionError(LedgerError):
    """A submission did not get a receipt."""

    code = "submission_failed"
    exit_status = CHECK_FAILED

    def __init__(self, message: str, event_id: str) -> None:
        super().__init__(message)
        self.event_id = event_id


class SubmissionRejected(SubmissionError):
    """The notary refused the event; ``code`` is its stable reason code."""

    code = "submission_rejected"
    exit_status = CHECK_FAILED

    def __init__(self, code: str, detail: str, event_id: str) -> None:
        super().__init__(f"{code}: {detail}", event_id)
        # Each instance carries the notary's reason code (a Rejection's code).
        self.code = code  # type: ignore[misc]
        self.detail = detail


class UnverifiedVerdict(SubmissionError):
    """An answer that is not the notary's verdict: a rejection without a valid
    signature by a log key, or for another event id or other bytes; a receipt
    that does not prove the exact entry under a seal. Never reported as a verdict."""

    code = "verdict_unverified"
    exit_status = CHECK_FAILED


class SubmissionTimeout(SubmissionError):
    """No verdict in time. The event may still be integrated: resubmit the same envelope."""

    code = "submission_timeout"
    exit_status = UNAVAILABLE


class LedgerClient:
    """Signs and submits one actor's events; without a key, submits signed envelopes."""

    def __init__(
        self,
        nc: NATS,
        key: ActorKey | None = None,
        *,
        trust: TrustPolicy,
        clock: Clock | None = None,
        verdict_wait: float = 5.0,
    ) -> None:
        self.nc = nc
        self.key = key
        self.trust = trust
        self.clock = clock or SystemClock()
        self.verdict_wait = verdict_wait
        self._js = nc.jetstream(timeout=5)
        self._inbox = f"{nc.new_inbox()}"
        self._waiting: dict[str, asyncio.Future[Verdict]] = {}
        self._sub: Any = None
        self._verifiers = Verifiers(*(Verifier.from_vkey(k) for k in trust.log_vkeys()))
        #: Each batch's seal is verified once, whatever the number of its receipts,
        #: and once for all the clients of this process that trust the same log keys.
        self.seals = _shared_seals(trust)

    @classmethod
    async def connect(
        cls,
        url: str,
        key: ActorKey | None = None,
        *,
        trust: TrustPolicy,
        creds: Path | str | None = None,
        identity: str | None = None,
        **kwargs: Any,
    ) -> LedgerClient:
        """Connect as ``key``'s actor, or with no key to submit pre-signed envelopes.

        ``creds`` is the actor's bus credentials file (``ailedger creds issue``,
        an nkey seed, never the signing key); ``identity`` names its bus
        identity, which sets the inbox prefix its replies come back under
        (default: the key's actor, else the file's name up to the first dot).
        """
        options: dict[str, Any] = {}
        if creds is not None:
            name = identity or (key.actor if key else Path(creds).name.split(".")[0])
            options = {"nkeys_seed": str(creds), "inbox_prefix": f"_INBOX.{name}"}
        nc = await connect(url, name=f"ailedger-client-{key.actor if key else 'signed'}", **options)
        return cls(nc, key, trust=trust, **kwargs)

    def _key(self) -> ActorKey:
        if self.key is None:
            raise SubmissionError(
                "this client holds no key: it can only submit signed envelopes (submit_signed)",
                "",
            )
        return self.key

    async def close(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        await self.nc.drain()

    async def __aenter__(self) -> LedgerClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def event(self, cls: type[E], **fields: Any) -> E:
        """Build an event of ``cls`` by this actor, with a new id, signed now."""
        fields.setdefault("v", 1)
        fields.setdefault("event_id", ev.new_event_id())
        fields.setdefault("actor", self._key().actor)
        fields.setdefault("signed_at", self.clock.now())
        return cls(**fields)

    async def submit(self, event: ev.Event, *, timeout: float = 30.0) -> Receipt:
        envelope = sign_event(event, self._key())
        return await self.submit_envelope(
            envelope, event.event_id, event.type_name, timeout=timeout
        )

    async def submit_many(
        self, events: Iterable[ev.Event], *, concurrency: int = 256, timeout: float = 60.0
    ) -> list[Receipt | SubmissionError]:
        """Submit many events concurrently; each result is a receipt or the error it met."""
        gate = asyncio.Semaphore(concurrency)

        async def one(e: ev.Event) -> Receipt | SubmissionError:
            async with gate:
                try:
                    return await self.submit(e, timeout=timeout)
                except SubmissionError as err:
                    return err

        return list(await asyncio.gather(*(one(e) for e in events)))

    async def submit_signed(self, envelope: bytes, *, timeout: float = 30.0) -> Receipt:
        """Submit an envelope signed elsewhere, exactly as given: its event id, type and
        actor are read from the payload (checked locally first, :func:`envelope_head`)."""
        try:
            head = envelope_head(envelope)
        except (EnvelopeError, ev.SchemaError) as e:
            raise SubmissionError(f"not a submittable envelope: {e}", "") from None
        return await self.submit_envelope(
            envelope, head.event_id, head.type_name, actor=head.actor, timeout=timeout
        )

    async def submit_envelope(
        self,
        envelope: bytes,
        event_id: str,
        event_type: str,
        *,
        actor: str | None = None,
        timeout: float = 30.0,
    ) -> Receipt:
        """Submit signed bytes on ``intake.<actor>.<type>`` (``actor``: by default this
        client's); retry with the same message id until a verdict arrives."""
        if actor is None:
            actor = self._key().actor
        await self._ensure_inbox()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Verdict] = loop.create_future()
        self._waiting[event_id] = fut
        deadline = time.monotonic() + timeout
        subject = intake_subject(actor, event_type)
        headers = {HDR_MSG_ID: event_id, HDR_REPLY: f"{self._inbox}.{event_id}"}
        refused: SubmissionError | None = None
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    if refused is not None:
                        raise refused
                    raise SubmissionTimeout(
                        f"no verdict for event {event_id} within {timeout}s; it may still be "
                        "integrated: resubmit the same envelope to get its receipt",
                        event_id,
                    )
                try:
                    ack = await self._js.publish(
                        subject, envelope, headers=headers, timeout=min(5.0, remaining)
                    )
                except Exception:  # server busy, reconnecting: retry with the same id
                    await asyncio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
                    continue
                if ack.duplicate and not fut.done():
                    # An earlier copy is queued or already decided: ask first.
                    looked_up = await self._lookup(event_id)
                    if looked_up is not None and looked_up.status != "unknown":
                        try:
                            return self._conclude(looked_up, event_id, envelope)
                        except UnverifiedVerdict as e:
                            refused = e
                try:
                    verdict = await asyncio.wait_for(
                        asyncio.shield(fut),
                        min(self.verdict_wait, max(0.01, deadline - time.monotonic())),
                    )
                except TimeoutError:
                    looked_up = await self._lookup(event_id)
                    if looked_up is None or looked_up.status == "unknown":
                        continue
                    verdict = looked_up
                except SubmissionError as e:  # unreadable answer in our inbox
                    refused = e
                    fut = self._rewait(event_id)
                    continue
                try:
                    return self._conclude(verdict, event_id, envelope)
                except UnverifiedVerdict as e:
                    # Anyone who can write to our inbox could have answered: wait
                    # for the notary's own verdict (or ask it) until the deadline.
                    refused = e
                    fut = self._rewait(event_id)
                    await asyncio.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        finally:
            self._waiting.pop(event_id, None)

    async def inclusion_proof(self, receipt: Receipt) -> TlogProof:
        """The entry's C2SP tlog-proof, once a signed checkpoint covers it, verified:
        the checkpoint is signed by a log key of the trust policy and the
        receipt's leaf is in its tree at the receipt's index."""
        verdict = await self._lookup(receipt.event_id)
        if verdict is None or verdict.proof is None:
            raise SubmissionError(
                f"entry {receipt.index} is not covered by a checkpoint yet", receipt.event_id
            )
        try:
            proof = parse_tlog_proof(verdict.proof.encode())
            checkpoint = parse_checkpoint(open_note(proof.checkpoint, self._verifiers).text)
            if proof.index != receipt.index:
                raise ValueError(f"proof is for entry {proof.index}")
            verify_inclusion(
                receipt.leaf_hash, receipt.index, checkpoint.size, proof.proof, checkpoint.root_hash
            )
        except ValueError as e:  # NoteError, ProofError, malformed parts
            raise SubmissionError(
                f"inclusion proof does not verify: {e}", receipt.event_id
            ) from None
        return proof

    def _conclude(self, verdict: Verdict, event_id: str, envelope: bytes) -> Receipt:
        if verdict.status == "rejected":
            raise self._rejection(verdict, event_id, envelope)
        if verdict.status != "accepted" or verdict.receipt is None:
            raise SubmissionError(f"unexpected verdict {verdict.status!r}", event_id)
        if verdict.envelope_sha256 not in (None, hashlib.sha256(envelope).hexdigest()):
            raise SubmissionRejected(
                "duplicate_event_id",
                f"event id {event_id} is already entry {verdict.index} with other bytes",
                event_id,
            )
        note = verdict.receipt.encode()
        try:
            # Rebuilds the entry from the receipt's lines and our own bytes, folds
            # the proof up to the seal's root, checks the seal (once per seal).
            with self.seals.lock:
                receipt = open_receipt(note, envelope, self.seals)
        except ReceiptError as e:
            raise UnverifiedVerdict(
                f"receipt for {event_id} does not verify: {e}", event_id
            ) from None
        if receipt.event_id != event_id:
            raise UnverifiedVerdict(
                f"receipt names event {receipt.event_id}, not {event_id}", event_id
            )
        return receipt

    def _rejection(self, verdict: Verdict, event_id: str, envelope: bytes) -> SubmissionError:
        """A rejection is a verdict only when signed by a log key, for this event id
        and these exact bytes; anything else is an :class:`UnverifiedVerdict`."""
        if verdict.rejection is None:
            return UnverifiedVerdict(
                f"unsigned rejection {verdict.code!r} for {event_id}: not a verdict "
                "(transient, or not from the notary); resubmit the same envelope",
                event_id,
            )
        try:
            signed = open_rejection(verdict.rejection.encode(), self._verifiers)
        except RejectionNoteError as e:
            return UnverifiedVerdict(f"rejection for {event_id} does not verify: {e}", event_id)
        if signed.event_id not in (event_id, _payload_event_id(envelope)):
            return UnverifiedVerdict(
                f"signed rejection is for event {signed.event_id}, not {event_id}", event_id
            )
        if not signed.is_for(envelope):
            return UnverifiedVerdict(
                f"signed rejection of event {event_id} is for other bytes under that id",
                event_id,
            )
        return SubmissionRejected(signed.code, verdict.detail or "", event_id)

    def _rewait(self, event_id: str) -> asyncio.Future[Verdict]:
        fut: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        self._waiting[event_id] = fut
        return fut

    async def _ensure_inbox(self) -> None:
        if self._sub is None:
            self._sub = await self.nc.subscribe(f"{self._inbox}.*", cb=self._on_verdict)

    async def _on_verdict(self, msg: Msg) -> None:
        event_id = msg.subject.rsplit(".", 1)[-1]
        fut = self._waiting.get(event_id)
        if fut is None or fut.done():
            return
        try:
            fut.set_result(Verdict.decode(msg.data))
        except Exception as e:  # a garbled verdict is reported, not swallowed
            fut.set_exception(SubmissionError(f"unreadable verdict: {e}", event_id))

    async def _lookup(self, event_id: str) -> Verdict | None:
        try:
            msg = await self.nc.request(LOOKUP_SUBJECT, event_id.encode(), timeout=2)
            return Verdict.decode(msg.data)
        except Exception:
            return None


class _SharedSeals(SealCache):
    """A seal cache shared by the clients of one process (threads included: each
    use under ``lock``)."""

    def __init__(self, trust: TrustPolicy) -> None:
        cache = trusted_seals(trust)
        super().__init__(cache.verifiers, valid_at=cache.valid_at)
        self.lock = threading.Lock()


#: The seal caches of this process by the log keys trusted (with their validity
#: windows: what decides whether a seal is valid), the newest last.
_SEAL_CACHES: OrderedDict[tuple[TrustedKey, ...], _SharedSeals] = OrderedDict()
_SEAL_CACHES_LOCK = threading.Lock()


def _shared_seals(trust: TrustPolicy) -> _SharedSeals:
    """The seal cache of every client of this process that trusts ``trust``'s log keys."""
    key = tuple(trust.log_keys)
    with _SEAL_CACHES_LOCK:
        cache = _SEAL_CACHES.get(key)
        if cache is None:
            cache = _SEAL_CACHES[key] = _SharedSeals(trust)
            while len(_SEAL_CACHES) > 8:
                _SEAL_CACHES.popitem(last=False)
        else:
            _SEAL_CACHES.move_to_end(key)
        return cache


class SyncLedgerClient:
    """A blocking wrapper for scripts: runs a :class:`LedgerClient` on its own loop thread."""

    def __init__(
        self,
        url: str,
        key: ActorKey | None = None,
        *,
        trust: TrustPolicy,
        creds: Path | str | None = None,
        identity: str | None = None,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._client = self._run(
            LedgerClient.connect(url, key, trust=trust, creds=creds, identity=identity)
        )

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def event(self, cls: type[E], **fields: Any) -> E:
        return self._client.event(cls, **fields)

    def submit(self, event: ev.Event, *, timeout: float = 30.0) -> Receipt:
        return self._run(self._client.submit(event, timeout=timeout), timeout + 5)

    def submit_signed(self, envelope: bytes, *, timeout: float = 30.0) -> Receipt:
        return self._run(self._client.submit_signed(envelope, timeout=timeout), timeout + 5)

    def close(self) -> None:
        try:
            self._run(self._client.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    def __enter__(self) -> SyncLedgerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
