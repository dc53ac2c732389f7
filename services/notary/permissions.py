"""The bus permissions follow the actor registry (DESIGN §7): when the notary
integrates an enrolment, a suspension or a reinstatement, the server's users are
regenerated and reloaded before the submitter gets its receipt, so a suspended
actor's next publish is refused by the server itself."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence

from ledger.bus.auth import Authorizer
from ledger.law import events as ev
from ledger.state.application import LedgerState
from ledger.state.asyncbridge import StateThread

__all__ = ["BusPermissions"]

log = logging.getLogger("ailedger.notary")

_CHANGES = (ev.ActorEnrolled, ev.ActorSuspended, ev.ActorReinstated, ev.LedgerGenesis)


def _actor_of(event: ev.Event) -> str:
    return event.actor if isinstance(event, ev.LedgerGenesis) else event.subject.split("/", 1)[1]


class BusPermissions:
    """Regenerates the server's users from the notary's state."""

    def __init__(self, authorizer: Authorizer, state: LedgerState, state_thread: StateThread):
        self.authorizer = authorizer
        self.state = state
        self.state_thread = state_thread
        #: identities.json as of the last refresh: an identity added since
        #: (``ailedger creds issue``) is picked up with the next batch.
        self._seen: int | None = None

    def _stamp(self) -> int | None:
        try:
            return self.authorizer.identities.index_path.stat().st_mtime_ns
        except OSError:
            return None

    def _statuses(self, names: Iterable[str]) -> dict[str, bool]:
        """Enrolled actors among ``names``: True may submit, False suspended."""
        out = {}
        for name in names:
            actor = self.state.actor(name)
            if actor is not None:
                out[name] = not actor.suspended
        return out

    async def refresh(self, enrolled: Sequence[str] = ()) -> None:
        names = set(self.authorizer.actors()) | set(enrolled)
        statuses = await self.state_thread.call(self._statuses, names)
        new = [a for a in enrolled if a in statuses]
        try:
            if await asyncio.to_thread(self.authorizer.update, statuses, enrolled=new):
                log.info("bus authorization reloaded: %d actors", len(statuses))
        except Exception:
            # The old users stay in force; admission still refuses a suspended actor.
            log.exception("bus authorization NOT reloaded")
        self._seen = self._stamp()

    async def integrated(self, events: Sequence[ev.Event]) -> None:
        """After a LEDGER batch: reload if it enrolled, suspended or reinstated anyone,
        or if an identity was added to the home since the last reload."""
        changed = [e for e in events if isinstance(e, _CHANGES)]
        if changed or self._stamp() != self._seen:
            await self.refresh([_actor_of(e) for e in changed])
