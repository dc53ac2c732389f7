"""The witness: an independent process that cosigns the checkpoints of the logs it
witnesses, speaking c2sp.org/tlog-witness over HTTP (DESIGN §3 "Checkpoint", §7).

It has its own key (a c2sp.org/tlog-cosignature ``cosignature/v1`` Ed25519 key)
and its own durable state: per origin, the size, root hash and note of the
latest checkpoint it cosigned, in SQLite with ``synchronous=FULL``. An
add-checkpoint request is decided by :func:`ledger.formats.witness.judge` and
the new record is committed in the same ``BEGIN IMMEDIATE`` transaction that
read the old one, before the cosignature leaves the process: tlog-witness
"add-checkpoint" requires the check of the old size and the update to be atomic
and the checkpoint to be persisted before the answer, so a crash (even SIGKILL
right after an answer) never makes it forget what it cosigned. It refuses, and
logs with the reason, everything else; a refused request that the log signed
and that contradicts what the witness cosigned (a fork, a consistency proof
that fails) is kept in the ``evidence`` table, as the spec allows.

HTTP (Litestar on uvicorn, run inside the caller's event loop so the demo can
drive it with its simulated clock):

- ``POST /add-checkpoint``: tlog-witness "add-checkpoint" (body at most 1 MiB:
  413 above; bad input is a 4xx, never a 500);
- ``GET /`` and ``GET /healthz``: the witness's name, verifier key and, per
  origin, the size it last cosigned.

Which logs it witnesses (origin and log verifier keys with their validity
windows), its key file and its state directory come from a
:class:`WitnessConfig`, by default read from a ledger home
(:meth:`WitnessConfig.from_home`: the trust policy's origin and ``log_keys``,
``keys/witness.pem``, ``witness/``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from litestar import Litestar, Request, Response, get, post

from ledger.bus.home import Home
from ledger.formats.checkpoint import CosignatureSigner
from ledger.formats.errors import USAGE, LedgerError
from ledger.formats.note import Verifier
from ledger.formats.timeutil import Clock, SystemClock, format_time
from ledger.formats.trust import TrustedKey
from ledger.formats.witness import CosignedState, Outcome, judge, load_witness_key
from services.httpserve import bind, serve_until

__all__ = [
    "MAX_BODY",
    "Witness",
    "WitnessConfig",
    "WitnessError",
    "main",
    "make_app",
    "serve_witness",
    "start_local_witness",
]

log = logging.getLogger("ailedger.witness")

#: The largest add-checkpoint request body accepted (413 above).
MAX_BODY: Final = 1 << 20

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cosigned (
    origin TEXT PRIMARY KEY,
    size TEXT NOT NULL,          -- decimal: a uint64 does not fit SQLite's INTEGER
    root BLOB NOT NULL,
    note BLOB NOT NULL,          -- the checkpoint note with the witness's cosignature
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS evidence (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    origin TEXT NOT NULL,
    status INTEGER NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    request BLOB NOT NULL        -- the whole add-checkpoint body, signed by the log
);
"""


class WitnessError(LedgerError, RuntimeError):
    """The witness cannot run: no log to witness, its state is locked or unreadable."""

    code = "witness_cannot_run"
    exit_status = USAGE


@dataclass(frozen=True)
class WitnessConfig:
    """What a witness needs: its name and key file, its state directory, and the logs
    it witnesses (origin -> the log's verifier keys, each with its validity window)."""

    name: str
    key_path: Path
    state_dir: Path
    logs: Mapping[str, Sequence[TrustedKey]] = field(default_factory=dict)
    max_body: int = MAX_BODY

    @classmethod
    def from_home(cls, home: Home, *, state_dir: Path | None = None) -> WitnessConfig:
        """The witness of a ledger home: it witnesses the trust policy's origin with its
        ``log_keys``; its key is ``keys/witness.pem`` (created when missing, see
        :meth:`Home.ensure_witness_key`), its state ``witness/`` unless ``state_dir``."""
        trust = home.trust()
        return cls(
            name=home.witness_name(),
            key_path=home.witness_key_path,
            state_dir=state_dir or home.witness_dir,
            logs={trust.origin: list(trust.log_keys)},
        )


