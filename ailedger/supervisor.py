"""``ailedger up``: the home's nats-server and every service as parts of one foreground run.

The embedded nats-server runs as a child of the supervisor, and each service as
a process of its own (``ailedger witness``, ``ailedger notary``, ``ailedger
project``, ``ailedger web``), so that a part can stop or fail without taking
the others with it: LEDGER stays readable (``status``, ``timeline``, ``get``,
the web app) while the notary is down. Their output is one log, each line
prefixed with the part's name. Ctrl-C (or SIGTERM) stops the parts in reverse
order and exits 0; a part that exits on its own stops the others and the
supervisor exits non-zero, naming the part and its status.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ledger.bus.home import Home
from ledger.bus.natsserver import EmbeddedNats, die_with_parent
from ledger.formats.errors import UNAVAILABLE, LedgerError

__all__ = ["Part", "PartFailed", "Stopped", "Supervisor", "part_command"]

#: Seconds a part may take to say it is up (a long recovery may take a while).
READY_TIMEOUT = 300.0
#: Seconds a part has to stop after SIGTERM before it is killed.
STOP_TIMEOUT = 20.0


def part_command(*args: str) -> list[str]:
    """``ailedger ARGS`` run by this interpreter (the supervisor's own install)."""
    return [sys.executable, "-m", "ailedger", *args]


@dataclass
class Part:
    """One service process: its command and the line that says it is up."""

    name: str
    argv: list[str]
    ready: str
    proc: asyncio.subprocess.Process | None = None
    lines: list[str] = field(default_factory=list)
    up: asyncio.Event = field(default_factory=asyncio.Event)
    #: What its ready line said (the URL the next part needs, its PID).
    ready_line: str = ""


class PartFailed(LedgerError, RuntimeError):
    """A part of ``ailedger up`` exited on its own, or never said it was up; the
    others were stopped."""

    code = "part_failed"
    exit_status = UNAVAILABLE

    def __init__(self, part: str, message: str) -> None:
        super().__init__(message)
        self.part = part


class Stopped(Exception):
    """Ctrl-C or SIGTERM while the parts were being started."""


class Supervisor:
    """Starts the parts in order, prefixes their output, stops them in reverse."""

    def __init__(self, stop: asyncio.Event, write: Callable[[str], None] | None = None) -> None:
        #: Set by Ctrl-C or SIGTERM: a start in progress gives up (:class:`Stopped`).
        self.stop = stop
        self.parts: list[Part] = []
        self.server: EmbeddedNats | None = None
        self._write = write or self._stdout
        self._stopping = False
        self._failed: asyncio.Queue[PartFailed] = asyncio.Queue()
        self._pumps: list[asyncio.Task[None]] = []
        self._url_file: Path | None = None

    @staticmethod
    def _stdout(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def say(self, part: str, text: str) -> None:
        for line in text.splitlines() or [""]:
            self._write(f"{part:<9} | {line}")

    # --- the nats-server ------------------------------------------------------

    async def start_server(self, server: EmbeddedNats, home: Home) -> str:
        self.server = server
        # Started from this (the main) thread, which lives as long as the supervisor:
        # killed, the supervisor takes its nats-server with it.
        server.die_with_parent = True
        url = server.start()
        home.url_file.parent.mkdir(parents=True, exist_ok=True)
        home.url_file.write_text(url + "\n")
        self._url_file = home.url_file
        self.say(
            "nats",
            f"nats-server up: {url} (pid {server.pid}), store {server.store_dir}, "
            f"log {server.log_path}",
        )
        self._pumps.append(asyncio.create_task(self._watch_server(server)))
        return url

    async def _watch_server(self, server: EmbeddedNats) -> None:
        while not self._stopping:
            proc = server.process
            if proc is None or proc.poll() is not None:
                status = proc.returncode if proc is not None else -1
                await self._failed.put(
                    PartFailed(
                        "nats",
                        f"the embedded nats-server exited (status {status}, see "
                        f"{server.log_path}); every part stopped",
                    )
                )
                return
            await asyncio.sleep(0.2)

    # --- service parts ----------------------------------------------------------

    async def start(self, part: Part, timeout: float = READY_TIMEOUT) -> str:
        """Start ``part`` and wait for its ready line; returns that line."""
        self.parts.append(part)
        part.proc = await asyncio.create_subprocess_exec(
            *part.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,  # Ctrl-C reaches the supervisor, which stops it in order
            preexec_fn=die_with_parent,
        )
        self._pumps.append(asyncio.create_task(self._pump(part)))
        ready = asyncio.create_task(part.up.wait())
        failed = asyncio.create_task(self._failed.get())
        stopped = asyncio.create_task(self.stop.wait())
        done, _ = await asyncio.wait(
            {ready, failed, stopped}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        ready.cancel()
        stopped.cancel()
        if failed in done:
            raise failed.result()
        failed.cancel()
        if stopped in done:
            raise Stopped
        if not done:
            raise PartFailed(
                part.name,
                f"{part.name} did not say it was up in {timeout:.0f} s; every part stopped",
            )
        return part.ready_line

    async def _pump(self, part: Part) -> None:
        proc = part.proc
        assert proc is not None and proc.stdout is not None
        while True:
            raw = await proc.stdout.readline()
            if not raw:
                break
            line = raw.decode(errors="replace").rstrip("\n")
            part.lines.append(line)
            del part.lines[:-50]
            self.say(part.name, line)
            if not part.up.is_set() and part.ready in line:
                part.ready_line = line
                part.up.set()
        status = await proc.wait()
        if not self._stopping:
            tail = " | ".join(part.lines[-3:])
            await self._failed.put(
                PartFailed(
                    part.name,
                    f"{part.name} exited with status {status}; every part stopped"
                    + (f" (its last lines: {tail})" if tail else ""),
                )
            )

    async def run_until_stopped(self) -> PartFailed | None:
        """Wait for :attr:`stop` or a part's failure; returns the failure, if any."""
        stopped = asyncio.create_task(self.stop.wait())
        failed = asyncio.create_task(self._failed.get())
        done, _ = await asyncio.wait({stopped, failed}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if failed in done:
            return failed.result()
        failed.cancel()
        return None

    async def stop_all(self) -> None:
        """SIGTERM each part, newest first, then the nats-server."""
        self._stopping = True
        for part in reversed(self.parts):
            proc = part.proc
            if proc is None or proc.returncode is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                self.say("up", f"{part.name} did not stop in {STOP_TIMEOUT:.0f} s: killed")
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        for pump in self._pumps:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(pump, 5)
        if self.server is not None:
            await asyncio.to_thread(self.server.stop)
            if self._url_file is not None:
                self._url_file.unlink(missing_ok=True)
            self.say("nats", "nats-server stopped")


_URL = re.compile(r"\b(https?://[^\s,;)]+)")


def url_in(line: str) -> str:
    """The first http(s) URL in a part's ready line."""
    m = _URL.search(line)
    if m is None:
        raise PartFailed("up", f"no URL in the line {line!r}")
    return m.group(1)


def option_args(options: Sequence[tuple[str, object | None]]) -> list[str]:
    """``--name value`` pairs for the options that were given."""
    out: list[str] = []
    for name, value in options:
        if value is not None:
            out += [name, str(value)]
    return out


def home_args(home: Path) -> list[str]:
    return ["--home", str(home)]
