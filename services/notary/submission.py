"""One INTAKE submission on its way through the sequencer, and what is checked of
it before any state is consulted: size, JSON, DSSE structure, schema, the intake
subject, clock skew; then its signature, verified once, in parallel threads."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from nats.aio.msg import Msg

from ledger.bus.streams import HDR_REPLY, Verdict
from ledger.formats.dsse import EnvelopeError, ParsedEnvelope, parse_envelope
from ledger.formats.keys import fingerprint
from ledger.formats.receipt import Receipt
from ledger.formats.timeutil import format_time
from ledger.formats.trust import DEFAULT_FRESHNESS_SECONDS
from ledger.law import events as ev
from ledger.law import rejections as errors
from ledger.state.application import Admitted, AlreadyIntegrated

__all__ = ["MAX_CLOCK_SKEW", "MAX_ENVELOPE", "SignatureCache", "Submission", "precheck"]

log = logging.getLogger("ailedger.notary")

MAX_ENVELOPE = 64 * 1024
MAX_CLOCK_SKEW = timedelta(minutes=5)
#: The freshness window when the trust policy sets none (DESIGN §6).
DEFAULT_FRESHNESS = timedelta(seconds=DEFAULT_FRESHNESS_SECONDS)


@dataclass
class Submission:
    """One INTAKE message on its way through the notary."""

    msg: Msg
    env: ParsedEnvelope | None = None
    event: ev.AnyEvent | None = None
    #: A rejection found before any state was consulted; final.
    early: errors.Rejection | None = None
    #: What the precheck found (``early`` may be lifted by admission: a stale
    #: signature on an event already in the ledger is answered, not refused).
    prechecked: errors.Rejection | None = None
    outcome: Admitted | AlreadyIntegrated | errors.Rejection | None = None
    receipt: Receipt | None = None
    #: A final rejection of the same event id remembered from before: answered again.
    remembered: Verdict | None = None
    #: The verdict of this submission's rejection (signed once, kept in REJECTED).
    rejection_verdict: Verdict | None = None

    @property
    def reply_to(self) -> str | None:
        return (self.msg.headers or {}).get(HDR_REPLY)

    @property
    def intake_sequence(self) -> int:
        return int(self.msg.metadata.sequence.stream)


@dataclass
class SignatureCache:
    """Signatures verified once, in parallel, before the sequential admission pass."""

    known_keys: dict[str, bytes] = field(default_factory=dict)

    def checker(
        self, results: dict[tuple[int, bytes], bool]
    ) -> Callable[[ParsedEnvelope, bytes], bool]:
        """The signature check of one batch: ``results`` verified ahead, any other
        (envelope, key) pair verified now (and its key remembered for later batches)."""

        def check(env: ParsedEnvelope, public_key: bytes) -> bool:
            found = results.get((id(env), public_key))
            if found is None:
                found = env.verify(public_key)
                self.known_keys[fingerprint(public_key)] = public_key
            return found

        return check

    def jobs(self, subs: list[Submission]) -> list[tuple[ParsedEnvelope, bytes]]:
        """The signatures to verify ahead: each envelope against its hinted key, if known."""
        jobs: list[tuple[ParsedEnvelope, bytes]] = []
        for s in subs:
            assert s.env is not None
            public = self.known_keys.get(s.env.keyid_fingerprint)
            if public is not None:
                jobs.append((s.env, public))
        return jobs


def verify_chunk(jobs: list[tuple[ParsedEnvelope, bytes]]) -> dict[tuple[int, bytes], bool]:
    # cryptography releases the GIL while verifying, so chunks run in parallel.
    return {(id(env), public): env.verify(public) for env, public in jobs}


def precheck(s: Submission, now: datetime, freshness: timedelta = DEFAULT_FRESHNESS) -> None:
    """Everything that needs no state. Sets ``outcome`` to a rejection, or leaves it None.
    ``freshness`` is the trust policy's window: ``signed_at`` older than it is stale."""
    data = s.msg.data
    try:
        if len(data) > MAX_ENVELOPE:
            raise errors.Oversize(f"envelope is {len(data)} bytes, the limit is {MAX_ENVELOPE}")
        try:
            s.env = parse_envelope(data)
        except EnvelopeError as e:
            cls = errors.MalformedJson if e.json_error else errors.MalformedEnvelope
            raise cls(str(e)) from None
        try:
            s.event = ev.decode_event(s.env.payload)
        except ev.SchemaError as e:
            if e.syntax:
                raise errors.MalformedJson(str(e)) from None
            raise errors.SchemaViolation(str(e)) from None
        expected = f"intake.{s.event.actor}.{s.event.type_name}"
        if s.msg.subject != expected:
            raise errors.IntakeSubjectMismatch(
                f"published on {s.msg.subject}, the payload says {expected}"
            )
        claimed = [("signed_at", s.event.signed_at)]
        if isinstance(s.event, ev.IncidentReported):
            # facts about the past cannot be dated in the future
            claimed += [("occurred_at", s.event.occurred_at), ("aware_at", s.event.aware_at)]
        for name, value in claimed:
            if value > now + MAX_CLOCK_SKEW:
                raise errors.ClockSkew(
                    f"{name} {format_time(value)} is more than 5 minutes ahead of the "
                    f"notary clock {format_time(now)}"
                )
        if s.event.signed_at < now - freshness:
            raise errors.Stale(
                f"signed_at {format_time(s.event.signed_at)} is older than the freshness window "
                f"({freshness}) before the notary clock {format_time(now)}: sign it again"
            )
    except errors.Rejection as r:
        s.early = s.outcome = r
    except Exception as e:  # a bug: still an answer for this message, not a stalled batch
        log.exception("precheck of INTAKE #%d failed", s.intake_sequence)
        s.early = s.outcome = errors.InternalError(f"{type(e).__name__}: {e}")
