"""The one place where asyncio meets the synchronous eventsourcing library.

nats-py is asyncio; eventsourcing (and SQLite behind it) is synchronous. All
state work of a service runs on one dedicated thread, in submission order, so
the event loop keeps serving NATS while a batch is being checked or recorded,
and the state is never touched by two threads at once.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

__all__ = ["StateThread"]

P = ParamSpec("P")
R = TypeVar("R")


class StateThread:
    def __init__(self, name: str = "ledger-state") -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def call(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        return await self.submit(fn, *args, **kwargs)

    def submit(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> asyncio.Future[R]:
        """Queue ``fn`` now (its place in the order is taken at once, not when the
        result is awaited); await the returned future for its result."""
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        self._executor.shutdown(wait=True)
