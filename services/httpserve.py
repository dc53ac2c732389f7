"""Serving an ASGI app over HTTP with uvicorn, for the services that speak HTTP
(the witness, the web app). Shared code, not a service of its own."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn

__all__ = ["bind", "serve_until", "socket_url"]


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the caller's ``stop`` event rules."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int, error: Callable[[str], Exception]) -> socket.socket:
    """A listening socket on ``host:port`` (0: a free port), or ``error(message)``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise error(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.set_inheritable(True)
    return sock


def socket_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def serve_until(
    app: Any,
    sock: socket.socket,
    stop: asyncio.Event,
    *,
    on_ready: Callable[[str], None] | None,
    not_started: Callable[[], Exception],
) -> None:
    """Serve ``app`` on ``sock`` until ``stop`` is set (or the server fails: raised);
    ``on_ready(url)`` once it answers. The socket is closed on return."""
    server = _Server(
        uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="on",
            server_header=False,
            timeout_graceful_shutdown=5,
        )
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise not_started()
            await asyncio.sleep(0.01)
        if on_ready is not None:
            on_ready(socket_url(sock))
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if task.done():
            task.result()
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await task
        sock.close()
