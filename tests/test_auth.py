"""Authorization on the bus (DESIGN §7) against a real nats-server: who may publish,
subscribe and administer what, and the users following the actor registry.

A refused publish never gets an answer from the server: it sends
``-ERR 'Permissions Violation ...'`` to the client's error callback and keeps the
connection open. :func:`refused` detects it in one round trip (publish, yield to
the flusher, flush: the -ERR arrives before the PONG), not by waiting for a timeout.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS

from ledger.bus.auth import (
    NOTARY,
    OPERATOR,
    READER,
    AuthConfigError,
    BusIdentities,
    UnknownIdentity,
    external_apply,
    render_authorization,
)
from ledger.bus.client import LedgerClient, SubmissionTimeout
from ledger.bus.home import Home, init_home
from ledger.bus.natsserver import EmbeddedNats, NatsServerError
from ledger.bus.streams import CREDS_ENV, INTAKE, LEDGER, NatsUnreachable, connect, last_sequence
from ledger.formats.keys import generate, save_key
from ledger.law import events as ev
from services.notary import serve
from tests.conftest import ORIGIN, Harness, enrolment_fields, registration_fields, running_notary


class Conn:
    """A raw connection as one identity, recording the server's async errors."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.nc: NATS | None = None

    async def open(self, url: str, **options: Any) -> Conn:
        async def error_cb(e: Exception) -> None:
            self.errors.append(str(e).lower())

        self.nc = await nats.connect(
            url, error_cb=error_cb, allow_reconnect=False, connect_timeout=2, **options
        )
        return self

    async def refused(self, subject: str, data: bytes = b"x", *, subscribe: bool = False) -> bool:
        """Publish to (or subscribe to) ``subject``: True when the server refused it."""
        assert self.nc is not None
        before = len(self.errors)
        if subscribe:
            await self.nc.subscribe(subject)
        else:
            await self.nc.publish(subject, data)
        await asyncio.sleep(0)  # let the flusher write the PUB/SUB before the PING
        await self.nc.flush(timeout=5)
        kind = "subscription" if subscribe else "publish"
        want = f"permissions violation for {kind} to"
        return any(want in e and subject.lower() in e for e in self.errors[before:])

    async def close(self) -> None:
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.close()


async def as_identity(h: Harness, name: str) -> Conn:
    identity = h.home.identities().require(name)
    return await Conn().open(h.url, **identity.connect_options())


@pytest.fixture
async def actor(ledger: Harness) -> AsyncIterator[Conn]:
    """``bank``, enrolled: a raw connection with its own issued credentials."""
    await ledger.enrol("bank", ["owner"])
    await ledger.enrol("media", ["owner"])
    creds = ledger.home.identities().issue("bank", ledger.home.path / "bank.creds")
    conn = await Conn().open(ledger.url, nkeys_seed=str(creds), inbox_prefix="_INBOX.bank")
    yield conn
    await conn.close()


async def test_a_client_without_credentials_cannot_connect(
    ledger: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CREDS_ENV)
    with pytest.raises(nats.errors.Error, match=r"(?i)authorization violation"):
        await Conn().open(ledger.url)
    with pytest.raises(NatsUnreachable, match=r"(?i)authorization violation"):
        await connect(ledger.url)
    # A seed the server does not know is refused the same way.
    stranger = BusIdentities(ledger.home.path / "elsewhere").ensure("bank")
    with pytest.raises(nats.errors.Error, match=r"(?i)authorization violation"):
        await Conn().open(ledger.url, **stranger.connect_options())


async def test_an_actor_publishes_only_to_its_own_intake(ledger: Harness, actor: Conn) -> None:
    assert not await actor.refused("intake.bank.SystemRegistered")
    for subject in (
        "intake.media.SystemRegistered",
        "ledger.system.x",
        "rejected.bank",
        "checkpoint",
        "_INBOX.media.x",
        "_INBOX._notary.x",
    ):
        assert await actor.refused(subject), subject


