"""Where derived state lives: the one choice of store for the notary's state,
the projector's state and the read models.

SQLite files by default (one database file per application); PostgreSQL when
the environment says ``PERSISTENCE_MODULE=eventsourcing.postgres`` (with the
``POSTGRES_*`` variables eventsourcing reads). Everything here is derived from
LEDGER and can be dropped and rebuilt.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eventsourcing.utils import resolve_topic

from ledger.formats.errors import UNAVAILABLE, USAGE, LedgerError, MissingExtra

__all__ = [
    "CONNECT_TIMEOUT",
    "DatabaseSettingsError",
    "DatabaseUnreachable",
    "check_database",
    "drop_stores",
    "sqlite_env",
    "store_envs",
]

#: Seconds to wait for PostgreSQL to answer, unless ``POSTGRES_CONNECT_TIMEOUT`` says otherwise
#: (eventsourcing's own default is 30, and it retries ten times).
CONNECT_TIMEOUT = 5
_REQUIRED = ("POSTGRES_DBNAME", "POSTGRES_HOST", "POSTGRES_USER")


class DatabaseUnreachable(LedgerError):
    """The PostgreSQL server of the derived stores does not answer (or refuses the login)."""

    code = "database_unreachable"
    exit_status = UNAVAILABLE


class DatabaseSettingsError(LedgerError):
    """``PERSISTENCE_MODULE`` asks for PostgreSQL but a ``POSTGRES_*`` setting is missing or bad."""

    code = "database_settings"
    exit_status = USAGE


def sqlite_env(path: Path) -> dict[str, str]:
    """eventsourcing settings for a store in one SQLite file (``synchronous=NORMAL``:
    derived data, see :mod:`ledger.state.sqlite`)."""
    return {"PERSISTENCE_MODULE": "ledger.state.sqlite", "SQLITE_DBNAME": str(path)}


def store_envs(state_dir: Path, suffix: str = "") -> tuple[dict[str, str], dict[str, str]]:
    """eventsourcing settings of the projector's state and view.

    SQLite files in ``state_dir`` by default; PostgreSQL when the environment says
    ``PERSISTENCE_MODULE=eventsourcing.postgres`` (with the ``POSTGRES_*``
    variables eventsourcing reads).
    """
    if os.environ.get("PERSISTENCE_MODULE") == "eventsourcing.postgres":
        env = {k: v for k, v in os.environ.items() if k.startswith(("POSTGRES_", "PERSISTENCE"))}
        env.setdefault("POSTGRES_CONNECT_TIMEOUT", str(CONNECT_TIMEOUT))
        check_database(env)
        return env, env
    return (
        sqlite_env(state_dir / f"projector{suffix}.sqlite"),
        sqlite_env(state_dir / f"views{suffix}.sqlite"),
    )


def _postgres_connect(env: Mapping[str, str]) -> Any:
    """A psycopg connection with the settings of ``env``, failing within the connect timeout
    with :class:`DatabaseUnreachable` naming host and port."""
    try:
        import psycopg
    except ImportError:
        raise MissingExtra("PostgreSQL persistence", "postgres") from None
    missing = [k for k in _REQUIRED if k not in env]
    topic = env.get("POSTGRES_GET_PASSWORD_TOPIC")
    if "POSTGRES_PASSWORD" not in env and not topic:
        missing.append("POSTGRES_PASSWORD")
    if missing:
        raise DatabaseSettingsError(f"PostgreSQL persistence needs {', '.join(missing)}")
    timeout = env.get("POSTGRES_CONNECT_TIMEOUT") or str(CONNECT_TIMEOUT)
    if not timeout.isdigit() or int(timeout) < 1:
        raise DatabaseSettingsError(f"POSTGRES_CONNECT_TIMEOUT must be whole seconds: {timeout!r}")
    host, port = env["POSTGRES_HOST"], env.get("POSTGRES_PORT") or "5432"
    try:
        return psycopg.connect(
            dbname=env["POSTGRES_DBNAME"],
            host=host,
            port=port,
            user=env["POSTGRES_USER"],
            password=resolve_topic(topic)() if topic else env["POSTGRES_PASSWORD"],
            connect_timeout=int(timeout),
        )
    except psycopg.Error as e:
        # psycopg: 'connection failed: connection to server at "h", port p failed: <why>'
        lines = str(e).strip().splitlines() or [type(e).__name__]
        why = " ".join(lines[0].rsplit("failed: ", 1)[-1].split())
        raise DatabaseUnreachable(
            f"cannot connect to PostgreSQL at {host}:{port} (database "
            f"{env['POSTGRES_DBNAME']!r}): {why}"
        ) from None


def check_database(env: Mapping[str, str]) -> None:
    """Fail fast, and clearly, if the PostgreSQL of ``env`` cannot be used.

    Raises :class:`~ledger.formats.errors.MissingExtra` without psycopg,
    :class:`DatabaseSettingsError` without the settings, :class:`DatabaseUnreachable`
    when nothing answers at the host and port within the connect timeout.
    """
    _postgres_connect(env).close()


def drop_stores(state_env: Mapping[str, str], view_env: Mapping[str, str]) -> None:
    """Delete the derived stores (they are rebuilt from LEDGER)."""
    if state_env.get("PERSISTENCE_MODULE") == "eventsourcing.postgres":
        schema = state_env.get("POSTGRES_SCHEMA") or "public"
        tables = [
            "ledgerstate_events",
            "ledgerstate_tracking",
            "ledgerstate_snapshots",
            "compliance_entries",
            "compliance_tracking",
        ]
        with _postgres_connect(state_env) as conn:
            from psycopg.sql import SQL, Identifier

            for table in tables:
                conn.execute(
                    SQL("DROP TABLE IF EXISTS {0}.{1} CASCADE").format(
                        Identifier(schema), Identifier(table)
                    )
                )
        return
    for env in (state_env, view_env):
        for suffix in ("", "-wal", "-shm"):
            Path(env["SQLITE_DBNAME"] + suffix).unlink(missing_ok=True)
