"""The HTTP gateway's side of a submission: forward signed bytes over NATS, return the
notary's verdict (DESIGN §7: "HTTP gateway: publishes ``intake.*.>`` for actors it
authenticated; it forwards their signed envelopes; it cannot sign for them").

A posted envelope goes exactly the way :meth:`LedgerClient.submit_signed` sends
one: to ``intake.<actor>.<type>`` with ``Nats-Msg-Id`` = its event id and the
``Ailedger-Reply`` inbox of the ``_gateway`` bus identity; a resubmission of the
same bytes is a duplicate on INTAKE and is answered from the notary's lookup, so
the same envelope always gets the same receipt, and an event id once rejected
deterministically always gets the same signed rejection. The verdict is checked
by the SDK's own code before it is passed on (a receipt proves the exact entry
under a seal signed by a log key; a rejection is signed by a log key, for this
event id and these bytes), so the gateway never relays what the notary did not
say. The HTTP client should verify it again: it need not trust the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from ledger.bus.auth import Identity
from ledger.bus.client import (
    LedgerClient,
    SubmissionError,
    SubmissionRejected,
    envelope_head,
)
from ledger.bus.streams import Verdict
from ledger.formats.errors import LedgerError
from ledger.formats.receipt import Receipt
from ledger.formats.trust import TrustPolicy
from ledger.law import events as ev
from services.web.problems import GatewayUnavailable

__all__ = ["Gateway", "Rejected"]


class _Client(LedgerClient):
    """The SDK client, keeping the signed rejection note it checked (the SDK raises
    :class:`SubmissionRejected` with the reason code only)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.signed_rejections: dict[str, str] = {}

    def _rejection(self, verdict: Verdict, event_id: str, envelope: bytes) -> SubmissionError:
        error = super()._rejection(verdict, event_id, envelope)
        if isinstance(error, SubmissionRejected) and verdict.rejection is not None:
            self.signed_rejections[event_id] = verdict.rejection
        return error


@dataclass(frozen=True)
class Rejected:
    """A final rejection: the reason code, the detail and the signed note."""

    code: str
    detail: str
    event_id: str
    rejection: str | None


class Gateway:
    """Forwards signed envelopes as the ``_gateway`` bus identity."""

    def __init__(self, client: _Client, timeout: float) -> None:
        self.client = client
        self.timeout = timeout
        self._busy: dict[str, asyncio.Lock] = {}

    @classmethod
    async def connect(
        cls, url: str, identity: Identity, trust: TrustPolicy, *, timeout: float = 30.0
    ) -> Gateway:
        nc_client = await _Client.connect(
            url, trust=trust, creds=identity.seed_path, identity=identity.name
        )
        assert isinstance(nc_client, _Client)
        return cls(nc_client, timeout)

    @property
    def closed(self) -> bool:
        """Whether nats-py has given the connection up (it then never reconnects)."""
        return bool(self.client.nc.is_closed)

    async def close(self) -> None:
        await self.client.close()

    @staticmethod
    def head(envelope: bytes) -> ev.Event:
        """The event in the envelope (DSSE structure, payload type, the catalogue's
        schema; raises EnvelopeError or SchemaError); the signature is the notary's."""
        return envelope_head(envelope)

    @contextlib.asynccontextmanager
    async def _one_at_a_time(self, event_id: str) -> AsyncIterator[None]:
        # The SDK waits for one verdict per event id at a time: concurrent posts of
        # the same event are answered in turn (the second from the notary's lookup).
        lock = self._busy.setdefault(event_id, asyncio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and self._busy.get(event_id) is lock:
                del self._busy[event_id]

    async def submit(self, envelope: bytes) -> Receipt | Rejected:
        """The receipt, or the signed rejection; SubmissionTimeout (no verdict in time:
        resubmit), UnverifiedVerdict, or EnvelopeError/SchemaError for bytes that are
        not a submittable envelope."""
        head = self.head(envelope)
        async with self._one_at_a_time(head.event_id):
            try:
                return await self.client.submit_signed(envelope, timeout=self.timeout)
            except SubmissionRejected as e:
                return Rejected(
                    e.code,
                    e.detail,
                    e.event_id,
                    self.client.signed_rejections.pop(e.event_id, None),
                )
            except LedgerError:
                raise
            except Exception as e:  # nats-py: the connection closed or broke under it
                raise GatewayUnavailable(f"the gateway's NATS connection failed: {e}") from None
            finally:
                self.client.signed_rejections.pop(head.event_id, None)
