"""Which aggregates a state store has recorded, and their stored events, asked
in one query.

The duplicate check looks up an event id's record for every new submission and
nearly always finds none. eventsourcing answers a ``Repository.get`` that finds
nothing with a transaction, a full ``select_events`` and an exception; here one
indexed query (on the events table's primary key, ``originator_version = 1``:
every aggregate's first event) answers for a whole batch of ids.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from uuid import UUID

from eventsourcing.persistence import AggregateRecorder, StoredEvent
from eventsourcing.sqlite import SQLiteAggregateRecorder

__all__ = ["events_in_order", "latest_event", "recorded_ids", "stored_events"]

#: Ids per SQLite query (under SQLite's smallest limit of bound parameters, 999).
_CHUNK = 900


def recorded_ids(recorder: AggregateRecorder, ids: Sequence[UUID]) -> set[UUID]:
    """The ids in ``ids`` with a stored first event in ``recorder``."""
    if not ids:
        return set()
    if isinstance(recorder, SQLiteAggregateRecorder):
        return _sqlite(recorder, ids)
    try:
        from eventsourcing.postgres import PostgresAggregateRecorder
    except ImportError:  # pragma: no cover - without the postgres extra
        pass
    else:
        if (
            isinstance(recorder, PostgresAggregateRecorder)
            and recorder.datastore.originator_id_type == "uuid"
        ):
            return _postgres(recorder, ids)
    return {i for i in ids if recorder.select_events(i, lte=1, limit=1)}


def _sqlite(recorder: SQLiteAggregateRecorder, ids: Sequence[UUID]) -> set[UUID]:
    by_hex = {i.hex: i for i in ids}
    hexes = list(by_hex)
    found: set[UUID] = set()
    table = recorder.events_table_name
    # Outside a transaction: in SQLite's autocommit mode one SELECT reads one
    # consistent snapshot, and needs no BEGIN and ROLLBACK around it.
    with recorder.datastore.get_connection(commit=False) as conn:
        for start in range(0, len(hexes), _CHUNK):
            part = hexes[start : start + _CHUNK]
            marks = ",".join("?" * len(part))
            with conn.cursor() as curs:
                curs.execute(
                    f"SELECT originator_id FROM {table} "
                    f"WHERE originator_version=1 AND originator_id IN ({marks})",
                    part,
                )
                found.update(by_hex[row[0]] for row in curs.fetchall())
    return found


def _postgres(recorder: object, ids: Sequence[UUID]) -> set[UUID]:
    from eventsourcing.postgres import PostgresAggregateRecorder
    from psycopg.sql import SQL, Identifier

    assert isinstance(recorder, PostgresAggregateRecorder)
    statement = SQL(
        "SELECT originator_id FROM {schema}.{table} "
        "WHERE originator_version = 1 AND originator_id = ANY(%s)"
    ).format(
        schema=Identifier(recorder.datastore.schema),
        table=Identifier(recorder.events_table_name),
    )
    wanted = {str(i): i for i in ids}
    with recorder.datastore.get_connection() as conn, conn.cursor() as curs:
        curs.execute(statement, [list(ids)], prepare=True)
        return {wanted[str(row["originator_id"])] for row in curs.fetchall()}


def stored_events(
    recorder: AggregateRecorder, aggregate_id: UUID, *, gt: int | None = None
) -> list[StoredEvent]:
    """Every stored event of one aggregate (after version ``gt``), in order (none:
    not recorded).

    On SQLite one SELECT outside a transaction (``select_events`` wraps it in
    BEGIN and ROLLBACK and the pool's locking, which cost as much as the query);
    elsewhere ``select_events``."""
    if not isinstance(recorder, SQLiteAggregateRecorder):
        return list(recorder.select_events(aggregate_id, gt=gt))
    with recorder.datastore.get_connection(commit=False) as conn, conn.cursor() as curs:
        curs.execute(
            f"SELECT originator_version, topic, state FROM {recorder.events_table_name} "
            "WHERE originator_id=? AND originator_version>? ORDER BY originator_version",
            (aggregate_id.hex, 0 if gt is None else gt),
        )
        return [StoredEvent(aggregate_id, row[0], row[1], row[2]) for row in curs.fetchall()]


def latest_event(recorder: AggregateRecorder, aggregate_id: UUID) -> StoredEvent | None:
    """The stored event of one aggregate with the highest version (of a snapshot
    store: its latest snapshot), or None."""
    if not isinstance(recorder, SQLiteAggregateRecorder):
        found = list(recorder.select_events(aggregate_id, desc=True, limit=1))
        return found[0] if found else None
    with recorder.datastore.get_connection(commit=False) as conn, conn.cursor() as curs:
        curs.execute(
            f"SELECT originator_version, topic, state FROM {recorder.events_table_name} "
            "WHERE originator_id=? ORDER BY originator_version DESC LIMIT 1",
            (aggregate_id.hex,),
        )
        row = curs.fetchone()
    return None if row is None else StoredEvent(aggregate_id, row[0], row[1], row[2])


#: Rows per read of :func:`events_in_order`.
_PAGE = 5000


def events_in_order(recorder: AggregateRecorder) -> Iterator[tuple[str, int, str, bytes]]:
    """Every stored event as ``(aggregate id in hex, version, topic, state)``, by
    aggregate id and version: on SQLite read in that order from the primary key,
    elsewhere read as notifications and sorted."""
    if isinstance(recorder, SQLiteAggregateRecorder):
        with recorder.datastore.get_connection(commit=False) as conn, conn.cursor() as curs:
            # One statement in autocommit mode: one consistent snapshot.
            curs.execute(
                f"SELECT originator_id, originator_version, topic, state "
                f"FROM {recorder.events_table_name} ORDER BY originator_id, originator_version"
            )
            while rows := curs.fetchmany(_PAGE):
                for oid, version, topic, state in rows:
                    yield str(oid), version, topic, bytes(state)
        return
    select = getattr(recorder, "select_notifications", None)
    if select is None:  # pragma: no cover - every state recorder is a process recorder
        raise TypeError(f"{type(recorder).__name__} cannot list its events")
    out: list[tuple[UUID, int, str, bytes]] = []
    start = 1
    while notifications := select(start, _PAGE):
        for n in notifications:
            oid = n.originator_id if isinstance(n.originator_id, UUID) else UUID(n.originator_id)
            out.append((oid, n.originator_version, n.topic, bytes(n.state)))
        start = notifications[-1].id + 1
    out.sort(key=lambda row: (row[0], row[1]))
    for oid, version, topic, state in out:
        yield oid.hex, version, topic, state
