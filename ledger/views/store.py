"""Open the compliance view on the store its settings name: SQLite (embedded
default) or PostgreSQL (the "postgres" extra), as ``ledger.state.persistence``
chooses for every derived store."""

from __future__ import annotations

from collections.abc import Mapping

from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.utils import Environment

from ledger.views.compliance import ComplianceView, ComplianceViewRecorder, SQLiteComplianceView

__all__ = ["open_view"]


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
