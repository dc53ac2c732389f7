"""What the workbench's pages show, read from the compliance view (the projector's
read model): no judgement is made here, only the library's answers arranged for a page.

Verdicts, findings and timelines are :class:`ledger.views.compliance.ComplianceView`'s;
the pages call these functions in a worker thread (SQLite reads).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from ledger.law.rules import VERDICTS, Finding, SystemVerdict
from ledger.views.compliance import ComplianceView, TimelineRow

__all__ = ["DueRow", "SystemRow", "dashboard", "due", "system_page"]


@dataclass(frozen=True)
class SystemRow:
    """A system on the dashboard: its verdict at the moment asked, or none (not
    registered yet then)."""

    system: str
    verdict: SystemVerdict | None


@dataclass(frozen=True)
class DueRow:
    system: str
    finding: Finding
    left: timedelta  # negative: overdue


def dashboard(view: ComplianceView, at: datetime) -> list[SystemRow]:
    """Every system with its verdict at ``at``, worst verdict first, then by name."""
    rows = []
    for system in view.systems():
        try:
            rows.append(SystemRow(system, view.status(system, at=at)))
        except ValueError:  # not registered at ``at``
            rows.append(SystemRow(system, None))
    rank = {v: i for i, v in enumerate(reversed(VERDICTS))}
    return sorted(
        rows,
        key=lambda r: (len(VERDICTS) if r.verdict is None else rank[r.verdict.verdict], r.system),
    )


def system_page(
    view: ComplianceView, system: str, at: datetime
) -> tuple[SystemVerdict | None, list[TimelineRow]]:
    """The system's verdict at ``at`` (None: not registered then) and its timeline up
    to ``at``. Raises LookupError for a system the ledger never registered."""
    if system not in view.systems():
        raise LookupError(f"no system {system}")
    try:
        verdict: SystemVerdict | None = view.status(system, at=at)
    except ValueError:
        verdict = None
    try:
        timeline = view.timeline(system, until=at)
    except LookupError:
        timeline = []
    return verdict, timeline


def due(
    view: ComplianceView, at: datetime, within: timedelta, systems: Sequence[str] | None = None
) -> list[DueRow]:
    """The findings still open at ``at`` whose deadline falls before ``at + within``
    (and those already past it), soonest first."""
    out = []
    for row in dashboard(view, at):
        if row.verdict is None or (systems is not None and row.system not in systems):
            continue
        for f in row.verdict.findings:
            if f.deadline is None or f.status == "late":
                continue
            if f.deadline <= at + within:
                out.append(DueRow(row.system, f, f.deadline - at))
    return sorted(out, key=lambda d: (d.left, d.system, d.finding.rule))
