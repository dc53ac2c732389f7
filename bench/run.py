"""ailedger benchmarks: every figure beside a baseline measured in the same run (DESIGN §8).

    python bench/run.py --quick            # 2*10^4 entries, 10^3 subjects (under 2 minutes)
    python bench/run.py --full             # 10^6 entries, 10^5 subjects (long; not in CI)
    python bench/run.py --quick --profile  # and py-spy on the notary during the ingest

Writes ``bench/results.json`` (the named metrics, see :data:`METRICS`),
``bench/results.meta.json`` (mode, load, cores, commit, CPU per process, details)
and ``bench/RESULTS.md`` (the table, the details, the distance to the compass,
then ``bench/NOTES.md``).

The ledger runs as in production: ``ailedger up`` without ``--nats`` (the home's
embedded nats-server with NATS authorization: nkey users for the services and
for each enrolled actor), LEDGER batches sealed, receipts v2, the head map with
a heads leaf before each checkpoint, and witness quorum 1 with the checkpoint
cadence of ``ailedger up``'s defaults. The witness is the home's own (its key,
its state), run as its own process (``ailedger witness``) and named in the
home's ``config.json``, so that its CPU and memory are its own; ``ailedger up``
would otherwise run the same witness in the notary's process.

Ingest: several client processes (``--workers``), each with its own
``LedgerClient`` connections under its owners' bus identities; every envelope is
signed before the measured run (signing is the client's cost, outside it).
Baselines (same machine, same run): raw nats-py appends of payloads of the
ingest envelopes' size to a stream with LEDGER's settings on a nats-server made
by the same code (``EmbeddedNats``: ``sync_interval: always``, authorization
on): one ``publish_async`` per message, and ADR-50 atomic batches of 1,000; a
raw batched direct-get read of LEDGER; ``cryptography``'s Ed25519 verification
on one core.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import multiprocessing as mp
import os
import platform
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.bus.auth import READER, SUPERUSER, BusIdentities, render_authorization
from ledger.bus.client import LedgerClient, SubmissionError, sign_event
from ledger.bus.home import Home, init_home
from ledger.bus.natsserver import EmbeddedNats
from ledger.bus.proofs import SignedCheckpoint, export_bundle, tlog_proof
from ledger.bus.streams import (
    CHECKPOINTS,
    HDR_MSG_ID,
    HEADS_SUBJECT,
    LEDGER,
    api,
    connect,
    last_message,
    last_sequence,
    publish_atomic,
    read_stream,
    read_subject,
    stream_configs,
)
from ledger.formats.checkpoint import Checkpoint, CosignatureVerifier
from ledger.formats.keys import ActorKey, generate, load_key, save_key
from ledger.formats.note import Signer, Verifier, Verifiers, open_note, sign_note
from ledger.formats.timeutil import SystemClock
from ledger.formats.tree import TreeStore
from ledger.formats.trust import TrustPolicy
from ledger.law import events as ev
from ledger.state.persistence import store_envs
from ledger.verify.bundle import verify_bundle
from ledger.views.store import open_view
from services.projector import rebuild

HERE = Path(__file__).resolve().parent
ORIGIN = "bench.ailedger.kz/log"
CLK_TCK = os.sysconf("SC_CLK_TCK")

#: The names of bench/results.json, in order (issue 11).
METRICS = (
    "ingest_eps",
    "raw_publish_eps",
    "raw_batch_eps",
    "receipt_p99_ms_1000",
    "receipt_p99_ms_half_capacity",
    "rebuild_eps",
    "raw_read_eps",
    "verify_eps",
    "ed25519_core_eps",
    "status_p99_ms",
    "inclusion_p99_ms",
    "consistency_p99_ms",
    "rss_notary_mb",
    "rss_projector_mb",
    "rss_witness_mb",
)


@dataclass(frozen=True)
class Plan:
    """What one run does: sizes per mode."""

    mode: str
    entries: int  # setup (3 per subject) + measured ingest
    subjects: int  # systems
    owners: int
    workers: int
    in_flight: int  # submissions in flight over all workers
    paced_seconds: float
    raw_single: int
    raw_batched: int
    ed25519: int
    status_queries: int
    #: Quick mode stops taking presigned envelopes after this many seconds of ingest.
    ingest_seconds: float | None = None

    @property
    def deployments(self) -> int:
        return self.entries - 3 * self.subjects


def make_plan(args: argparse.Namespace) -> Plan:
    if args.full:
        plan = Plan(
            "full", 1_000_000, 100_000, 8, args.workers, 800, 10, 50_000, 200_000, 50_000, 2_000
        )
    else:  # at most 2*10^4 entries, the ingest at most 12 s: about 2 minutes in all
        plan = Plan("quick", 20_000, 500, 8, args.workers, 800, 3, 5_000, 30_000, 5_000, 300, 12.0)
    if args.entries or args.subjects:
        entries = args.entries or plan.entries
        subjects = args.subjects or max(1, entries // 10)
        plan = Plan(
            f"{plan.mode} (--entries {entries} --subjects {subjects})",
            entries,
            subjects,
            plan.owners,
            plan.workers,
            plan.in_flight,
            plan.paced_seconds,
            plan.raw_single,
            plan.raw_batched,
            plan.ed25519,
            plan.status_queries,
            plan.ingest_seconds,
        )
    if plan.deployments < plan.subjects:
        raise SystemExit("--entries must be at least 4 x --subjects (3 setup events each)")
    if not 1 <= plan.workers <= plan.owners:
        raise SystemExit(f"--workers: 1 to {plan.owners}")
    return plan


# --- small helpers ---------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads, not its children), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def runqueue_seconds(pid: int) -> float:
    """Time the process's threads were runnable but waited for a CPU (schedstat),
    summed over its threads alive now."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[1])
            except (OSError, IndexError, ValueError):
                continue
    except OSError:
        return float("nan")
    return total / 1e9