async def test_an_actor_cannot_administer_streams_or_read_intake(
    ledger: Harness, actor: Conn
) -> None:
    for stream in ("LEDGER", "REJECTED", "CHECKPOINTS", "INTAKE"):
        for op in ("UPDATE", "DELETE", "PURGE"):
            assert await actor.refused(f"$JS.API.STREAM.{op}.{stream}", b"{}"), (op, stream)
    assert await actor.refused("$JS.API.CONSUMER.DELETE.INTAKE.notary")
    assert await actor.refused("$JS.API.STREAM.MSG.DELETE.INTAKE", b"{}")
    # Reading INTAKE: neither through the notary's consumer, nor by direct get,
    # nor by subscribing to the subjects.
    assert await actor.refused("$JS.API.CONSUMER.MSG.NEXT.INTAKE.notary", b"{}")
    assert await actor.refused("$JS.API.DIRECT.GET.INTAKE", b'{"seq": 1}')
    assert await actor.refused("$JS.API.STREAM.MSG.GET.INTAKE", b'{"seq": 1}')
    assert await actor.refused("intake.>", subscribe=True)
    assert await actor.refused("intake.media.>", subscribe=True)
    assert await actor.refused("_INBOX.>", subscribe=True)
    assert await actor.refused("_INBOX.media.>", subscribe=True)
    # The streams are as they were.
    assert await ledger.ledger_size() == 3


async def test_an_actor_submits_and_gets_its_receipt_with_its_own_credentials(
    ledger: Harness,
) -> None:
    key, _ = await ledger.enrol("bank", ["owner"])
    creds = ledger.home.identities().issue("bank", ledger.home.path / "bank.creds")
    assert stat.S_IMODE(os.stat(creds).st_mode) == 0o600
    async with await LedgerClient.connect(
        ledger.url, key, trust=ledger.home.trust(), creds=creds
    ) as client:
        receipt = await client.submit(
            client.event(ev.SystemRegistered, **registration_fields("bank", "s1"))
        )
    assert receipt.index == 2


async def test_a_suspended_actor_is_refused_by_the_server_until_reinstated(
    ledger: Harness, actor: Conn
) -> None:
    reg = await ledger.regulator()
    assert not await actor.refused("intake.bank.SystemRegistered")
    await reg.submit(reg.event(ev.ActorSuspended, subject="actor/bank", reason="audit"))
    # The notary reloaded the server's users before it answered: the live
    # connection stays up, and its next publish is refused.
    assert await actor.refused("intake.bank.SystemRegistered")
    assert actor.nc is not None and actor.nc.is_connected
    await reg.submit(reg.event(ev.ActorReinstated, subject="actor/bank", reason="cleared"))
    assert not await actor.refused("intake.bank.SystemRegistered")


async def test_a_suspended_actors_sdk_submission_gets_no_receipt(ledger: Harness) -> None:
    _, client = await ledger.enrol("bank", ["owner"])
    reg = await ledger.regulator()
    await reg.submit(reg.event(ev.ActorSuspended, subject="actor/bank", reason="audit"))
    event = client.event(ev.SystemRegistered, **registration_fields("bank", "s1"))
    with pytest.raises(SubmissionTimeout):
        await client.submit(event, timeout=1.5)
    assert await ledger.ledger_size() == 3  # genesis, enrolment, suspension: no registration


async def test_an_actor_enrolled_later_can_connect_once_its_enrolment_is_receipted(
    ledger: Harness,
) -> None:
    key = generate("late")
    identities = ledger.home.identities()
    reg = await ledger.regulator()
    await reg.submit(reg.event(ev.ActorEnrolled, **enrolment_fields("late", ["owner"], key)))
    late = identities.require("late")  # generated by the notary at integration
    conn = await Conn().open(ledger.url, **late.connect_options())
    assert not await conn.refused("intake.late.SystemRegistered")
    await conn.close()


async def test_the_notary_cannot_update_or_delete_streams(ledger: Harness) -> None:
    notary = await as_identity(ledger, NOTARY)
    try:
        for stream in ("LEDGER", "REJECTED", "CHECKPOINTS", "INTAKE"):
            for op in ("UPDATE", "DELETE", "PURGE", "CREATE"):
                assert await notary.refused(f"$JS.API.STREAM.{op}.{stream}", b"{}"), (op, stream)
        assert await notary.refused("$JS.API.CONSUMER.DELETE.INTAKE.notary")
        assert await notary.refused("$JS.API.CONSUMER.CREATE.INTAKE.other", b"{}")
        assert await notary.refused("intake.bank.SystemRegistered")
        assert not await notary.refused("$JS.API.STREAM.INFO.LEDGER")
    finally:
        await notary.close()


