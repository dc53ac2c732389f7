"""The projector, SIGKILLed while following a live ledger, ends where a clean rebuild does.

Runs on SQLite (the embedded default) and on the local PostgreSQL server
(which must be reachable when ``CI`` is set: those tests fail, never skip).
"""

from __future__ import annotations

import asyncio
import getpass
import os
import random
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ledger.bus.home import Home
from ledger.bus.natsserver import EmbeddedNats
from ledger.bus.sealed import parse_leaf
from ledger.bus.streams import LEDGER, connect, get_message, last_sequence, read_stream
from ledger.formats.heads import HeadsLeaf
from ledger.formats.receipt import Receipt
from tests.conftest import NotaryProcess, deployments, prepare


def postgres_settings() -> dict[str, str]:
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": os.environ.get("PGDATABASE", "test"),
        "POSTGRES_HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "POSTGRES_PORT": os.environ.get("PGPORT", "5432"),
        "POSTGRES_USER": os.environ.get("PGUSER", getpass.getuser()),
        "POSTGRES_PASSWORD": os.environ.get("PGPASSWORD", ""),
    }


@pytest.fixture
def postgres_schema() -> Iterator[dict[str, str]]:
    """A private schema in the local PostgreSQL database, dropped afterwards."""
    import psycopg
    from psycopg.sql import SQL, Identifier

    settings = postgres_settings()
    connect = {
        "dbname": settings["POSTGRES_DBNAME"],
        "host": settings["POSTGRES_HOST"],
        "port": settings["POSTGRES_PORT"],
        "user": settings["POSTGRES_USER"],
        "password": settings["POSTGRES_PASSWORD"],
        "connect_timeout": 5,
    }
    try:
        conn = psycopg.connect(**connect, autocommit=True)
    except psycopg.OperationalError as e:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL must be reachable in CI: {e}")
        pytest.skip(f"no PostgreSQL here: {e}")
    schema = f"ailedger_{uuid.uuid4().hex[:10]}"
    with conn:
        conn.execute(SQL("CREATE SCHEMA {0}").format(Identifier(schema)))
        try:
            yield {**settings, "POSTGRES_SCHEMA": schema}
        finally:
            conn.execute(SQL("DROP SCHEMA {0} CASCADE").format(Identifier(schema)))


@dataclass
class ProjectorProcess:
    home: Home
    url: str
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def run(self, *args: str, timeout: float = 120) -> str:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "ailedger",
                *args,
                "--home",
                str(self.home.path),
                "--nats",
                self.url,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **self.env},
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def start(self) -> None:
        with self.log.open("ab") as out:
            out.write(b"\n--- start ---\n")
            command = [sys.executable, "-m", "ailedger", "project"]
            self.proc = subprocess.Popen(
                [*command, "--home", str(self.home.path), "--nats", self.url],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
            )

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(self.log.read_text())
            if b"projector up" in self.log.read_bytes().split(b"--- start ---")[-1]:
                return
            time.sleep(0.05)
        raise AssertionError(self.log.read_text())

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(30)


def digest_of(output: str) -> tuple[int, str]:
    m = re.search(r"(\d+) entries.*state digest ([0-9a-f]{64})", output, re.S)
    assert m, output
    return int(m.group(1)), m.group(2)