def rss_mb(pid: int, key: str = "VmRSS") -> float:
    """VmRSS (or VmHWM: the peak) of a running process, in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def split(count: int, parts: int) -> list[int]:
    """``count`` as ``parts`` near-equal shares."""
    return [count // parts + (1 if i < count % parts else 0) for i in range(parts)]


def up_defaults() -> str:
    """The checkpoint cadence the notary (``ailedger notary``, a part of ``ailedger up``)
    runs with unless told (read, not assumed)."""
    import inspect

    from ailedger.cli import notary

    try:
        p = inspect.signature(notary).parameters
        every, interval = p["checkpoint_every"].default, p["checkpoint_interval"].default
    except (KeyError, ValueError, TypeError):
        return "its defaults"
    return f"{every:,} entries or {interval:g} s"


def load_average() -> float:
    return os.getloadavg()[0]


def git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=HERE,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (with uncommitted changes)" if dirty else "")


class Child:
    """A service started by the bench as its own process (stopped by its PID)."""

    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        self.name = name
        self.log = log
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            argv, stdout=log.open("w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        self.rusage: resource.struct_rusage | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    async def wait_for(self, needle: str, timeout: float) -> str:
        """The first line of its output containing ``needle``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.text().splitlines():
                if needle in line:
                    return line
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited ({self.proc.returncode}): see {self.log}")
            await asyncio.sleep(0.05)
        raise SystemExit(f"{self.name}: no {needle!r} within {timeout:.0f} s: see {self.log}")

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM, then SIGKILL; keeps its rusage (ru_maxrss: its peak RSS)."""
        if self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            if pid:
                self.proc.returncode = os.waitstatus_to_exitcode(status)
                self.rusage = usage
                return
            time.sleep(0.05)
        self.proc.kill()
        _, status, self.rusage = os.wait4(self.pid, 0)
        self.proc.returncode = os.waitstatus_to_exitcode(status)


class RssSampler(threading.Thread):
    """RSS of some processes once a second while a phase runs (to show it flat)."""

    def __init__(self, pids: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.samples: dict[str, list[float]] = defaultdict(list)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(1.0):
            for name, pid in self.pids.items():
                self.samples[name].append(rss_mb(pid))

    def stop(self) -> dict[str, float]:
        self.done.set()
        self.join()
        return {name: max(v) for name, v in self.samples.items() if v}

    def shape(self, name: str) -> str:
        """RSS at the first sample and at each quarter of the phase: flat or growing."""
        v = self.samples.get(name, [])
        if not v:
            return "no samples"
        points = [v[0]] + [v[min(len(v) - 1, math.ceil(len(v) * q / 4) - 1)] for q in (1, 2, 3, 4)]
        return " -> ".join(f"{x:.0f}" for x in points) + f" MB ({len(v)} samples, 1 s apart)"


# --- baselines -------------------------------------------------------------------------


def ed25519_rate(n: int, size: int) -> float:
    """Verifications per second of ``cryptography``'s Ed25519 on one core."""
    key = Ed25519PrivateKey.generate()
    public = key.public_key()
    msgs = [os.urandom(size) for _ in range(n)]
    sigs = [key.sign(m) for m in msgs]
    start = time.perf_counter()
    for m, s in zip(msgs, sigs, strict=True):
        public.verify(s, m)
    return n / (time.perf_counter() - start)


async def measure_baselines(tmp: Path, plan: Plan, size: int) -> dict[str, float]:
    out = {"ed25519": ed25519_rate(plan.ed25519, size)}
    out.update(await raw_publish_rates(tmp, plan, size))
    print(
        f"  . Ed25519 {out['ed25519']:,.0f}/s on one core; raw appends {out['single']:,.0f}/s "
        f"single, {out['batched']:,.0f}/s in batches",
        flush=True,
    )
    return out


async def raw_publish_rates(tmp: Path, plan: Plan, size: int) -> dict[str, float]:
    """Raw appends on a nats-server made like the ledger's (EmbeddedNats: the same
    configuration, ``sync_interval: always``, authorization on), to streams with
    LEDGER's settings: one ``publish_async`` per message, and atomic batches of 1,000."""
    identities = BusIdentities(tmp / "bus")
    admin = identities.ensure(SUPERUSER)
    auth = render_authorization({SUPERUSER: admin.public}, {})
    out: dict[str, float] = {}
    with EmbeddedNats(tmp / "nats", server_name="raw", authorization=auth) as server:
        nc = await connect(server.url, **admin.connect_options())
        for name in ("RAW1", "RAW2"):
            config = dict(stream_configs()[LEDGER], name=name, subjects=[f"{name.lower()}.>"])
            created = await api(nc, f"STREAM.CREATE.{name}", config)
            if "error" in created:
                raise SystemExit(f"raw stream: {created['error']}")
        js = nc.jetstream()
        data = os.urandom(size)
        subjects = [f"raw1.system.sys{i}" for i in range(min(plan.subjects, 10_000))]
        n = plan.raw_single
        cpu0, start = cpu_seconds(server.pid), time.perf_counter()
        futures = [
            await js.publish_async(subjects[i % len(subjects)], data, headers={HDR_MSG_ID: str(i)})
            for i in range(n)
        ]
        await asyncio.gather(*futures)
        wall = time.perf_counter() - start
        out["single"] = n / wall
        out["single_server_us"] = (cpu_seconds(server.pid) - cpu0) / n * 1e6
        n = plan.raw_batched
        cpu0, start = cpu_seconds(server.pid), time.perf_counter()
        for b in range(n // 1000):
            batch: list[tuple[str, bytes, dict[str, str]]] = [
                (f"raw2.system.sys{i % 10_000}", data, {}) for i in range(1000)
            ]
            await publish_atomic(nc, batch, b * 1000)
        wall = time.perf_counter() - start
        out["batched"] = n // 1000 * 1000 / wall
        out["batched_server_us"] = (cpu_seconds(server.pid) - cpu0) / n * 1e6
        await nc.close()
    return out


async def raw_read_rate(url: str, options: dict[str, Any], last: int, batch: int = 1000) -> float:
    """LEDGER 1..last read raw with nats-py: batched direct gets of ``batch`` messages,
    one request in flight, only the sequence header looked at (DESIGN §8's baseline)."""
    nc = await connect(url, name="bench-raw-read", **options)
    inbox = nc.new_inbox()
    queue: asyncio.Queue[Any] = asyncio.Queue()

    async def deliver(msg: Any) -> None:
        queue.put_nowait(msg)

    sub = await nc.subscribe(inbox, cb=deliver)
    start = time.perf_counter()
    seq, count = 1, 0
    while seq <= last:
        body = json.dumps({"seq": seq, "batch": min(batch, last - seq + 1)}).encode()
        await nc.publish(f"$JS.API.DIRECT.GET.{LEDGER}", body, reply=inbox)
        while True:
            msg = await asyncio.wait_for(queue.get(), 10)
            headers = msg.headers or {}
            if "Status" in headers:
                break
            seq = int(headers["Nats-Sequence"]) + 1
            count += 1
    rate = count / (time.perf_counter() - start)
    await sub.unsubscribe()
    await nc.close()
    if count != last:
        raise SystemExit(f"raw read of LEDGER: {count} messages, expected {last}")
    return rate


async def library_read_rate(nc: Any, last: int) -> float:
    """The same read through ledger.bus.streams.read_stream (what the readers use)."""
    start = time.perf_counter()
    count = 0
    async for _ in read_stream(nc, LEDGER, 1, last):
        count += 1
    return count / (time.perf_counter() - start)


# --- client worker processes -----------------------------------------------------------

Job = tuple[str, str, str, bytes]  # owner, event id, event type, signed envelope


def _event(kind: str, owner: str, system: str, n: int, clock: SystemClock) -> ev.Event:
    common: dict[str, Any] = {
        "v": 1,
        "event_id": ev.new_event_id(),
        "actor": owner,
        "signed_at": clock.now(),
        "subject": f"system/{system}",
    }
    if kind == "register":
        return ev.SystemRegistered(
            **common,
            name=f"System {system}",
            purpose="bench",
            sector="finance",
            owner=owner,
            holder=owner,
            generates_synthetic_content=False,
        )
    if kind == "classify":
        return ev.RiskClassified(
            **common, risk_level="high", autonomy="low", critical_ict=False, rationale="bench"
        )
    if kind == "operate":
        return ev.OperationStatusChanged(**common, status="in_operation", reason="bench")
    return ev.VersionDeployed(
        **common,
        version=f"{n}-" + "x" * 180,
        artifact_sha256=hashlib.sha256(str(n).encode()).hexdigest(),
    )


def worker_main(conn: Connection, cfg: dict[str, Any]) -> None:
    """One client process: its owners' LedgerClients; commands from the parent."""
    asyncio.run(_worker(conn, cfg))


async def _worker(conn: Connection, cfg: dict[str, Any]) -> None:
    trust = TrustPolicy.load(Path(cfg["trust"]))
    keys: dict[str, ActorKey] = {name: load_key(Path(p), name) for name, p in cfg["owners"]}
    systems: list[tuple[str, str]] = [(s[0], s[1]) for s in cfg["systems"]]
    clients: dict[str, LedgerClient] = {}
    clock = SystemClock()
    pending: list[Job] = []
    serial = cfg["index"] * 10**8

    def presign(kind: str, count: int) -> list[Job]:
        nonlocal serial
        jobs = []
        targets = systems if kind != "deploy" else [systems[i % len(systems)] for i in range(count)]
        for system, owner in targets:
            serial += 1
            e = _event(kind, owner, system, serial, clock)
            jobs.append((owner, e.event_id, e.type_name, sign_event(e, keys[owner])))
        return jobs

    async def submit(job: Job, timeout: float) -> str | None:
        owner, eid, kind, env = job
        try:
            await clients[owner].submit_envelope(env, eid, kind, timeout=timeout)
        except SubmissionError as e:
            return f"{type(e).__name__}: {e}"
        return None

    async def run_all(jobs: list[Job], in_flight: int, seconds: float | None) -> dict[str, Any]:
        errors: list[str] = []
        it = iter(jobs)
        sent = 0
        start = time.monotonic()
        deadline = start + seconds if seconds else math.inf

        async def lane() -> None:
            nonlocal sent
            for job in it:
                sent += 1
                err = await submit(job, 1800)
                if err:
                    errors.append(err)
                if time.monotonic() > deadline:
                    return

        await asyncio.gather(*(lane() for _ in range(min(in_flight, len(jobs)) or 1)))
        return {
            "n": sent,
            "start": start,
            "end": time.monotonic(),
            "errors": errors[:5],
            "error_count": len(errors),
        }

    async def paced(
        jobs: list[Job], rate: float, t0: float, slot: int, slots: int
    ) -> dict[str, Any]:
        latencies: list[float] = []
        errors: list[str] = []

        async def one(job: Job, due: float) -> None:
            err = await submit(job, 600)
            if err:
                errors.append(err)
            else:  # from the scheduled time: a late send counts against the latency
                latencies.append(time.monotonic() - due)

        tasks = []
        for i, job in enumerate(jobs):
            due = t0 + (i * slots + slot) / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(job, due)))
        await asyncio.gather(*tasks)
        return {"latencies": latencies, "errors": errors[:5], "error_count": len(errors)}

    while True:
        cmd, *args = await asyncio.to_thread(conn.recv)
        if cmd == "connect":
            seeds = Path(cfg["home"]) / "bus" / "seeds"
            for name in keys:
                clients[name] = await LedgerClient.connect(
                    cfg["url"], keys[name], trust=trust, creds=seeds / f"{name}.nk", identity=name
                )
            conn.send({"ok": True})
        elif cmd == "presign":
            kind, count = args
            t = time.process_time()
            pending = presign(kind, count)
            size = sum(len(j[3]) for j in pending) / max(1, len(pending))
            conn.send({"n": len(pending), "size": size, "cpu": time.process_time() - t})
        elif cmd == "run":
            conn.send(await run_all(pending, *args))
            pending = []
        elif cmd == "paced":
            rate, t0, slot, slots = args
            conn.send(await paced(pending, rate, t0, slot, slots))
            pending = []
        elif cmd == "close":
            for c in clients.values():
                await c.close()
            conn.send({"ok": True})
            return


