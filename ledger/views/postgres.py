"""The compliance view on PostgreSQL (needs the "postgres" extra: psycopg)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from psycopg.sql import SQL, Identifier

from ledger.views.compliance import (
    COLUMNS,
    ComplianceViewRecorder,
    EntryRow,
    epoch_micros,
    row_of,
    select_rows,
)

__all__ = ["PostgresComplianceView"]


class PostgresComplianceView(PostgresTrackingRecorder, ComplianceViewRecorder):
    def __init__(self, datastore: Any, *, tracking_table_name: str, **kwargs: Any) -> None:
        super().__init__(datastore, tracking_table_name=tracking_table_name, **kwargs)
        self.entries_table = tracking_table_name.removesuffix("_tracking") + "_entries"
        table = SQL("{0}.{1}").format(
            Identifier(self.datastore.schema), Identifier(self.entries_table)
        )
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {0} ("
                "idx bigint PRIMARY KEY, subject text NOT NULL, type text NOT NULL, "
                "actor text NOT NULL, integrated_us bigint NOT NULL, integrated text NOT NULL, "
                "key_fp text NOT NULL, payload text NOT NULL)"
            ).format(table)
        )
        self.sql_create_statements.append(
            SQL("CREATE INDEX IF NOT EXISTS {0} ON {1} (subject, idx)").format(
                Identifier(self.entries_table + "_subject"), table
            )
        )
        self._table = table

    def record(self, rows: Sequence[EntryRow], tracking: Tracking) -> None:
        insert = SQL("INSERT INTO {0} ({1}) VALUES ({2})").format(
            self._table,
            SQL(", ").join(map(Identifier, COLUMNS)),
            SQL(", ").join(SQL("%s") for _ in COLUMNS),
        )
        with self.datastore.transaction(commit=True) as c:
            c.executemany(insert, [tuple(r.__dict__.values()) for r in rows])
            self._insert_tracking(c, tracking)

    def _query(self, sql: str, params: Sequence[Any]) -> list[Any]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(SQL(sql).format(self._table), params)
            return list(c.fetchall())

    def rows(
        self,
        subjects: Sequence[str],
        *,
        up_to_index: int | None = None,
        up_to_time: datetime | None = None,
    ) -> list[EntryRow]:
        sql, params = select_rows(
            "{0}",
            "%s",
            subjects,
            up_to_index,
            None if up_to_time is None else epoch_micros(up_to_time),
        )
        return [row_of([r[c] for c in COLUMNS]) for r in self._query(sql, params)]

    def subjects(self, kind: str) -> list[str]:
        found = self._query(
            "SELECT DISTINCT subject FROM {0} WHERE subject LIKE %s ORDER BY subject", [f"{kind}/%"]
        )
        return [r["subject"] for r in found]

    def row(self, index: int) -> EntryRow | None:
        found = self._query(f"SELECT {', '.join(COLUMNS)} FROM {{0}} WHERE idx = %s", [index])
        return row_of([found[0][c] for c in COLUMNS]) if found else None

    def all_rows(self, after: int, limit: int) -> list[EntryRow]:
        found = self._query(
            f"SELECT {', '.join(COLUMNS)} FROM {{0}} WHERE idx > %s ORDER BY idx LIMIT %s",
            [after, limit],
        )
        return [row_of([r[c] for c in COLUMNS]) for r in found]