async def _settled_leaves(url: str, timeout: float = 60) -> tuple[int, int, int, int]:
    """Once the notary has sealed the heads leaf after the newest entry (it appends
    one before each checkpoint, none while idle): LEDGER's last sequence, the
    sequence of its newest entry and its numbers of entries and of heads leaves,
    read raw."""
    nc = await connect(url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            last = await last_sequence(nc, LEDGER)
            newest = await get_message(nc, LEDGER, last)
            if newest is not None and isinstance(parse_leaf(newest.data), HeadsLeaf):
                break
            assert time.monotonic() < deadline, "no heads leaf after the newest entry"
            await asyncio.sleep(0.5)
        leaves = [(m.sequence, parse_leaf(m.data)) async for m in read_stream(nc, LEDGER, 1, last)]
    finally:
        await nc.close()
    entries = [seq for seq, leaf in leaves if not isinstance(leaf, HeadsLeaf)]
    return last, entries[-1], len(entries), len(leaves) - len(entries)


def killed_projector_matches_a_rebuild(
    tmp_path: Path, server: EmbeddedNats, home: Home, env: dict[str, str]
) -> None:
    notary = NotaryProcess.in_dir(home, server.url, tmp_path)
    projector = ProjectorProcess(home, server.url, tmp_path / "projector.log", env)
    rng = random.Random(17)

    async def burst() -> list[Receipt | Exception]:
        clients = await prepare(server.url, home, owners=3)
        results: list[Receipt | Exception] = []
        try:
            for wave in range(6):  # entries keep arriving while the projector is killed
                tasks = [
                    c.submit_many(deployments(c, f"sys{i}", 40), concurrency=20, timeout=60)
                    for i, c in enumerate(clients)
                ]
                if wave in (1, 3, 4):
                    await asyncio.sleep(rng.uniform(0.05, 0.3))
                    await asyncio.to_thread(projector.kill)
                    await asyncio.to_thread(projector.start)
                    await asyncio.to_thread(projector.wait_ready)
                for r in await asyncio.gather(*tasks):
                    results.extend(r)
        finally:
            for c in clients:
                await c.close()
        return results

    try:
        notary.start()
        notary.wait_ready()
        projector.start()
        projector.wait_ready()
        results = asyncio.run(burst())
        assert all(isinstance(r, Receipt) for r in results)
        time.sleep(1)
        projector.kill()  # one last time, wherever it is
        assert projector.log.read_text().count("--- start ---") == 4
        # LEDGER no longer moves: the resumed projector and the rebuild read the same
        last, newest_entry, entries, heads = asyncio.run(_settled_leaves(server.url))
        assert entries == 1 + 3 + 3 + 6 * 3 * 40 and heads >= 1
        assert last == entries + heads  # no foreign message
        resumed = digest_of(projector.run("project", "--once"))
        rebuilt = projector.run("rebuild")
        assert "matches the signed checkpoint" in rebuilt or "no checkpoint" in rebuilt
        assert digest_of(rebuilt)[1] == resumed[1]
        # The numbers printed are LEDGER sequences: `project --once` the position of
        # the newest entry it applied (heads leaves are not projected), `rebuild` the
        # last sequence it read (the heads leaf LEDGER ends with).
        assert resumed[0] == newest_entry == last - 1
        assert digest_of(rebuilt)[0] == last
    finally:
        for p in (projector, notary):
            if p.proc is not None and p.proc.poll() is None:
                p.proc.kill()


def test_projector_killed_at_random_resumes_to_a_clean_rebuild_sqlite(
    tmp_path: Path, nats_server: EmbeddedNats, home: Home
) -> None:
    killed_projector_matches_a_rebuild(tmp_path, nats_server, home, {})


def test_projector_killed_at_random_resumes_to_a_clean_rebuild_postgres(
    tmp_path: Path, nats_server: EmbeddedNats, home: Home, postgres_schema: dict[str, str]
) -> None:
    killed_projector_matches_a_rebuild(tmp_path, nats_server, home, postgres_schema)
    # the stores really were in PostgreSQL
    import psycopg

    with psycopg.connect(
        dbname=postgres_schema["POSTGRES_DBNAME"],
        host=postgres_schema["POSTGRES_HOST"],
        user=postgres_schema["POSTGRES_USER"],
        password=postgres_schema["POSTGRES_PASSWORD"],
    ) as conn:
        rows = conn.execute(
            f"SELECT count(*) FROM {postgres_schema['POSTGRES_SCHEMA']}.compliance_entries"
        ).fetchone()
    assert rows is not None and rows[0] == 1 + 3 + 3 + 6 * 3 * 40
