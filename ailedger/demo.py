"""``ailedger demo``: the DOMAIN.md scenario on a real embedded ledger, in a temporary directory.

It initialises a ledger (keys, trust policy, genesis), starts the embedded
nats-server and a notary on a simulated clock, plays months of signed events
from six actors, then prints the ledger and the submissions the notary refused
with their reason codes, read back from the LEDGER and REJECTED streams. It
exits non-zero if any outcome differs from what the scenario expects.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from ailedger.scenario import START, Scenario, Step, Submission
from ledger.bus.auth import GATEWAY, READER
from ledger.bus.client import LedgerClient, SubmissionRejected
from ledger.bus.home import Home, init_home
from ledger.bus.logview import HEADS_ROW_TYPE, LogRow, RejectionRow, read_log, read_rejections
from ledger.bus.proofs import export_bundle
from ledger.bus.streams import connect
from ledger.formats.receipt import Receipt
from ledger.formats.timeutil import SimulatedClock, format_time
from ledger.formats.tree import TreeStore
from ledger.state.persistence import store_envs
from ledger.verify.bundle import VerificationError, verify_bundle
from ledger.views.compliance import ComplianceView
from ledger.views.store import open_view
from services.notary import Notary, serve
from services.projector import rebuild

__all__ = ["DEMO_ORIGIN", "Outcome", "play", "run_demo"]

DEMO_ORIGIN = "demo.ailedger.kz/ai-registry"
#: Moments of the story at which the demo shows every system's verdict.
STATUS_DATES = (
    ("Feb 1", datetime(2026, 2, 1, 12, tzinfo=UTC)),
    ("Mar 6", datetime(2026, 3, 6, 12, tzinfo=UTC)),
    ("Mar 10", datetime(2026, 3, 10, 12, tzinfo=UTC)),
    ("Apr 16", datetime(2026, 4, 16, 12, tzinfo=UTC)),
    ("Jul 1", datetime(2026, 7, 1, 12, tzinfo=UTC)),
    ("Jul 16", datetime(2026, 7, 16, 12, tzinfo=UTC)),
    ("Aug 10", datetime(2026, 8, 10, 12, tzinfo=UTC)),
)
VERDICT_STYLE = {
    "compliant": "green",
    "at_risk": "yellow",
    "non_compliant": "red",
    "critical": "bold red",
}
BUNDLE_SYSTEM = "credit-scorer"


@dataclass(frozen=True)
class Outcome:
    step: Step
    result: str  # "accepted" or a reason code
    receipt: Receipt | None
    detail: str

    @property
    def as_expected(self) -> bool:
        return self.result == self.step.expect


async def play(
    url: str,
    home: Home,
    scenario: Scenario,
    clock: SimulatedClock,
    progress: Progress | None = None,
    notary: Notary | None = None,
) -> list[Outcome]:
    """Submit every step at its time through each actor's own client.

    A client connects with the actor's own bus identity while the server lets
    the actor submit (as ``notary`` last authorized it); the scenario's outsider
    and suspended actors go through the home's gateway identity (DESIGN §7's HTTP
    gateway, which forwards signed envelopes), so that the refusal shown is the
    notary's.
    """
    permissions = notary.permissions if notary is not None else None
    trust = home.trust()
    identities = home.identities()
    clients: dict[tuple[str, str], LedgerClient] = {}
    outcomes: list[Outcome] = []
    task = (
        progress.add_task("playing the scenario", total=len(scenario.steps)) if progress else None
    )
    try:
        for step in scenario.steps:
            clock.set(step.at)
            own = permissions is not None and permissions.authorizer.allowed.get(step.actor, False)
            identity = identities.get(step.actor if own else GATEWAY)
            name = identity.name if identity is not None else ""
            client = clients.get((step.actor, name))
            if client is None:
                key = scenario.keys.get(step.actor) or scenario.outsider
                creds = identity.seed_path if identity is not None else None
                client = await LedgerClient.connect(
                    url, key, trust=trust, clock=clock, creds=creds, identity=name or None
                )
                clients[(step.actor, name)] = client
            made = scenario.build(step)
            try:
                if isinstance(made, Submission):
                    receipt = await client.submit_envelope(
                        made.envelope, made.event_id, made.event_type
                    )
                else:
                    receipt = await client.submit(made)
                outcomes.append(Outcome(step, "accepted", receipt, ""))
            except SubmissionRejected as r:
                outcomes.append(Outcome(step, r.code, None, r.detail))
            if progress is not None and task is not None:
                progress.advance(task)
    finally:
        for c in clients.values():
            with contextlib.suppress(Exception):
                await c.close()
    return outcomes


def compliance_over_time(view: ComplianceView, dates: Sequence[tuple[str, datetime]]) -> Table:
    """Every system's verdict (and the rules it breaks) at each of ``dates``."""
    table = Table(
        title="Compliance over time (rules R1-R8 under the rulebook in force)",
        title_justify="left",
        header_style="bold",
    )
    table.add_column("system")
    for label, _ in dates:
        table.add_column(label)
    for system in view.systems():
        cells = []
        for _, at in dates:
            try:
                v = view.status(system, at=at)
            except ValueError:
                cells.append("-")
                continue
            rules = " ".join(f.rule for f in v.findings if f.status != "late")
            style = VERDICT_STYLE[v.verdict]
            cells.append(f"[{style}]{v.verdict}[/]" + (f"\n{rules}" if rules else ""))
        table.add_row(system, *cells)
    return table


