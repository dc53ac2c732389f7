"""Alarms: conditions an operator must look at, each under a stable code.

A process keeps one :class:`Alarms` registry. :meth:`Alarms.record` logs the
alarm at ERROR with its code (``ALARM <code>: <detail>``) and counts it; the
notary serves its registry, with its health, on :data:`HEALTH_SUBJECT`, and
``ailedger doctor`` prints them (exit 1 while any alarm is active).

Codes in use (stable: monitors match on them):

- ``stream_settings_changed``: LEDGER or CHECKPOINTS no longer has the settings
  the contract requires (DESIGN §4); checkpoint signing stops until the notary
  is restarted on safe streams.
- ``nats_disconnected``: the connection to NATS is lost (cleared on reconnect).
  An oversize or unreadable submission is no alarm: it is the submitter's
  problem, answered with a reason code and kept in REJECTED.
- ``foreign_message``: a message in LEDGER or CHECKPOINTS that the notary did
  not write (unsealed, unsigned or malformed); skipped, never integrated.
- ``witness_quorum``: a checkpoint was signed but not published because fewer
  witnesses than the trust policy's quorum cosigned it (down, unreachable, or
  refusing it as inconsistent); retried at the checkpoint interval, cleared
  when a checkpoint is published.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from ledger.bus.streams import BusError

__all__ = ["HEALTH_SUBJECT", "Alarm", "Alarms", "request_health"]

log = logging.getLogger("ailedger.alarm")

#: Where the notary answers health requests (its streams, last sequence,
#: checkpoint signing and alarms) as one JSON object.
HEALTH_SUBJECT = "ailedger.notary.health"

STREAM_SETTINGS_CHANGED = "stream_settings_changed"
NATS_DISCONNECTED = "nats_disconnected"
FOREIGN_MESSAGE = "foreign_message"
#: A checkpoint was signed but not published: the witnesses' quorum did not cosign it.
WITNESS_QUORUM = "witness_quorum"

#: Details longer than this are cut (a detail may quote untrusted input).
MAX_DETAIL = 500


@dataclass(frozen=True)
class Alarm:
    """One alarm code: how often it was recorded, when, and the last detail."""

    code: str
    count: int
    first_at: float
    last_at: float
    detail: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(doc: dict[str, Any]) -> Alarm:
        return Alarm(
            code=str(doc["code"]),
            count=int(doc["count"]),
            first_at=float(doc["first_at"]),
            last_at=float(doc["last_at"]),
            detail=str(doc["detail"]),
        )


class Alarms:
    """A thread-safe registry of alarms by code (counts, times, last detail)."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or log
        self._lock = threading.Lock()
        self._alarms: dict[str, Alarm] = {}

    def record(self, code: str, detail: str) -> None:
        """Raise (or raise again) alarm ``code``: logged at ERROR, counted, detail kept."""
        detail = " ".join(str(detail).split())[:MAX_DETAIL]
        now = time.time()
        with self._lock:
            old = self._alarms.get(code)
            self._alarms[code] = Alarm(
                code=code,
                count=(old.count if old else 0) + 1,
                first_at=old.first_at if old else now,
                last_at=now,
                detail=detail,
            )
        self._log.error("ALARM %s: %s", code, detail)

    def clear(self, code: str) -> bool:
        """The condition is over: forget ``code``. True if it was active."""
        with self._lock:
            gone = self._alarms.pop(code, None)
        if gone is not None:
            self._log.warning("alarm %s cleared (raised %d times)", code, gone.count)
        return gone is not None

    def is_active(self, code: str) -> bool:
        with self._lock:
            return code in self._alarms

    def active(self) -> list[Alarm]:
        """The active alarms, oldest first."""
        with self._lock:
            return sorted(self._alarms.values(), key=lambda a: (a.first_at, a.code))

    def to_json(self) -> list[dict[str, Any]]:
        return [a.to_json() for a in self.active()]


def encode_health(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True).encode()


async def request_health(nc: Any, timeout: float = 5.0) -> dict[str, Any]:
    """Ask the notary for its health object (``nc`` is a nats-py client)."""
    try:
        msg = await nc.request(HEALTH_SUBJECT, b"", timeout=timeout)
    except Exception as e:
        raise BusError(
            f"no notary answered on {HEALTH_SUBJECT} within {timeout}s "
            f"({str(e) or type(e).__name__}): is `ailedger up` running?"
        ) from None
    try:
        doc = json.loads(msg.data)
    except ValueError:
        raise BusError(f"unreadable health answer: {msg.data[:200]!r}") from None
    if not isinstance(doc, dict):
        raise BusError(f"unreadable health answer: {msg.data[:200]!r}")
    return doc
