"""``ailedger monitor``: replay the ledger as a third party (services.monitor).

It registers itself on :mod:`ailedger.cli`'s app when imported (``ailedger.cli``
imports it last, so either may be imported first); it connects as the home's regulator-reader
bus identity (read-only: direct gets on LEDGER and CHECKPOINTS), like
``ailedger log``. Exit status: 0 all checked and well, 1 a finding (evidence
written), 2 a usage error, 3 NATS unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from ailedger.cli import (
    CliError,
    HomeOpt,
    NatsOpt,
    _connect,
    _emit,
    _home,
    app,
    one_line_errors,
)
from ledger.formats.errors import CHECK_FAILED, LedgerError
from ledger.formats.trust import TrustPolicy
from services.monitor import Monitor, MonitorFinding, Report, write_evidence

__all__ = ["monitor"]


class EvidenceUnwritable(LedgerError):
    """The monitor found a discrepancy but cannot write its evidence file (the message
    says what it found)."""

    code = "evidence_unwritable"
    exit_status = CHECK_FAILED


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _describe(report: Report) -> str:
    """What was checked, in four lines (each claim is one the monitor checked)."""
    newest = report.newest
    lines = [
        f"LEDGER: {_plural(report.size, 'sealed leaf', 'sealed leaves')} "
        f"({_plural(report.entries, 'entry', 'entries')}, "
        f"{_plural(report.heads_leaves, 'heads leaf', 'heads leaves')}) in "
        f"{_plural(report.batches, 'batch', 'batches')}: seals, subjects, prev chains, "
        f"{_plural(report.signatures, 'signature', 'signatures')} and the admission rules hold",
        f"head map: {_plural(report.subjects, 'subject', 'subjects')}; every heads leaf is "
        "the map recomputed from the entries before it",
    ]
    if newest is None:
        lines.append("checkpoints: none signed yet")
    else:
        cosigned = (
            f", {_plural(newest.cosignatures, 'witness cosignature', 'witness cosignatures')}"
            if newest.cosignatures
            else ""
        )
        lines.append(
            f"checkpoints: {report.checkpoints} checked, each the log's own tree ending with a "
            f"heads leaf; newest size {newest.size} (CHECKPOINTS #{newest.sequence}{cosigned})"
        )
    ledger, checkpoints = len(report.foreign_ledger), len(report.foreign_checkpoints)
    lines.append(
        f"foreign (skipped, no log key signed them): {ledger} in LEDGER, {checkpoints} in "
        "CHECKPOINTS"
        if ledger or checkpoints
        else "foreign: none"
    )
    return "".join(f"{line}\n" for line in lines)


@app.command()
@one_line_errors
def monitor(
    home: HomeOpt = None,
    nats: NatsOpt = None,
    once: Annotated[
        bool,
        typer.Option("--once", help="Check up to the newest checkpoint, print what, and stop."),
    ] = False,
    evidence: Annotated[
        Path | None,
        typer.Option(
            "--evidence",
            help="Where to write the evidence of a finding (default: "
            "./evidence-<finding>-<where>.json).",
        ),
    ] = None,
    trust: Annotated[
        Path | None,
        typer.Option(help="The trust policy to check against (default: the home's)."),
    ] = None,
    poll: Annotated[float, typer.Option(help="Seconds between reads when following.")] = 2.0,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="One JSON object per report (and for a finding, with --once too)."
        ),
    ] = False,
) -> None:
    """Replay LEDGER and CHECKPOINTS read-only (seals, prev chains, signatures, rules, head
    map, checkpoints); on any discrepancy write a verifiable evidence file and exit 1."""
    policy = TrustPolicy.load(trust) if trust is not None else _home(home).trust()
    if poll <= 0:
        raise CliError("--poll must be a positive number of seconds")

    def progress(report: Report) -> None:
        if as_json:
            _emit(report.to_json())
        else:
            sys.stdout.write(_describe(report))
        sys.stdout.flush()

    async def run() -> Report:
        nc = await _connect(home, nats, "ailedger-monitor", forever=not once)
        try:
            with tempfile.TemporaryDirectory(prefix="ailedger-monitor-") as work:
                mon = Monitor(nc, policy, Path(work))
                try:
                    if once:
                        return await mon.check()
                    stop = asyncio.Event()
                    loop = asyncio.get_running_loop()
                    for sig in (signal.SIGINT, signal.SIGTERM):
                        loop.add_signal_handler(sig, stop.set)
                    last: list[tuple[int, int]] = []

                    def changed(report: Report) -> None:
                        key = (report.size, report.checkpoints)
                        if last != [key]:
                            last[:] = [key]
                            progress(report)

                    return await mon.follow(stop, poll, changed)
                finally:
                    await asyncio.to_thread(mon.close)
        finally:
            with contextlib.suppress(Exception):
                await nc.drain()

    try:
        report = asyncio.run(run())
    except MonitorFinding as finding:
        path = evidence or Path(finding.default_name())  # in the current directory
        try:
            write_evidence(finding, path)
        except OSError as e:
            raise EvidenceUnwritable(
                f"{finding.message}; the evidence could not be written to {path}: {e.strerror}"
            ) from None
        if as_json:
            doc: dict[str, Any] = {
                "ok": False,
                "finding": finding.kind,
                "summary": finding.message,
                "evidence": str(path.resolve()),
            }
            _emit(doc)
        raise type(finding)(f"{finding.message}; evidence in {path}", finding.evidence) from None
    if once:
        progress(report)