async def test_readers_only_read_and_the_operator_only_creates(ledger: Harness) -> None:
    reader = await as_identity(ledger, READER)
    operator = await as_identity(ledger, OPERATOR)
    try:
        assert reader.nc is not None
        assert await last_sequence(reader.nc, LEDGER) == 1
        for subject in ("ledger.x.y", "checkpoint", "rejected.x", "intake.x.y"):
            assert await reader.refused(subject), subject
        assert await reader.refused("$JS.API.DIRECT.GET.INTAKE", b'{"seq": 1}')
        for stream in ("LEDGER", "CHECKPOINTS", "REJECTED", "INTAKE"):
            for op in ("DELETE", "PURGE"):
                assert await operator.refused(f"$JS.API.STREAM.{op}.{stream}", b"{}")
            if stream in ("LEDGER", "CHECKPOINTS"):  # history: its settings never change
                assert await operator.refused(f"$JS.API.STREAM.UPDATE.{stream}", b"{}")
        assert await operator.refused("$JS.API.STREAM.MSG.DELETE.LEDGER", b"{}")
        assert await operator.refused("$JS.API.CONSUMER.DELETE.INTAKE.notary")
        assert await operator.refused("ledger.x.y")
        assert not await operator.refused("$JS.API.STREAM.INFO.INTAKE")
    finally:
        await reader.close()
        await operator.close()


def test_a_suspended_actor_gets_deny_all_never_an_empty_allow_list() -> None:
    text = render_authorization(
        {"bank": "UBANK", "media": "UMEDIA", "ghost": "UG"},
        {
            "bank": False,
            "media": True,
        },
    )
    assert 'deny: [">"]' in text
    assert "UG" not in text  # an identity without an enrolment is no user
    assert "allow: []" not in text


def test_credential_files_are_private(tmp_path: Path) -> None:
    identities = BusIdentities(tmp_path / "bus")
    identity = identities.ensure("bank")
    issued = identities.issue("bank", tmp_path / "out" / "bank.creds")
    for path in (identity.seed_path, issued, identities.index_path):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    assert stat.S_IMODE(os.stat(identities.seeds_dir).st_mode) == 0o700
    assert issued.read_bytes().startswith(b"SU")


def test_an_invalid_authorization_is_refused_and_the_old_one_stays(
    tmp_path: Path, home: Home
) -> None:
    identities = home.identities()
    server = EmbeddedNats(
        tmp_path / "nats", authorization=render_authorization(identities.public_keys(), {})
    )
    with server:
        before = server.auth_path.read_text()
        with pytest.raises(Exception, match="nkey"):
            server.authorize(render_authorization({"bank": "Unot-a-key"}, {"bank": True}))
        assert server.auth_path.read_text() == before
        reader = identities.require(READER)

        async def still_works() -> bool:
            nc = await connect(server.url, **reader.connect_options())
            await nc.close()
            return True

        assert asyncio.run(still_works())
    with pytest.raises(NatsServerError):
        server.reload()


