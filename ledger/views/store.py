"""Open the compliance view on the store its settings name: SQLite (embedded
default) or PostgreSQL (the "postgres" extra), as ``ledger.state.persistence``
chooses for every derived store.

One writer at a time: the process that holds the exclusive lock on
``STATE_DIR/projector.lock`` (:func:`writing`) may bring the projector's stores
up to date (``ailedger project``, which ``ailedger up`` runs, holds it while it
follows LEDGER; a command holds it while it catches up). Any other process
reads the stores as they stand (:func:`writer_active` says whether a writer
runs): the CLI's reading commands and the web app behave alike.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator, Mapping
from pathlib import Path

from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.utils import Environment

from ledger.views.compliance import ComplianceView, ComplianceViewRecorder, SQLiteComplianceView

__all__ = ["WRITER_LOCK", "open_view", "writer_active", "writing"]

#: The file (in the home's state directory) whose exclusive lock its one writer holds.
WRITER_LOCK = "projector.lock"


@contextlib.contextmanager
def writing(state_dir: Path, *, wait: bool = False) -> Iterator[bool]:
    """Try to become the stores' writer: yields True while this process holds the lock
    (it may catch up), False when another process holds it (read the stores as they
    stand). ``wait``: block until the lock is free instead."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / WRITER_LOCK, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def writer_active(state_dir: Path) -> bool:
    """Whether another process writes the stores now (a running projector)."""
    with writing(state_dir) as mine:
        return not mine


def open_view(env: Mapping[str, str]) -> ComplianceView:
    """The view on the store ``env`` names (eventsourcing settings, e.g. SQLite file)."""
    factory = InfrastructureFactory[ComplianceViewRecorder].construct(
        Environment(ComplianceView.name, dict(env))
    )
    cls: type[ComplianceViewRecorder] = SQLiteComplianceView
    if str(env.get("PERSISTENCE_MODULE", "")).endswith("postgres"):
        # psycopg is an optional dependency (the "postgres" extra)
        from ledger.views.postgres import PostgresComplianceView

        cls = PostgresComplianceView
    return ComplianceView(view=factory.tracking_recorder(cls))