class Workers:
    """The client processes (spawned: no inherited event loop or threads)."""

    def __init__(self, n: int, cfgs: list[dict[str, Any]]) -> None:
        ctx = mp.get_context("spawn")
        self.conns: list[Connection] = []
        self.procs: list[Any] = []
        for cfg in cfgs[:n]:
            parent, child = ctx.Pipe()
            p = ctx.Process(
                target=worker_main, args=(child, cfg), name=f"bench-client-{cfg['index']}"
            )
            p.start()
            self.conns.append(parent)
            self.procs.append(p)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    async def ask(self, commands: Sequence[tuple[Any, ...]]) -> list[dict[str, Any]]:
        """One command to each worker, their answers in order."""
        for command, c in zip(commands, self.conns, strict=True):
            c.send(command)
        return list(await asyncio.gather(*(asyncio.to_thread(c.recv) for c in self.conns)))

    async def all(self, *cmd: Any) -> list[dict[str, Any]]:
        return await self.ask([cmd] * len(self.conns))

    def cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids)

    def stop(self) -> None:
        for p in self.procs:
            p.join(10)
            if p.is_alive():
                p.terminate()
                p.join(10)


# --- the ledger ------------------------------------------------------------------------


async def enrol_owners(url: str, home: Home, keys: list[ActorKey]) -> None:
    """The regulator enrols every owner (the notary then gives each a bus identity)."""
    trust = home.trust()
    regulator = trust.regulator
    seed = home.identities().require(regulator).seed_path
    reg = await LedgerClient.connect(
        url, home.regulator_key(), trust=trust, creds=seed, identity=regulator
    )
    try:
        results = await reg.submit_many(
            reg.event(
                ev.ActorEnrolled,
                subject=f"actor/{k.actor}",
                legal_name=k.actor,
                bin="123456789012",
                roles=["owner"],
                public_keys=[k.public_key_b64],
            )
            for k in keys
        )
    finally:
        await reg.close()
    failed = [r for r in results if isinstance(r, SubmissionError)]
    if failed:
        raise SystemExit(f"enrolment failed: {failed[0]}")
    for k in keys:
        home.identities().require(k.actor)


def nats_server_pid(home: Home) -> int:
    ports = sorted(home.nats_dir.glob("nats-server_*.ports"))
    if not ports:
        raise SystemExit(f"no nats-server ports file in {home.nats_dir}")
    return int(ports[-1].stem.rpartition("_")[2])


async def wait_checkpointed(nc: Any, timeout: float) -> int:
    """Wait until the latest checkpoint covers LEDGER to its end (a heads leaf)."""
    deadline = time.monotonic() + timeout
    while True:
        last = await last_sequence(nc, LEDGER)
        cp = await last_message(nc, CHECKPOINTS)
        if cp is not None and SignedCheckpoint.parse(cp.data).checkpoint.size == last:
            return last
        if time.monotonic() > deadline:
            raise SystemExit(f"no checkpoint covering LEDGER's {last} entries in {timeout:.0f} s")
        await asyncio.sleep(0.25)


