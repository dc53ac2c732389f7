"""The notary's health: its alarms, its streams, and the watch on their settings.

:class:`Health` answers requests on :data:`~ledger.bus.alarms.HEALTH_SUBJECT`
with one JSON object (what ``ailedger doctor`` prints) and re-checks the
settings of LEDGER and CHECKPOINTS at start and every ``interval`` seconds
(and before each checkpoint is signed). When they no longer are the ones
DESIGN §4 requires, it raises ``stream_settings_changed`` and checkpoint
signing stops: a notary does not vouch for a stream that may drop history.
Signing stays off until the notary is restarted on safe streams (at start,
``ensure_streams`` refuses unsafe ones), because what happened to the stream
while it was unsafe cannot be undone by switching the setting back.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from ledger.bus.alarms import (
    HEALTH_SUBJECT,
    NATS_DISCONNECTED,
    STREAM_SETTINGS_CHANGED,
    Alarms,
    encode_health,
)
from ledger.bus.natsserver import EmbeddedNats, NatsServerError
from ledger.bus.streams import check_guarded_streams, ensure_open

__all__ = ["Health"]

log = logging.getLogger("ailedger.notary")


class Health:
    def __init__(
        self,
        nc: NATS,
        alarms: Alarms,
        *,
        origin: str,
        last_sequence: Callable[[], int],
        checkpoint_size: Callable[[], int | None],
        interval: float = 5.0,
    ) -> None:
        self.nc = nc
        self.alarms = alarms
        self.origin = origin
        self.last_sequence = last_sequence
        self.checkpoint_size = checkpoint_size
        self.interval = interval
        #: False once a guarded stream's settings changed: no more checkpoints.
        self.signing = True
        self.streams: dict[str, list[str]] = {}
        self.checked_at = 0.0
        self._checked_mono = 0.0
        self._sub: Any = None
        #: The embedded nats-server this notary started (``ailedger up``), if any:
        #: nobody else would restart it, so its exit ends the notary.
        self.server: EmbeddedNats | None = None

    def connection_ok(self) -> bool:
        """False while NATS is away (alarm ``nats_disconnected``, reconnecting); raises
        when it will not come back (connection closed, embedded server gone), so the
        process exits non-zero for its supervisor instead of staying up idle."""
        server = self.server
        if server is not None and (server.process is None or server.process.poll() is not None):
            raise NatsServerError(
                f"the embedded nats-server exited (see {server.log_path}); the notary stops"
            )
        ensure_open(self.nc, "notary")
        if not self.nc.is_connected:
            if not self.alarms.is_active(NATS_DISCONNECTED):
                self.alarms.record(NATS_DISCONNECTED, "connection to NATS lost; reconnecting")
            return False
        if self.alarms.is_active(NATS_DISCONNECTED):
            self.alarms.clear(NATS_DISCONNECTED)
        return True

    async def subscribe(self) -> None:
        self._sub = await self.nc.subscribe(HEALTH_SUBJECT, cb=self.on_health)

    async def unsubscribe(self) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception as e:
                log.debug("unsubscribe: %s", e)

    async def check_streams(self) -> bool:
        """Re-check LEDGER and CHECKPOINTS now; False (and signing off) if unsafe."""
        problems = await check_guarded_streams(self.nc)  # BusError: unknown, not changed
        self.streams = problems
        self.checked_at = time.time()
        self._checked_mono = time.monotonic()
        bad = {name: p for name, p in problems.items() if p}
        if bad:
            detail = "; ".join(f"{name}: {', '.join(p)}" for name, p in sorted(bad.items()))
            if self.signing:
                detail += " (checkpoint signing stopped)"
            self.signing = False
            self.alarms.record(STREAM_SETTINGS_CHANGED, detail)
        return self.signing

    async def maybe_check_streams(self) -> None:
        """The periodic re-check, when ``interval`` seconds have passed."""
        if time.monotonic() - self._checked_mono >= self.interval:
            try:
                await self.check_streams()
            except Exception as e:  # never let the watch stop the notary
                log.warning("stream settings check failed: %s", e)

    def document(self) -> dict[str, Any]:
        """The health object: what ``ailedger doctor`` shows."""
        alarms = self.alarms.to_json()
        return {
            "origin": self.origin,
            "pid": os.getpid(),
            "connected": bool(self.nc.is_connected),
            "last_sequence": self.last_sequence(),
            "streams": {
                name: {"ok": not problems, "problems": problems}
                for name, problems in sorted(self.streams.items())
            },
            "streams_checked_at": self.checked_at,
            "checkpoint": {"signing": self.signing, "size": self.checkpoint_size()},
            "alarms": alarms,
            "ok": not alarms and self.signing,
        }

    async def on_health(self, msg: Msg) -> None:
        if msg.reply:
            try:
                await self.nc.publish(msg.reply, encode_health(self.document()))
            except Exception as e:
                log.warning("health answer not sent: %s", e)
