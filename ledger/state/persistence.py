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

__all__ = ["drop_stores", "sqlite_env", "store_envs"]


def sqlite_env(path: Path) -> dict[str, str]:
    """eventsourcing settings for a state store in one SQLite file."""
    return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)}


def store_envs(state_dir: Path, suffix: str = "") -> tuple[dict[str, str], dict[str, str]]:
    """eventsourcing settings of the projector's state and view.

    SQLite files in ``state_dir`` by default; PostgreSQL when the environment says
    ``PERSISTENCE_MODULE=eventsourcing.postgres`` (with the ``POSTGRES_*``
    variables eventsourcing reads).
    """
    if os.environ.get("PERSISTENCE_MODULE") == "eventsourcing.postgres":
        env = {k: v for k, v in os.environ.items() if k.startswith(("POSTGRES_", "PERSISTENCE"))}
        return env, env
    return (
        sqlite_env(state_dir / f"projector{suffix}.sqlite"),
        sqlite_env(state_dir / f"views{suffix}.sqlite"),
    )


def drop_stores(state_env: Mapping[str, str], view_env: Mapping[str, str]) -> None:
    """Delete the derived stores (they are rebuilt from LEDGER)."""
    if state_env.get("PERSISTENCE_MODULE") == "eventsourcing.postgres":
        import psycopg
        from psycopg.sql import SQL, Identifier

        schema = state_env.get("POSTGRES_SCHEMA") or "public"
        tables = [
            "ledgerstate_events",
            "ledgerstate_tracking",
            "compliance_entries",
            "compliance_tracking",
        ]
        with psycopg.connect(
            dbname=state_env["POSTGRES_DBNAME"],
            host=state_env["POSTGRES_HOST"],
            port=state_env.get("POSTGRES_PORT", "5432"),
            user=state_env["POSTGRES_USER"],
            password=state_env.get("POSTGRES_PASSWORD", ""),
        ) as conn:
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