async def test_creds_issue_and_submit_with_creds_through_the_cli(
    ledger: Harness, tmp_path: Path
) -> None:
    key, _ = await ledger.enrol("bank", ["owner"])
    save_key(key, tmp_path / "bank.pem")
    (tmp_path / "register.json").write_text(
        json.dumps({"type": "SystemRegistered", **registration_fields("bank", "s1")})
    )
    env = {k: v for k, v in os.environ.items() if k != CREDS_ENV}  # no fallback identity
    where = ("--home", str(ledger.home.path), "--nats", ledger.url)
    issued = await cli(
        "creds",
        "issue",
        "bank",
        "-o",
        "bank.creds",
        "--home",
        str(ledger.home.path),
        env=env,
        cwd=tmp_path,
    )
    assert issued.returncode == 0, issued.stderr
    assert stat.S_IMODE(os.stat(tmp_path / "bank.creds").st_mode) == 0o600
    # --creds is what the connection uses: a seed the server does not know is refused
    stranger = BusIdentities(tmp_path / "other").ensure("bank").seed_path
    wrong = await cli(
        "submit", "register.json", "--key", "bank.pem", "--creds", str(stranger),
        "--timeout", "1", *where, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert wrong.returncode == 3 and "authorization violation" in wrong.stderr.lower()
    sent = await cli(
        "submit", "register.json", "--key", "bank.pem", "--creds", "bank.creds", "--json", *where,
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    # The registration is in LEDGER at the index its receipt names (after the
    # genesis, the enrolment and any heads leaf the notary's cadence added).
    from tests.test_verify import ledger_entries

    index = json.loads(sent.stdout)["index"]
    leaves = await ledger_entries(ledger)
    assert index >= 2 and getattr(leaves[index], "subject", None) == "system/s1"


def test_a_failing_reload_command_is_an_error(tmp_path: Path) -> None:
    apply = external_apply(tmp_path / "auth.conf", "exit 3")
    with pytest.raises(AuthConfigError, match="reload command"):
        apply(render_authorization({}, {}))
    assert stat.S_IMODE(os.stat(tmp_path / "auth.conf").st_mode) == 0o600


async def cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ailedger", *args, cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return subprocess.CompletedProcess(args, proc.returncode, out.decode(), err.decode())


def test_identity_names_are_actor_names_or_services_and_none_is_lost(tmp_path: Path) -> None:
    identities = BusIdentities(tmp_path / "bus")
    for bad in ("bank\n", "Bank", "a.b", "a*", ">", "_INBOX", ""):
        with pytest.raises(UnknownIdentity):
            identities.ensure(bad)
    names = [f"actor{i}" for i in range(24)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(identities.ensure, names))
    assert sorted(identities.public_keys()) == sorted(names)


async def test_the_operator_creates_the_notarys_consumer_with_its_ack_wait(
    nats_server: EmbeddedNats, home: Home
) -> None:
    async with running_notary(nats_server.url, home, ack_wait=2.5):
        nc = await connect(nats_server.url, **home.bus_identity(OPERATOR))
        try:
            info = await nc.jetstream().consumer_info(INTAKE, "notary")
        finally:
            await nc.close()
    assert info.config.ack_wait == 2.5
    assert info.config.durable_name == "notary"


async def test_credentials_issued_for_an_actor_the_notary_never_gave_an_identity(
    ledger: Harness, tmp_path: Path
) -> None:
    """A home from before authorization: its actors have no identity until
    `ailedger creds issue`; the notary picks it up with its next batch."""
    await ledger.enrol("bank", ["owner"])
    identities = ledger.home.identities()
    old = identities.require("bank")
    old_seed = tmp_path / "old.nk"
    old_seed.write_bytes(old.seed_path.read_bytes())
    # as if the home predated bus identities: bank has none
    keys = identities.public_keys()
    del keys["bank"]
    identities.index_path.write_text(json.dumps(keys))
    old.seed_path.unlink()
    _, media = await ledger.enrol("media", ["owner"])  # a reload without bank
    with pytest.raises(nats.errors.Error, match=r"(?i)authorization violation"):
        await Conn().open(ledger.url, nkeys_seed=str(old_seed), inbox_prefix="_INBOX.bank")
    creds = identities.issue("bank", tmp_path / "bank.creds")  # a new identity
    # the next batch, with no enrolment or suspension in it, reloads the users
    await ledger.register(media, "m1")
    conn = await Conn().open(ledger.url, nkeys_seed=str(creds), inbox_prefix="_INBOX.bank")
    assert not await conn.refused("intake.bank.SystemRegistered")
    await conn.close()


async def test_a_home_from_before_authorization_comes_up_with_it(tmp_path: Path) -> None:
    home = init_home(tmp_path / "home", origin=ORIGIN)
    shutil.rmtree(home.bus_dir)  # as made before bus identities existed
    stop = asyncio.Event()
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(home, stop, on_ready=lambda url, _n: ready.set_result(url)))
    try:
        url = await asyncio.wait_for(asyncio.shield(ready), 30)
        assert home.identities().get(NOTARY) is not None
        with pytest.raises(nats.errors.Error, match=r"(?i)authorization violation"):
            await Conn().open(url)
        reader = await Conn().open(url, **home.bus_identity(READER))
        assert reader.nc is not None and await last_sequence(reader.nc, LEDGER) == 1
        await reader.close()
    finally:
        stop.set()
        await task