def ledger_table(rows: list[LogRow], title: str = "LEDGER") -> Table:
    table = Table(title=title, title_justify="left", header_style="bold")
    table.add_column("index", justify="right")
    table.add_column("integrated")
    table.add_column("signer")
    table.add_column("type")
    table.add_column("subject")
    table.add_column("prev", justify="right")
    for r in rows:
        table.add_row(
            str(r.index),
            format_time(r.integrated),
            r.signer,
            r.type,
            r.subject,
            "-" if r.prev is None else str(r.prev),
        )
    return table


def rejections_table(rows: list[RejectionRow], title: str = "REJECTED") -> Table:
    table = Table(title=title, title_justify="left", header_style="bold")
    table.add_column("#", justify="right")
    table.add_column("submitted on")
    table.add_column("reason code", style="bold red")
    table.add_column("why")
    for r in rows:
        table.add_row(str(r.sequence), r.intake_subject, r.code, r.detail)
    return table


async def _run(workdir: Path, console: Console) -> int:
    home = init_home(workdir / "ledger", origin=DEMO_ORIGIN, at=START, local_witness=True)
    home.identities().ensure(GATEWAY)
    console.print(f"[bold]ailedger demo[/] in {workdir}")
    console.print(f"  trust policy  {home.trust_path}")
    console.print(f"  origin        {DEMO_ORIGIN}")
    console.print(f"  witness       {home.witness_name()} (local, quorum 1: a demonstration)")
    clock = SimulatedClock(START)
    scenario = Scenario(home.regulator_key())
    stop = asyncio.Event()
    # The home's own witness, on the simulated clock: a demonstration of the
    # cosigning every checkpoint needs (quorum 1 in the demo's trust policy).
    # (Imported here: HTTP serving is not loaded by every `ailedger` command.)
    from services.witness.service import start_local_witness

    witness_url, witness_task = await start_local_witness(home, stop, clock)
    ready: asyncio.Future[tuple[str, Notary]] = asyncio.get_running_loop().create_future()
    notary_task = asyncio.create_task(
        serve(
            home,
            stop,
            clock=clock,
            on_ready=lambda url, n: ready.set_result((url, n)),
            witnesses=[witness_url],
            # One checkpoint, signed when the scenario is played (below), so the
            # output is the same on a fast and a slow machine.
            checkpoint_interval=3600.0,
        )
    )
    try:
        url, notary = await asyncio.wait_for(asyncio.shield(ready), 30)
        console.print(f"  nats-server   {url} (embedded, store {home.nats_dir})\n")
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            console=console,
            transient=True,
            disable=not console.is_terminal,  # a bar only on a terminal
        ) as progress:
            outcomes = await play(url, home, scenario, clock, progress, notary)
        await notary.checkpoint()  # cover everything, whatever the cadence
        nc = await connect(url, name="ailedger-demo", **home.bus_identity(READER))
        try:
            log_rows = await read_log(nc, trust=home.trust())
            rejected = await read_rejections(nc)
            with TreeStore(home.tree_path) as tree:
                bundle = await export_bundle(
                    nc, tree, subjects=[f"system/{BUNDLE_SYSTEM}"], claim=True, trust=home.trust()
                )
            state_env, view_env = store_envs(home.state_dir)
            rebuilt = await rebuild(nc, home, state_env, view_env)
            over_time = compliance_over_time(open_view(view_env), STATUS_DATES)
        finally:
            await nc.drain()
    finally:
        stop.set()
        if not ready.done():
            ready.cancel()
        await notary_task
        await witness_task

    heads = sum(1 for r in log_rows if r.type == HEADS_ROW_TYPE)
    console.print(
        ledger_table(
            log_rows,
            f"LEDGER: {len(log_rows) - heads} entries and {heads} heads "
            f"{'leaf' if heads == 1 else 'leaves'} (the notary's), index 0 is the genesis",
        )
    )
    console.print()
    console.print(
        rejections_table(rejected, f"REJECTED: {len(rejected)} submissions, kept with their bytes")
    )
    wrong = [o for o in outcomes if not o.as_expected]
    accepted = sum(1 for o in outcomes if o.result == "accepted")
    console.print(
        f"\n{len(outcomes)} submissions from {len(scenario.keys)} actors over "
        f"{(scenario.steps[-1].at - START).days} simulated days: {accepted} accepted with "
        f"verified receipts, {len(outcomes) - accepted} refused with reason codes."
    )
    for o in wrong:
        console.print(
            f"[bold red]unexpected:[/] {o.step.actor} {o.step.what}: got {o.result}, "
            f"expected {o.step.expect} {o.detail}"
        )
    console.print()
    console.print(over_time)
    console.print(
        f"(state rebuilt from LEDGER by the projector: {rebuilt.entries} entries, "
        f"state digest {rebuilt.digest[:16]}…; `ailedger status SYSTEM --at DATE` for findings)",
        highlight=False,
    )
    path = workdir / f"{BUNDLE_SYSTEM}.bundle.json"
    path.write_bytes(bundle)
    console.print(f"\n[bold]Evidence bundle[/] for {BUNDLE_SYSTEM}: {path}")
    console.print(
        f"$ ailedger verify {path.relative_to(workdir)} --trust "
        f"{home.trust_path.relative_to(workdir)}   (offline, in {workdir})",
        highlight=False,
    )
    try:
        report = verify_bundle(bundle, home.trust(), recompute=True)
    except VerificationError as e:
        console.print(f"[bold red]FAILED[/] {e}")
        return 1
    console.print("VERIFIED")
    for line in report.lines:
        console.print(f"  {line}", highlight=False, soft_wrap=True)
    return 1 if wrong else 0


def run_demo(console: Console, keep: Path | None = None) -> int:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        return asyncio.run(_run(keep, console))
    with tempfile.TemporaryDirectory(prefix="ailedger-demo-") as tmp:
        return asyncio.run(_run(Path(tmp), console))