async def cosigned_checkpoints(nc: Any, trust: TrustPolicy) -> tuple[int, int, int]:
    """Every checkpoint in CHECKPOINTS signed by the log and cosigned by the trust
    policy's witness quorum, the last one ending with a heads leaf: (checkpoints,
    heads leaves in LEDGER, size of the last checkpoint). Raises if any is not."""
    log_keys = [Verifier.from_vkey(k) for k in trust.log_vkeys()]
    witness_keys = [CosignatureVerifier.from_vkey(k) for k in trust.witness_vkeys()]
    verifiers = Verifiers(*log_keys, *witness_keys)
    witness_ids = {(v.name, v.key_hash) for v in witness_keys}
    log_ids = {(v.name, v.key_hash) for v in log_keys}
    count, size = 0, 0
    async for m in read_stream(nc, CHECKPOINTS, 1, await last_sequence(nc, CHECKPOINTS)):
        note = open_note(m.data, verifiers)
        signed = {(s.name, s.key_hash) for s in note.sigs}
        if not signed & log_ids or len(signed & witness_ids) < trust.witness_quorum:
            raise SystemExit(f"checkpoint #{m.sequence}: no log signature or no witness quorum")
        size = SignedCheckpoint.parse(m.data).checkpoint.size
        count += 1
    last = await last_message(nc, LEDGER)
    heads = await read_subject(nc, LEDGER, HEADS_SUBJECT, await last_sequence(nc, LEDGER))
    if count == 0 or last is None or last.subject != HEADS_SUBJECT or size != last.sequence:
        raise SystemExit("the last checkpoint does not cover LEDGER up to a heads leaf")
    return count, len(heads), size


