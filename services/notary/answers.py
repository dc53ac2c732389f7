"""What the notary answers, to a submitter (the sequencer) and to a lookup alike:
receipts (v2, under their batch's seal), verdicts, and where answers may go."""

from __future__ import annotations

import re
from collections import OrderedDict

from ledger.bus.streams import Verdict
from ledger.formats.receipt import Receipt
from ledger.state.domain import EventRecord

__all__ = ["RecentRejections", "accepted", "is_inbox"]


def accepted(record: EventRecord, receipt: Receipt) -> Verdict:
    return Verdict(
        status="accepted",
        event_id=record.event_id,
        index=record.index,
        receipt=receipt.note.decode(),
        envelope_sha256=record.envelope_sha256,
    )


_INBOX = re.compile(r"_INBOX\.[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")


def is_inbox(subject: str) -> bool:
    """Answers go to reply inboxes only. The reply subject is chosen by whoever
    published; the notary's connection may write LEDGER, so an unchecked reply
    subject would let anyone make it write there."""
    return _INBOX.fullmatch(subject) is not None


class RecentRejections:
    """The verdicts of rejected events, by event id: final (signed) ones are
    answered again, exactly, to the same event id (bounded)."""

    def __init__(self, limit: int = 1_000_000) -> None:
        self.limit = limit
        self._verdicts: OrderedDict[str, Verdict] = OrderedDict()

    def remember(self, event_id: str, verdict: Verdict) -> None:
        self._verdicts[event_id] = verdict
        while len(self._verdicts) > self.limit:
            self._verdicts.popitem(last=False)

    def forget(self, event_id: str) -> None:
        self._verdicts.pop(event_id, None)

    def get(self, event_id: str) -> Verdict | None:
        return self._verdicts.get(event_id)