class _Store:
    """The witness's durable record, one SQLite file (``synchronous=FULL``)."""

    def __init__(self, path: Path) -> None:
        try:
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(_SCHEMA)
        except sqlite3.Error as e:
            raise WitnessError(f"cannot open the witness state {path}: {e}") from None

    def get(self, origin: str) -> CosignedState | None:
        row = self.db.execute(
            "SELECT size, root, note FROM cosigned WHERE origin = ?", (origin,)
        ).fetchone()
        if row is None:
            return None
        return CosignedState(int(row[0]), bytes(row[1]), bytes(row[2]))

    def put(self, origin: str, state: CosignedState, at: str) -> None:
        self.db.execute(
            "INSERT INTO cosigned (origin, size, root, note, at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (origin) DO UPDATE SET size = excluded.size, root = excluded.root, "
            "note = excluded.note, at = excluded.at",
            (origin, str(state.size), state.root_hash, state.note, at),
        )

    def keep_evidence(self, outcome: Outcome, request: bytes, at: str) -> None:
        assert outcome.checkpoint is not None
        self.db.execute(
            "INSERT INTO evidence (at, origin, status, reason, detail, request) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                at,
                outcome.checkpoint.origin,
                outcome.status,
                outcome.reason,
                outcome.detail,
                request,
            ),
        )

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT: the read of the record and its update are one step,
        also against another process on the same file."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()


@contextlib.contextmanager
def _exclusive(directory: Path) -> Iterator[None]:
    """One witness process per state directory."""
    directory.mkdir(parents=True, exist_ok=True)
    lock_path = directory / "witness.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WitnessError(
                f"another witness runs with the state in {directory} ({lock_path} is locked)"
            ) from None
        yield
    finally:
        os.close(fd)


class Witness:
    """A witness over its durable state: :meth:`add_checkpoint` is the whole protocol."""

    def __init__(
        self,
        config: WitnessConfig,
        *,
        clock: Clock | None = None,
        signer: CosignatureSigner | None = None,
    ) -> None:
        if not config.logs:
            raise WitnessError("a witness needs at least one log to witness")
        self.config = config
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.signer = signer or load_witness_key(
            config.key_path, config.name, lambda: int(self.clock.now().timestamp())
        )
        self.name = self.signer.name
        self.vkey = self.signer.verifier().vkey
        try:
            self._logs = {
                origin: [(k, Verifier.from_vkey(k.key)) for k in keys]
                for origin, keys in config.logs.items()
            }
        except LedgerError as e:
            raise WitnessError(f"a log key of the witness's configuration: {e}") from None
        self._lock_cm = _exclusive(config.state_dir)
        self._lock_cm.__enter__()
        try:
            self._store = _Store(config.state_dir / "witness.sqlite")
        except BaseException:
            self._lock_cm.__exit__(None, None, None)
            raise
        self._mutex = threading.Lock()
        self.counts: dict[str, int] = {}

    def known_logs(self, at: datetime) -> dict[str, list[Verifier]]:
        """Each witnessed origin with its log keys valid at ``at``."""
        return {
            origin: [v for k, v in keys if k.valid_at(at)] for origin, keys in self._logs.items()
        }

    def add_checkpoint(self, body: bytes) -> Outcome:
        """Decide one add-checkpoint request and, when it is cosigned, commit the new
        record before returning (tlog-witness "add-checkpoint"). Blocking: fsyncs."""
        with self._mutex, self._store.transaction():
            now = self.clock.now()
            outcome = judge(body, self.known_logs(now), self._store.get, self.signer)
            if outcome.state is not None and outcome.checkpoint is not None:
                self._store.put(outcome.checkpoint.origin, outcome.state, format_time(now))
            elif outcome.evidence:
                self._store.keep_evidence(outcome, body, format_time(now))
        self.counts[outcome.reason] = self.counts.get(outcome.reason, 0) + 1
        if outcome.cosigned:
            log.info("witness %s: %s", self.name, outcome.detail)
        else:
            log.warning(
                "witness %s refused (%d %s): %s",
                self.name,
                outcome.status,
                outcome.reason,
                outcome.detail,
            )
        return outcome

    def latest(self, origin: str) -> CosignedState | None:
        """The latest checkpoint cosigned for ``origin``, if any."""
        with self._mutex:
            return self._store.get(origin)

    def evidence(self) -> list[dict[str, Any]]:
        """The refused requests kept as possible evidence of log misbehaviour."""
        with self._mutex:
            rows = self._store.db.execute(
                "SELECT at, origin, status, reason, detail, request FROM evidence ORDER BY id"
            ).fetchall()
        keys = ("at", "origin", "status", "reason", "detail", "request")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def info(self) -> dict[str, Any]:
        """What ``GET /`` shows: name, verifier key, the size cosigned per origin."""
        logs = {}
        for origin in self.config.logs:
            state = self.latest(origin)
            logs[origin] = {"size": state.size if state is not None else 0}
        return {"name": self.name, "verifier_key": self.vkey, "logs": logs}

    def close(self) -> None:
        with self._mutex:
            self._store.close()
        self._lock_cm.__exit__(None, None, None)