class Latencies:
    """Per-call wall and CPU (this thread's) time: a loaded shared machine preempts
    a call, which its wall time shows and its CPU time does not."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def time(self, fn: Callable[[], object]) -> None:
        w, c = time.perf_counter(), time.thread_time()
        try:
            fn()
        finally:
            self.cpu.append(time.thread_time() - c)
            self.wall.append(time.perf_counter() - w)

    def ms(self, p: float, cpu: bool = True) -> float:
        return percentile(self.cpu if cpu else self.wall, p) * 1e3

    def text(self) -> str:
        return (
            f"CPU p50 {self.ms(50):.3f} ms, p99 {self.ms(99):.3f} ms; wall p50 "
            f"{self.ms(50, False):.3f} ms, p99 {self.ms(99, False):.3f} ms"
        )


def proof_latencies(tmp: Path, n: int = 1_000_000) -> tuple[Latencies, Latencies, int]:
    tree = TreeStore(tmp / "bench.tree")
    for start in range(0, n, 50_000):
        tree.append(
            start,
            [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(start, start + 50_000)],
        )
    signer = Signer.from_private_key("bench/log", Ed25519PrivateKey.generate())
    signed = SignedCheckpoint.parse(
        sign_note(Checkpoint("bench/log", n, tree.root(n)).body(), signer)
    )
    rng = random.Random(3)
    inclusion, consistency, reads = Latencies(), Latencies(), 0
    for _ in range(2000):
        i = rng.randrange(n)
        tree.reads = 0
        inclusion.time(lambda: tlog_proof(tree, i, signed))  # noqa: B023 - called at once
        reads = max(reads, tree.reads)
        old = rng.randrange(1, n)
        consistency.time(lambda: tree.consistency_proof(old, n))  # noqa: B023 - called at once
    tree.close()
    return inclusion, consistency, reads


# --- profiling -------------------------------------------------------------------------


def py_spy() -> str | None:
    """py-spy, if installed (a tool of the developer's, not a project dependency)."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def _frame(text: str) -> str:
    """``func (path:line)`` -> ``func (path)``: lines of one function counted together."""
    name, _, where = text.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name


def summarise_profile(raw: Path, header: str, top: int = 30) -> str:
    """py-spy's raw (collapsed) stacks -> per thread: share, top-N inclusive and self."""
    by_thread: dict[str, Counter[str]] = defaultdict(Counter)
    self_by_thread: dict[str, Counter[str]] = defaultdict(Counter)
    totals: Counter[str] = Counter()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        thread = frames[0].partition(": ")[2] or frames[0]
        thread = thread.rstrip("0123456789").rstrip("_") or thread  # pool threads together
        totals[thread] += n
        seen = set()
        for f in map(_frame, frames[1:]):
            if f not in seen:
                by_thread[thread][f] += n
                seen.add(f)
        if len(frames) > 1:
            self_by_thread[thread][_frame(frames[-1])] += n
    total = sum(totals.values()) or 1
    out = [header, "", f"{total} samples (idle excluded); percentages of all samples", ""]
    out.append("== samples by thread (pool threads of one name together) ==")
    out += [f"{100 * n / total:6.1f}%  {t}" for t, n in totals.most_common()]
    for thread, n in totals.most_common():
        if n / total < 0.02:
            continue
        # Frames under (nearly) every sample of the thread (its entry point, the event
        # loop, the CLI) tell nothing: left out of the inclusive list.
        inclusive = [(f, c) for f, c in by_thread[thread].most_common() if c < 0.98 * n]
        out += ["", f"== {thread}: {100 * n / total:.1f}% of samples; inclusive, top {top} =="]
        out += [f"{100 * c / total:6.1f}%  {f}" for f, c in inclusive[:top]]
        out += ["", f"== {thread}: self, top {top} =="]
        out += [f"{100 * c / total:6.1f}%  {f}" for f, c in self_by_thread[thread].most_common(top)]
    return "\n".join(out) + "\n"


# --- the run ---------------------------------------------------------------------------


@dataclass
class Metric:
    name: str
    value: float
    unit: str
    baseline: float | None
    ratio: float | None
    target: str
    met: bool

    def as_json(self) -> dict[str, Any]:
        def r(x: float | None) -> float | None:
            return None if x is None or not math.isfinite(x) else round(x, 4)

        return {
            "name": self.name,
            "value": r(self.value),
            "unit": self.unit,
            "baseline": r(self.baseline),
            "ratio": r(self.ratio),
            "target": self.target,
            "met": self.met,
        }


@dataclass
class Run:
    plan: Plan
    tmp: Path
    cores: int = os.cpu_count() or 1
    metrics: dict[str, Metric] = field(default_factory=dict)
    details: list[tuple[str, str]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def metric(
        self,
        name: str,
        value: float,
        unit: str,
        target: str,
        met: bool,
        baseline: float | None = None,
    ) -> None:
        ratio = value / baseline if baseline else None
        self.metrics[name] = Metric(name, value, unit, baseline, ratio, target, met)
        shown = f"{ratio:.2f}x of {baseline:,.1f}" if ratio is not None and baseline else ""
        flag = "met" if met else "NOT met"
        print(f"  {name:<30} {value:>12,.3f} {unit:<10} {shown:<26} {target} [{flag}]", flush=True)

    def detail(self, what: str, text: str) -> None:
        self.details.append((what, text))
        print(f"  . {what}: {text}", flush=True)

    def baseline(self, name: str, value: float, unit: str) -> None:
        self.metric(name, value, unit, "baseline (no target)", True)


async def run(args: argparse.Namespace) -> Run:
    plan = make_plan(args)
    tmp = Path(tempfile.mkdtemp(prefix="ailedger-bench-"))
    r = Run(plan, tmp)
    began = time.monotonic()

    def say(text: str) -> None:
        print(f"[{time.monotonic() - began:4.0f} s] {text}", flush=True)

    r.meta.update(
        {
            "mode": plan.mode,
            "entries_planned": plan.entries,
            "subjects": plan.subjects,
            "owners": plan.owners,
            "workers": plan.workers,
            "in_flight": plan.in_flight,
            "cores": r.cores,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "commit": git_commit(),
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "load_start": load_average(),
            "nice": os.nice(0),
            "profile": bool(args.profile),
        }
    )
    print(
        f"ailedger bench {plan.mode}: {plan.entries:,} entries, {plan.subjects:,} subjects, "
        f"{plan.workers} client processes, {r.cores} cores, load {load_average():.2f}, in {tmp}",
        flush=True,
    )
    spy = py_spy() if args.profile else None
    if args.profile and spy is None:
        print(
            "  --profile: py-spy not found (pip install py-spy; it is not a project dependency):"
            " running without a profile",
            flush=True,
        )

    # The size of the ingest envelopes, for the baselines' payloads.
    sample_key = generate("owner0")
    size = len(sign_event(_event("deploy", "owner0", "sys0", 10**8, SystemClock()), sample_key))
    r.meta["envelope_bytes"] = size

    # The baselines are measured twice, before the ledger and after it, and the
    # higher of the two is the baseline: other work on a shared machine lowers
    # them, which would flatter the ratios.
    say("baselines (1 of 2)")
    baselines = [await measure_baselines(tmp / "raw-1", plan, size)]

    # --- the ledger, as `ailedger up` runs it ---
    home = init_home(tmp / "home", origin=ORIGIN, local_witness=True)
    children: list[Child] = []
    workers: Workers | None = None
    sampler: RssSampler | None = None
    try:
        witness = Child(
            "witness",
            [sys.executable, "-m", "ailedger", "witness", "--home", str(home.path), "--json"],
            tmp / "witness.log",
        )
        children.append(witness)
        witness_url = json.loads(await witness.wait_for('"url"', 60))["url"]
        home.save_config(witnesses=witness_url)
        notary = Child(
            "notary",
            [sys.executable, "-m", "ailedger", "notary", "--home", str(home.path)],
            tmp / "notary.log",
        )
        children.append(notary)
        await notary.wait_for("notary up", 120)
        url = home.url_file.read_text().strip()
        nats_pid = nats_server_pid(home)
        reader = home.bus_identity(READER)
        if not reader:
            raise SystemExit("the home has no reader identity: authorization is not on")
        r.meta["ledger"] = {
            "url": url,
            "notary_pid": notary.pid,
            "nats_pid": nats_pid,
            "witness_pid": witness.pid,
            "witness_url": witness_url,
            "checkpoints": up_defaults(),
        }

        keys = [generate(f"owner{i}") for i in range(plan.owners)]
        for k in keys:
            save_key(k, tmp / "keys" / f"{k.actor}.pem")
        await enrol_owners(url, home, keys)
        systems = [(f"sys{i}", keys[i % plan.owners].actor) for i in range(plan.subjects)]
        cfgs = []
        for w in range(plan.workers):
            mine = [k.actor for k in keys[w :: plan.workers]]
            cfgs.append(
                {
                    "index": w,
                    "url": url,
                    "home": str(home.path),
                    "trust": str(home.trust_path),
                    "owners": [(a, str(tmp / "keys" / f"{a}.pem")) for a in mine],
                    "systems": [s for s in systems if s[1] in mine],
                }
            )
        workers = Workers(plan.workers, cfgs)
        await workers.all("connect")
        per_worker = plan.in_flight // plan.workers
        sampler = RssSampler(
            {"notary": notary.pid, "nats-server": nats_pid, "witness": witness.pid}
        )
        sampler.start()
        rss_series: dict[str, dict[str, float]] = {}

        # --- setup: register, classify, put in operation every subject (3 waves) ---
        say(f"setup: {plan.subjects:,} systems registered, classified, in operation")
        for kind in ("register", "classify", "operate"):
            await workers.all("presign", kind, 0)
            start = time.monotonic()
            done = await workers.all("run", per_worker, None)
            wall = time.monotonic() - start
            errors = sum(d["error_count"] for d in done)
            if errors:
                raise SystemExit(f"setup {kind}: {errors} failed, e.g. {done[0]['errors']}")
            r.detail(
                f"setup wave '{kind}' ({plan.subjects:,} events, one per subject)",
                f"{plan.subjects / wall:,.0f} events/s",
            )
        rss_series["after setup"] = {"notary": rss_mb(notary.pid), "witness": rss_mb(witness.pid)}

        # --- ingest: presigned deployments, measured ---
        n = plan.deployments
        t = time.monotonic()
        signed = await workers.ask([("presign", "deploy", k) for k in split(n, plan.workers)])
        r.detail(
            "presigning (before the measured run, in the client processes)",
            f"{n:,} envelopes of {signed[0]['size']:.0f} bytes in {time.monotonic() - t:.1f} s, "
            f"{sum(s['cpu'] for s in signed) / n * 1e6:.0f} CPU-µs each",
        )
        pids = {"notary": notary.pid, "nats-server": nats_pid, "witness": witness.pid}
        spy_proc = None
        if spy is not None:
            spy_out = tmp / "notary.spy"
            spy_proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once
                [
                    spy,
                    "record",
                    "--pid",
                    str(notary.pid),
                    "--format",
                    "raw",
                    "--threads",
                    "--nonblocking",
                    "--rate",
                    "100",
                    "--output",
                    str(spy_out),
                ],
                stdout=(tmp / "py-spy.log").open("w"),
                stderr=subprocess.STDOUT,
            )
            await asyncio.sleep(1.0)  # attached
        load_ingest = load_average()
        deploy_started = datetime.now(UTC)
        cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
        cpu0["clients"], cpu0["bench"] = workers.cpu(), time.process_time()
        waited0 = {k: runqueue_seconds(p) for k, p in pids.items()}
        waited0["clients"] = sum(runqueue_seconds(p) for p in workers.pids)
        say(
            f"ingest: {n:,} deployments, {plan.in_flight} in flight over {plan.workers} "
            f"client processes (load {load_ingest:.2f})"
        )
        t0 = time.monotonic()
        done = await workers.all("run", per_worker, plan.ingest_seconds)
        wall_parent = time.monotonic() - t0
        cpu1 = {k: cpu_seconds(p) for k, p in pids.items()}
        cpu1["clients"], cpu1["bench"] = workers.cpu(), time.process_time()
        waited = {k: runqueue_seconds(p) - waited0[k] for k, p in pids.items()}
        waited["clients"] = sum(runqueue_seconds(p) for p in workers.pids) - waited0["clients"]
        if spy_proc is not None:
            spy_proc.send_signal(signal.SIGINT)
            spy_proc.wait(120)
        errors = sum(d["error_count"] for d in done)
        window = max(d["end"] for d in done) - min(d["start"] for d in done)
        if plan.ingest_seconds and sum(d["n"] for d in done) < n:
            r.detail(
                "ingest cut short",
                f"{sum(d['n'] for d in done):,} of {n:,} presigned envelopes sent "
                f"in the {plan.ingest_seconds:.0f} s quick mode allows",
            )
        n = sum(d["n"] for d in done)
        ingest = n / window
        r.meta["ingest"] = {"events": n, "seconds": window, "errors": errors, "load": load_ingest}
        if errors:
            r.detail("ingest errors", f"{errors}, e.g. {done[0]['errors'] or done[-1]['errors']}")
        cpu = {k: cpu1[k] - cpu0[k] for k in cpu0}
        r.meta["ingest"]["cpu_seconds"] = cpu
        say(f"ingest: {ingest:,.0f} events/s ({n:,} in {window:.1f} s), {errors} errors")
        r.detail(
            f"CPU during the ingest ({window:.1f} s, cores used = CPU s / wall s)",
            ", ".join(
                f"{k} {cpu[k] / wall_parent:.2f} cores ({cpu[k] / n * 1e6:,.0f} µs/event)"
                for k in ("notary", "nats-server", "witness", "clients")
            ),
        )
        r.detail("notary CPU per event", f"{cpu['notary'] / n * 1e6:,.0f} µs")
        r.detail(
            "runnable but waiting for a CPU during the ingest (all threads, /proc schedstat)",
            ", ".join(
                f"{k} {waited[k]:.1f} s" for k in ("notary", "nats-server", "witness", "clients")
            )
            + f" over {wall_parent:.1f} s: time other work took from them",
        )
        r.meta["ingest"]["runqueue_seconds"] = waited
        if spy_proc is not None:
            profile = HERE / "profile-notary.txt"
            profile.write_text(
                summarise_profile(
                    tmp / "notary.spy",
                    f"py-spy on the notary (pid {notary.pid}) during the ingest of {n:,} events "
                    f"({plan.mode}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
                    f"commit {r.meta['commit']}, load {load_ingest:.2f}); --nonblocking, "
                    "100 Hz, --threads. The rates of a --profile run are perturbed by sampling.",
                )
            )
            r.detail("profile", f"written to {profile.relative_to(HERE.parent)}")
        rss_series["after ingest"] = {"notary": rss_mb(notary.pid), "witness": rss_mb(witness.pid)}

        # --- receipt latency, paced, from the client processes ---
        # First 20/s: the latency of a nearly idle notary (a detail, no target).
        for label, rate in (("idle", 20.0), ("half_capacity", ingest / 2), ("1000", 1000.0)):
            count = max(plan.workers, int(rate * plan.paced_seconds))
            await workers.ask([("presign", "deploy", k) for k in split(count, plan.workers)])
            t0 = time.monotonic() + 0.5
            got = await workers.ask(
                [("paced", rate, t0, i, plan.workers) for i in range(plan.workers)]
            )
            lat = [x for g in got for x in g["latencies"]]
            errors = sum(g["error_count"] for g in got)
            p50, p99 = percentile(lat, 50) * 1e3, percentile(lat, 99) * 1e3
            if label != "idle":
                r.metric(f"receipt_p99_ms_{label}", p99, "ms", "p99 < 50 ms", p99 < 50)
            r.detail(
                f"receipt latency at {rate:,.0f}/s offered for {plan.paced_seconds:.0f} s",
                f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(lat) * 1e3:.0f} ms, "
                f"{len(lat):,} receipts, {errors} errors",
            )
        await workers.all("close")
        workers.stop()
        workers = None

        nc = await connect(url, name="bench-reader", **reader)
        total = await wait_checkpointed(nc, 60)
        peaks = sampler.stop()
        rss_series["end"] = {"notary": rss_mb(notary.pid), "witness": rss_mb(witness.pid)}
        r.meta["rss_mb"] = {
            "series": rss_series,
            "peak_sampled": peaks,
            "notary_hwm": rss_mb(notary.pid, "VmHWM"),
            "witness_hwm": rss_mb(witness.pid, "VmHWM"),
            "nats_server": rss_mb(nats_pid),
        }
        r.meta["ledger_entries"] = total
        rss_n = rss_mb(notary.pid)
        r.metric("rss_notary_mb", rss_n, "MB", "< 300 MB, flat (at 10^6 entries)", rss_n < 300)
        rss_w = rss_mb(witness.pid)
        r.metric(
            "rss_witness_mb", rss_w, "MB", "no §8 target; < 300 MB like the notary's", rss_w < 300
        )
        r.detail("notary RSS from setup to the end of the latency runs", sampler.shape("notary"))
        sampler = None
        r.detail(
            "RSS over the run (notary / witness)",
            "; ".join(
                f"{k} {v['notary']:.0f} / {v['witness']:.0f} MB" for k, v in rss_series.items()
            )
            + f"; sampled peaks {peaks.get('notary', 0):.0f} / {peaks.get('witness', 0):.0f}"
            f" MB; nats-server {rss_mb(nats_pid):.0f} MB",
        )
        published, heads_leaves, last_size = await cosigned_checkpoints(nc, home.trust())
        r.detail(
            "checkpoints",
            f"{published} published, each cosigned (quorum 1), "
            f"{heads_leaves} heads leaves; the last covers all {last_size:,} entries",
        )

        # --- the projector, its own process, following LEDGER from the start ---
        say(f"projector: `ailedger project` catching up {total:,} entries")
        projector = Child(
            "projector",
            [sys.executable, "-m", "ailedger", "project", "--home", str(home.path)],
            tmp / "projector.log",
        )
        children.append(projector)
        sampler = RssSampler({"projector": projector.pid})
        sampler.start()
        await projector.wait_for("projector up", max(600, total / 100))
        caught_up = time.monotonic() - projector.started
        sampler.stop()
        r.detail("projector RSS while catching up", sampler.shape("projector"))
        sampler = None
        await asyncio.sleep(1.0)
        rss_p = rss_mb(projector.pid)
        projector_cpu = cpu_seconds(projector.pid)
        projector.stop()
        peak_p = projector.rusage.ru_maxrss / 1024 if projector.rusage else float("nan")
        r.metric("rss_projector_mb", rss_p, "MB", "< 300 MB, flat (at 10^6 entries)", rss_p < 300)
        r.detail(
            "projector (`ailedger project`, own process) catching up from 0",
            f"{total:,} entries in {caught_up:.1f} s incl. start "
            f"({total / caught_up:,.0f}/s, {projector_cpu / total * 1e6:,.0f} CPU-µs/entry); "
            f"RSS {rss_p:.0f} MB after, peak {peak_p:.0f} MB",
        )

        # --- rebuild vs a raw batched read of the same stream ---
        say(f"rebuild: {total:,} entries")
        raw_read = await raw_read_rate(url, reader, total)
        lib_read = await library_read_rate(nc, total)
        (tmp / "rebuild").mkdir()
        state_env, view_env = store_envs(tmp / "rebuild")
        cpu_b, start = time.process_time(), time.perf_counter()
        rebuilt = await rebuild(nc, home, state_env, view_env)
        wall = time.perf_counter() - start
        rate = total / wall
        r.baseline("raw_read_eps", raw_read, "entries/s")
        r.metric(
            "rebuild_eps",
            rate,
            "entries/s",
            ">= 0.5x raw_read_eps",
            rate >= 0.5 * raw_read,
            baseline=raw_read,
        )
        r.detail(
            "rebuild (state + view, seals and root checked), in the bench process",
            f"{rebuilt.entries:,} LEDGER messages in {wall:.1f} s, "
            f"{(time.process_time() - cpu_b) / wall:.2f} cores; read_stream alone "
            f"{lib_read:,.0f}/s",
        )

        # --- status of one system at a random time ---
        view = open_view(view_env)
        rng = random.Random(5)
        t_lo, t_hi = deploy_started, datetime.now(UTC)  # every system exists by t_lo
        times, missing = Latencies(), 0
        for _ in range(plan.status_queries):
            at = t_lo + (t_hi - t_lo) * rng.random()
            system = f"sys{rng.randrange(plan.subjects)}"
            try:
                times.time(lambda: view.status(system, at=at))  # noqa: B023 - called at once
            except LookupError:
                missing += 1
        p99 = times.ms(99)
        r.metric("status_p99_ms", p99, "ms CPU", "p99 < 20 ms at 10^6 entries", p99 < 20)
        r.detail(
            f"status of one of {plan.subjects:,} systems at a random time, {total:,} entries",
            f"{times.text()}; {len(times.cpu)} queries ({missing} before the system existed)",
        )

        # --- an exported bundle verified offline ---
        with TreeStore(tmp / "export.tree") as tree:
            bundle = await export_bundle(nc, tree, actor="owner0", trust=home.trust())
        await nc.close()
        cpu_b, start = time.process_time(), time.perf_counter()
        report = verify_bundle(bundle, home.trust())
        wall = time.perf_counter() - start
        vrate = report.entries / wall
        say(f"verification: {vrate:,.0f} entries/s")
        r.detail(
            "bundle verification (verify_bundle as `ailedger verify` calls it: threads and "
            "one worker process)",
            f"owner0's bundle: {report.entries:,} entries, {report.signatures:,} signatures, "
            f"{len(bundle) / 1e6:.1f} MB, {wall:.2f} s, "
            f"{(time.process_time() - cpu_b) / wall:.2f} cores",
        )
    finally:
        if sampler is not None:
            sampler.stop()
        if workers is not None:
            workers.stop()
        for child in reversed(children):
            child.stop()
    for child in children:
        if child.rusage is not None:
            r.meta.setdefault("children_peak_rss_mb", {})[child.name] = (
                child.rusage.ru_maxrss / 1024
            )

    say("baselines (2 of 2)")
    baselines.append(await measure_baselines(tmp / "raw-2", plan, size))
    best = {k: max(b[k] for b in baselines) for k in ("ed25519", "single", "batched")}
    for what, key in (
        ("Ed25519 verify on one core, /s", "ed25519"),
        ("raw single publish_async, msg/s", "single"),
        ("raw atomic batches of 1,000, msg/s", "batched"),
    ):
        r.detail(
            f"baselines before / after the ledger: {what}",
            f"{baselines[0][key]:,.0f} / {baselines[1][key]:,.0f} (the higher is the baseline)",
        )
    r.detail(
        "raw appends, nats-server CPU per message (before / after)",
        " / ".join(f"{b['single_server_us']:.0f}" for b in baselines)
        + " µs single publish_async, "
        + " / ".join(f"{b['batched_server_us']:.0f}" for b in baselines)
        + f" µs in atomic batches ({size}-byte payloads)",
    )
    r.baseline("ed25519_core_eps", best["ed25519"], "verify/s")
    r.baseline("raw_publish_eps", best["single"], "msg/s")
    r.baseline("raw_batch_eps", best["batched"], "msg/s")
    r.metric(
        "ingest_eps",
        ingest,
        "events/s",
        ">= 5,000 ev/s and >= 0.7x raw_publish_eps",
        ingest >= 5000 and ingest >= 0.7 * best["single"],
        baseline=best["single"],
    )
    r.detail("ingest vs raw atomic batches", f"{ingest / best['batched']:.2f}x")
    ceiling = best["ed25519"] * r.cores
    r.metric(
        "verify_eps",
        vrate,
        "entries/s",
        f">= 0.6x ed25519_core_eps x {r.cores} cores",
        vrate >= 0.6 * ceiling,
        baseline=ceiling,
    )

    say("proofs at 10^6 entries")
    inclusion, consistency, reads = proof_latencies(tmp)
    p99 = inclusion.ms(99)
    r.metric("inclusion_p99_ms", p99, "ms CPU", "p99 < 1 ms at 10^6", p99 < 1)
    p99c = consistency.ms(99)
    r.metric("consistency_p99_ms", p99c, "ms CPU", "p99 < 1 ms at 10^6", p99c < 1)
    r.detail(
        "inclusion proof (tlog-proof) at 10^6 entries, 2,000 random leaves",
        f"{inclusion.text()}; at most {reads} stored hashes read",
    )
    r.detail("consistency proof at 10^6 entries, 2,000 random sizes", consistency.text())
    r.meta["load_end"] = load_average()
    r.meta["seconds"] = round(time.monotonic() - began, 1)
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"kept {tmp}")
    return r


