"""Lookups: what became of an event id, answered on ``LOOKUP_SUBJECT``.

An integrated event gets its receipt again (and its tlog-proof once a
checkpoint covers it), a recently rejected one its rejection, any other
``unknown``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from ledger.bus.streams import LOOKUP_SUBJECT, Verdict
from ledger.formats.receipt import Receipt
from ledger.state.application import LedgerState
from ledger.state.asyncbridge import StateThread
from services.notary.answers import RecentRejections, accepted, is_inbox

__all__ = ["Lookup"]

log = logging.getLogger("ailedger.notary")


class Lookup:
    def __init__(
        self,
        nc: NATS,
        state: LedgerState,
        state_thread: StateThread,
        receipt: Callable[[int, str], Awaitable[Receipt | None]],
        rejections: RecentRejections,
        proof: Callable[[int], bytes | None],
    ) -> None:
        """``receipt`` gives the receipt v2 of an entry (index, event id), read back
        under its batch's seal; ``proof`` the tlog-proof of an index, if any
        (called on the state thread)."""
        self.nc = nc
        self.state = state
        self.state_thread = state_thread
        self.receipt = receipt
        self.rejections = rejections
        self.proof = proof
        self._sub: object | None = None

    async def subscribe(self) -> None:
        self._sub = await self.nc.subscribe(LOOKUP_SUBJECT, queue="notary", cb=self.on_lookup)

    async def unsubscribe(self) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()  # type: ignore[attr-defined]
            except Exception as e:
                log.debug("unsubscribe: %s", e)

    async def on_lookup(self, msg: Msg) -> None:
        event_id = msg.data.decode(errors="replace").strip()
        try:
            record = await self.state_thread.call(self.state.event_record, event_id)
        except Exception as e:
            log.warning("lookup %s: %s", event_id, e)
            record = None
        receipt = None
        if record is not None:
            try:
                receipt = await self.receipt(record.index, record.event_id)
            except Exception as e:
                log.warning("receipt of entry %d: %s", record.index, e)
        if record is not None and receipt is not None:
            verdict = accepted(record, receipt)
            proof = await self.state_thread.call(self.proof, record.index)
            if proof is not None:
                verdict.proof = proof.decode()
        else:
            verdict = self.rejections.get(event_id) or Verdict(status="unknown", event_id=event_id)
        if msg.reply and is_inbox(msg.reply):
            await self.nc.publish(msg.reply, verdict.encode())