def make_app(witness: Witness) -> Any:
    """The witness's Litestar application."""

    @post("/add-checkpoint", request_max_body_size=witness.config.max_body)
    async def add_checkpoint(request: Request[Any, Any, Any]) -> Response[bytes]:
        body = await request.body()
        outcome = await asyncio.to_thread(witness.add_checkpoint, body)
        # The exact Content-Type (text/x.tlog.size), without the charset Litestar adds to text/*.
        return Response(
            outcome.body,
            status_code=outcome.status,
            headers={"content-type": outcome.content_type},
        )

    @get(["/", "/healthz"], sync_to_thread=True)
    def info() -> dict[str, Any]:
        return witness.info()

    return Litestar(
        route_handlers=[add_checkpoint, info],
        logging_config=None,
        request_max_body_size=witness.config.max_body,
    )


async def serve_witness(
    config: WitnessConfig,
    stop: asyncio.Event,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    clock: Clock | None = None,
    on_ready: Callable[[str, Witness], None] | None = None,
) -> Witness:
    """Run a witness over HTTP in the current event loop until ``stop`` is set.

    ``port`` 0 picks a free port; ``on_ready(url, witness)`` is called once it
    answers. ``clock`` timestamps the cosignatures (default: the system clock).
    Returns the (closed) witness, whose ``counts`` tell what it answered.
    """
    witness = Witness(config, clock=clock)
    try:
        sock = bind(host, port, WitnessError)
        await serve_until(
            make_app(witness),
            sock,
            stop,
            on_ready=None if on_ready is None else lambda url: on_ready(url, witness),
            not_started=lambda: WitnessError("the witness's HTTP server stopped before it started"),
        )
    finally:
        witness.close()
    return witness


def _ready_line(url: str, witness: Witness) -> str:
    origins = ", ".join(witness.config.logs)
    return f"witness up: {witness.name} at {url}, witnessing {origins}; verifier key {witness.vkey}"


def main(argv: list[str] | None = None) -> int:
    """``python -m services.witness``: a standalone witness for a ledger home."""
    import signal

    from ledger.bus.home import resolve_home

    parser = argparse.ArgumentParser(
        prog="python -m services.witness",
        description="A C2SP tlog-witness for the log of a ledger home.",
    )
    parser.add_argument("--home", type=Path, default=os.environ.get("AILEDGER_HOME"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--state", type=Path, default=None, help="state directory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("uvicorn").setLevel(logging.WARNING)  # its start/stop chatter
    try:
        home = Home(resolve_home(args.home))
        if not home.exists():
            raise WitnessError(f"{home.path} is not a ledger home")
        home.ensure_witness_key()
        config = WitnessConfig.from_home(home, state_dir=args.state)

        async def run() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)

            def ready(url: str, witness: Witness) -> None:
                print(_ready_line(url, witness), flush=True)

            await serve_witness(config, stop, host=args.host, port=args.port, on_ready=ready)

        asyncio.run(run())
    except LedgerError as e:
        print(f"error: {e} [{e.code}]", file=sys.stderr)
        return e.exit_status
    return 0


async def start_local_witness(
    home: Home, stop: asyncio.Event, clock: Clock | None
) -> tuple[str, asyncio.Task[object]]:
    """Run the home's own witness (its key, its state) in this event loop, on the
    notary's clock, until ``stop``; return its URL and task."""
    if not home.witness_key_path.exists():
        raise WitnessError(
            "the trust policy requires witness cosignatures, but config.json names no "
            "witnesses and this home has no witness key (ailedger init makes one)"
        )
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def on_ready(url: str, witness: object) -> None:
        if not ready.done():
            ready.set_result(url)

    task: asyncio.Task[object] = asyncio.create_task(
        serve_witness(WitnessConfig.from_home(home), stop, clock=clock, on_ready=on_ready)
    )
    waiting: set[asyncio.Future[Any]] = {task, ready}
    done, _ = await asyncio.wait(waiting, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if ready not in done:
        if task.done():
            task.result()  # its error
        raise WitnessError("the local witness did not start within 30 s")
    log.info("local witness at %s (a demonstration: real deployments name others)", ready.result())
    return ready.result(), task