# --- output ----------------------------------------------------------------------------


def _fmt(x: float | None, unit: str = "") -> str:
    if x is None or not math.isfinite(x):
        return ""
    text = f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.2f}" if abs(x) >= 1 else f"{x:.3f}"
    return f"{text} {unit}".strip()


def write_results(r: Run) -> None:
    missing = [m for m in METRICS if m not in r.metrics]
    if missing:
        raise SystemExit(f"metrics not measured: {missing}")
    doc = [r.metrics[m].as_json() for m in METRICS]
    (HERE / "results.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    meta = dict(r.meta, details=dict(r.details))
    (HERE / "results.meta.json").write_text(
        json.dumps(meta, indent=2, ensure_ascii=False, default=str) + "\n"
    )
    m = r.metrics
    ingest_ratio = m["ingest_eps"].ratio or 0.0
    verify_ratio = m["verify_eps"].ratio or 0.0
    cpu = r.meta["ingest"]["cpu_seconds"]
    n = r.meta["ingest"]["events"]
    lines = [
        "# Benchmark results",
        "",
        f"`python bench/run.py --{'full' if r.plan.mode.startswith('full') else 'quick'}` "
        f"({r.plan.mode}) on {r.meta['started'][:16].replace('T', ' ')} UTC, "
        f"{r.meta['seconds']:.0f} s in all: "
        f"{r.meta['machine']}, {r.cores} cores, Python {r.meta['python']}, commit "
        f"`{r.meta['commit']}`, nice {r.meta['nice']}. Load average (1 min) "
        f"{r.meta['load_start']:.2f} at the start, {r.meta['ingest']['load']:.2f} when the ingest "
        f"began, {r.meta['load_end']:.2f} at the end, on {r.cores} cores shared with other work: "
        "read the ratios to the baselines measured in the same run first. "
        f"{r.meta['ledger_entries']:,} LEDGER entries, {r.plan.subjects:,} systems"
        f"{'; a --profile run (py-spy perturbs the rates)' if r.meta['profile'] else ''}. "
        "Figures also in `bench/results.json` (these metrics) and `bench/results.meta.json`.",
        "",
        "| metric | value | baseline (same run) | ratio | target (DESIGN §8) | met |",
        "|---|---|---|---|---|---|",
    ]
    for name in METRICS:
        x = m[name]
        ratio = f"{x.ratio:.2f}x" if x.ratio is not None else ""
        lines.append(
            f"| `{name}` | {_fmt(x.value, x.unit)} | {_fmt(x.baseline)} | {ratio} | "
            f"{x.target} | {'yes' if x.met else '**no**'} |"
        )
    lines += [
        "",
        "Baselines have no target of their own (`met` is true for them in results.json). "
        "`verify_eps`'s baseline is `ed25519_core_eps` x cores. "
        + (
            ""
            if r.plan.mode.startswith("full")
            else "The targets at 10^6 entries (status, RSS) are judged here at this run's size; "
            "`--full` measures them at 10^6. "
        )
        + "Proofs are measured on a synthetic tree of 10^6 leaves in every mode.",
        "",
        "## Distance to the compass",
        "",
        f"- **Ingest**: {ingest_ratio:.2f}x the raw single `publish_async` rate; the target is "
        f"0.7x and >= 5,000 ev/s, the compass 1.0x: {ingest_ratio / 1.0 * 100:.0f} % of the "
        f"compass ({_fmt(m['ingest_eps'].value)} of {_fmt(m['raw_publish_eps'].value)} ev/s, "
        f"{m['ingest_eps'].value / 5000 * 100:.0f} % of 5,000 ev/s).",
        f"- **Verification**: {verify_ratio:.2f}x of cores x Ed25519 on one core; the target is "
        f"0.6x, the compass 0.8x: {verify_ratio / 0.8 * 100:.0f} % of the compass.",
        "",
        "## Details",
        "",
        "| what | measured |",
        "|---|---|",
        *(f"| {what} | {text} |" for what, text in r.details),
        "",
        "## How it is measured",
        "",
        "- **The ledger as in production.** `ailedger up --home H` (no `--nats`): the home's "
        "embedded nats-server with NATS authorization (an nkey user per service and per enrolled "
        "actor), LEDGER sealed batches, receipts v2, the head map and a heads leaf before each "
        f"checkpoint, checkpoints at `ailedger up`'s defaults ({r.meta['ledger']['checkpoints']}), "
        "each cosigned "
        "before publication by the home's witness (quorum 1). The witness runs as its own process "
        "(`ailedger witness --home H`, named in the home's config.json) so that its CPU and RSS "
        "are measured apart; `ailedger up` alone would run it in the notary's process.",
        f"- **Clients.** {r.plan.workers} client processes (multiprocessing, spawned), "
        f"{r.plan.owners} owners enrolled by the regulator, each process with one `LedgerClient` "
        "per owner, connected with that owner's bus identity (the nkey the notary generated at "
        "enrolment). Every envelope is signed in the client processes before the measured run "
        f"(signing excluded). {r.plan.in_flight} submissions in flight in total; each waits for "
        "its receipt and checks it and its batch seal (`LedgerClient.submit_envelope`).",
        f"- **Setup, then ingest.** {r.plan.subjects:,} systems are registered, classified and "
        "put in operation (three waves, one event per system each; their rates are details). "
        f"The measured ingest is {n:,} `VersionDeployed` envelopes "
        f"({r.meta['envelope_bytes']} bytes each) round-robin over the systems: `ingest_eps` is "
        "events over the window from the first client's start to the last receipt"
        + (
            f" (quick mode stops sending after {r.plan.ingest_seconds:.0f} s, so that it stays "
            "under 2 minutes at today's rates)."
            if r.plan.ingest_seconds
            else "."
        ),
        "- **CPU.** utime+stime from /proc/<pid>/stat over the ingest window, for the notary, "
        "its nats-server, the witness and the client processes; cores used is CPU seconds over "
        "wall seconds. Beside it, the time their threads were runnable but waited for a CPU "
        "(/proc/<pid>/task/*/schedstat): what other work on the machine took from them. "
        f"In this run: notary {cpu['notary'] / n * 1e6:,.0f} µs, nats-server "
        f"{cpu['nats-server'] / n * 1e6:,.0f} µs, witness {cpu['witness'] / n * 1e6:,.0f} µs, "
        f"clients {cpu['clients'] / n * 1e6:,.0f} µs per event.",
        "- **Raw baselines.** A second nats-server made by the same `EmbeddedNats` (same "
        "configuration: `sync_interval: always`, file store, authorization on), streams with "
        "LEDGER's settings; payloads of the ingest envelopes' size; one `publish_async` per "
        "message with a message id (all awaited), and ADR-50 atomic batches of 1,000 fenced on "
        "the last sequence. These and the Ed25519 rate are measured before the ledger starts "
        "and again after it stopped, each time on a new server; the higher of each pair is the "
        "baseline (both are in the details): load from other work lowers a baseline, which "
        "would flatter the ratios.",
        "- **Receipt latency.** The same client processes offer a fixed rate together (each a "
        "share, interleaved) for a few seconds: 20/s (a nearly idle notary, a detail), half "
        "the measured `ingest_eps`, then 1,000/s; latency runs from each envelope's scheduled "
        "send time to its checked receipt.",
        "- **Memory.** VmRSS from /proc: notary and witness after the latency runs (sampled each "
        "second too, for peaks); the projector (`ailedger project --home H`, its own process, "
        "started after the ingest and following LEDGER from the first entry) once it reports "
        "that it caught up.",
        "- **Rebuild vs raw read.** `services.projector.rebuild` (state + view from LEDGER, "
        "seals and the checkpoint root checked) into fresh stores, in the bench process, against "
        "a raw nats-py read of the same LEDGER messages (batched direct gets of 1,000, one in "
        "flight) as the `_reader` identity.",
        "- **Status and proofs.** `ComplianceView.status(system, at=T)` on the rebuilt view, a "
        "random system and a random T from the start of the ingest to the end; proofs on a "
        "synthetic tree of 10^6 leaves. Their p99 is of each call's CPU time (this thread's): "
        "on these shared 2-core machines the wall time also counts preemption by other "
        "processes; both are in the details.",
        "- **Verification.** `export_bundle(actor='owner0')` (all of one owner's systems and "
        "their chains), then `verify_bundle` as `ailedger verify` calls it (threads, and one "
        "worker process per core but the caller's from 1,000 entries); baseline: "
        "`cryptography`'s Ed25519 verify on one core x cores.",
        "- **Profile.** `--profile` runs py-spy (if installed; not a project dependency) on the "
        "notary during the ingest and writes `bench/profile-notary.txt` (per thread, "
        "inclusive and self).",
        "",
    ]
    notes = HERE / "NOTES.md"
    text = "\n".join(lines) + ("\n" + notes.read_text() if notes.exists() else "")
    (HERE / "RESULTS.md").write_text(text)
    print(f"wrote {HERE / 'results.json'}, {HERE / 'results.meta.json'}, {HERE / 'RESULTS.md'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--quick", action="store_true", help="2*10^4 entries (under 2 minutes)")
    mode.add_argument("--full", action="store_true", help="10^6 entries, 10^5 subjects")
    parser.add_argument("--workers", type=int, default=4, help="client processes (default 4)")
    parser.add_argument("--profile", action="store_true", help="py-spy the notary's ingest")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--entries", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--subjects", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    r = asyncio.run(run(args))
    if args.no_write:
        print(json.dumps([r.metrics[m].as_json() for m in METRICS if m in r.metrics], indent=1))
    else:
        write_results(r)


if __name__ == "__main__":
    main()
