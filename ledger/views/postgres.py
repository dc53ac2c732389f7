"""The compliance view on PostgreSQL (needs the "postgres" extra: psycopg)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

from ledger.views.compliance import (
    COLUMNS,
    SCHEMA_TRACKING,
    SCHEMA_VERSION,
    SEARCH_COLUMNS,
    TRACKING_NAME,
    ComplianceViewRecorder,
    EntryRow,
    epoch_micros,
    find_sql,
    row_of,
    row_values,
    select_rows,
    status_rows_sql,
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
                "key_fp text NOT NULL, payload text NOT NULL, slot text NOT NULL)"
            ).format(table)
        )
        self.sql_create_statements.append(
            SQL("CREATE INDEX IF NOT EXISTS {0} ON {1} (subject, slot, integrated_us, idx)").format(
                Identifier(self.entries_table + "_slot"), table
            )
        )
        for column in SEARCH_COLUMNS:
            if column != "subject":  # entries_slot starts with the subject
                self.sql_create_statements.append(
                    SQL("CREATE INDEX IF NOT EXISTS {0} ON {1} ({2}, idx)").format(
                        Identifier(f"{self.entries_table}_{column}"), table, Identifier(column)
                    )
                )
        self._table = table
        self.reader_table = tracking_table_name.removesuffix("_tracking") + "_reader"
        self._reader = SQL("{0}.{1}").format(
            Identifier(self.datastore.schema), Identifier(self.reader_table)
        )
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {0} (id int PRIMARY KEY CHECK (id = 0), "
                "tracking bigint NOT NULL, state bytea NOT NULL)"
            ).format(self._reader)
        )
        self._tracking = SQL("{0}.{1}").format(
            Identifier(self.datastore.schema), Identifier(self.tracking_table_name)
        )

    def _create_table(self, curs: Cursor[DictRow]) -> None:
        def exists(name: str) -> bool:
            curs.execute(
                "SELECT to_regclass(%s) IS NOT NULL AS found",
                [f'"{self.datastore.schema}"."{name}"'],
            )
            found = curs.fetchone()
            return bool(found and found["found"])

        if not exists(self.entries_table):
            # A reader state left by stores dropped without it: not this view's.
            curs.execute(SQL("DROP TABLE IF EXISTS {0}").format(self._reader))
        else:
            tracked = exists(self.tracking_table_name)
            version = self._schema_version(curs) if tracked else None
            if version != SCHEMA_VERSION:
                # Rows of another layout: emptied, and refilled from LEDGER.
                curs.execute(SQL("DROP TABLE {0}").format(self._table))
                curs.execute(SQL("DROP TABLE IF EXISTS {0}").format(self._reader))
                if tracked:
                    curs.execute(
                        SQL("DELETE FROM {0} WHERE application_name = %s").format(self._tracking),
                        [TRACKING_NAME],
                    )
        super()._create_table(curs)
        if self._schema_version(curs) != SCHEMA_VERSION:
            self._insert_tracking(curs, Tracking(SCHEMA_TRACKING, SCHEMA_VERSION))

    def _schema_version(self, curs: Cursor[DictRow]) -> int | None:
        curs.execute(
            SQL("SELECT MAX(notification_id) AS v FROM {0} WHERE application_name = %s").format(
                self._tracking
            ),
            [SCHEMA_TRACKING],
        )
        found = curs.fetchone()
        return None if found is None or found["v"] is None else int(found["v"])

    def record(
        self, rows: Sequence[EntryRow], tracking: Tracking, reader: bytes | None = None
    ) -> None:
        copy = SQL("COPY {0} ({1}) FROM STDIN").format(
            self._table, SQL(", ").join(map(Identifier, COLUMNS))
        )
        with self.datastore.transaction(commit=True) as c:
            with c.copy(copy) as rows_in:
                for values in row_values(rows):
                    rows_in.write_row(values)
            self._insert_tracking(c, tracking)
            if reader is not None:
                c.execute(
                    SQL(
                        "INSERT INTO {0} VALUES (0, %s, %s) ON CONFLICT (id) DO UPDATE "
                        "SET tracking = excluded.tracking, state = excluded.state"
                    ).format(self._reader),
                    [tracking.notification_id, reader],
                )

    def reader_state(self) -> tuple[int, bytes] | None:
        with self.datastore.transaction(commit=False) as c:
            c.execute(SQL("SELECT tracking, state FROM {0} WHERE id = 0").format(self._reader))
            found = c.fetchone()
            return None if found is None else (int(found["tracking"]), bytes(found["state"]))

    def _query(self, sql: str, params: Sequence[Any]) -> list[Any]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(SQL(sql).format(self._table), params)
            return list(c.fetchall())

    def _rows(self, sql: str, params: Sequence[Any]) -> list[EntryRow]:
        return [row_of([r[c] for c in COLUMNS]) for r in self._query(sql, params)]

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
        return self._rows(sql, params)

    def status_rows(
        self, system_subject: str, rulebook_subjects: Sequence[str], up_to_index: int, up_to: int
    ) -> list[EntryRow]:
        sql, params = status_rows_sql(
            "{0}", "%s", system_subject, rulebook_subjects, up_to_index, up_to
        )
        return self._rows(sql, params)

    def subjects(self, kind: str) -> list[str]:
        found = self._query(
            "SELECT DISTINCT subject FROM {0} WHERE subject LIKE %s ORDER BY subject", [f"{kind}/%"]
        )
        return [r["subject"] for r in found]

    def row(self, index: int) -> EntryRow | None:
        found = self._rows(f"SELECT {', '.join(COLUMNS)} FROM {{0}} WHERE idx = %s", [index])
        return found[0] if found else None

    def integrated_before(self, index: int) -> int | None:
        found = self._query(
            "SELECT integrated_us FROM {0} WHERE idx <= %s ORDER BY idx DESC LIMIT 1", [index]
        )
        return int(found[0]["integrated_us"]) if found else None

    def row_texts(self, after: int, limit: int) -> list[tuple[int, str]]:
        found = self._query(
            f"SELECT idx, concat_ws(chr(31), {', '.join(COLUMNS)}) AS text FROM {{0}} "
            "WHERE idx > %s ORDER BY idx LIMIT %s",
            [after, limit],
        )
        return [(int(r["idx"]), str(r["text"])) for r in found]

    def find(self, where: Sequence[tuple[str, str]], after: int, limit: int) -> list[EntryRow]:
        return self._rows(*find_sql("{0}", "%s", where, after, limit))

    def last_index(self, up_to: int | None = None) -> int | None:
        bound = 2**62 if up_to is None else up_to
        found = self._query("SELECT MAX(idx) AS m FROM {0} WHERE idx <= %s", [bound])
        return None if not found or found[0]["m"] is None else int(found[0]["m"])
