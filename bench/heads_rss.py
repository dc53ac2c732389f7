"""The notary's memory with a head map of many subjects (issue 10: "RSS under 300 MB
with 10^6 subjects in the map").

    python bench/heads_rss.py --subjects 20000      # a check, about a minute
    nice -n 19 python bench/heads_rss.py --subjects 1000000

Makes a home with its own witness (``init_home(local_witness=True)``: quorum 1),
starts a nats-server (``EmbeddedNats``, no authorization, as bench/run.py) and
``python -m ailedger up --nats URL --checkpoint-every 1000`` as a separate process
(it runs the local witness in its own process, so the notary's RSS includes the
witness's), enrols ``--owners`` owners, signs ``--subjects`` SystemRegistered events,
each about a new system (a new subject in the head map), in worker processes
before submitting any, then submits them with the SDK (``LedgerClient``, one
connection, ``--concurrency`` submissions in flight). Every ``--sample`` seconds,
and when the number of accepted events crosses 10^4, 2.5*10^4, 5*10^4, 10^5, ...,
it reads VmRSS of the notary and of the nats-server from /proc. At the end it
waits until the newest checkpoint covers the whole log, ending with a heads leaf,
cosigned by the witness, and reads the number of subjects from that heads leaf.
Prints a table and writes ``bench/heads_rss.json``. ``--max-minutes`` stops
submitting early (the figures then hold for the subjects reached).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import pickle
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.bus.client import LedgerClient, SubmissionError, sign_event
from ledger.bus.home import Home, init_home
from ledger.bus.natsserver import EmbeddedNats
from ledger.bus.proofs import SignedCheckpoint
from ledger.bus.streams import (
    CHECKPOINTS,
    HEADS_SUBJECT,
    LEDGER,
    connect,
    get_message,
    last_message,
    last_sequence,
)
from ledger.formats.checkpoint import CosignatureVerifier
from ledger.formats.heads import HeadsLeaf
from ledger.formats.keys import ActorKey, generate
from ledger.formats.note import Verifier, Verifiers, open_note
from ledger.formats.timeutil import SystemClock
from ledger.law import events as ev

HERE = Path(__file__).resolve().parent
CHUNK = 10_000  # events signed per task, one pickle file each
Record = tuple[str, str, bytes]  # actor, event id, envelope


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def milestones(n: int) -> list[int]:
    out, decade = [], 10_000
    while decade <= n:
        out += [m for m in (decade, decade * 5 // 2, decade * 5) if m <= n]
        decade *= 10
    return out


# --- signing in worker processes ------------------------------------------------------

_KEYS: list[ActorKey] = []


def _init_worker(owners: list[tuple[str, bytes]]) -> None:
    global _KEYS
    _KEYS = [ActorKey(a, Ed25519PrivateKey.from_private_bytes(raw)) for a, raw in owners]


def _sign_chunk(job: tuple[int, int, str]) -> str:
    """Sign SystemRegistered events start..end-1 (system ``b<i>``) into one file."""
    start, end, path = job
    clock = SystemClock()
    records: list[Record] = []
    for i in range(start, end):
        key = _KEYS[i % len(_KEYS)]
        e = ev.SystemRegistered(
            v=1,
            event_id=ev.new_event_id(),
            actor=key.actor,
            subject=f"system/b{i:07d}",
            signed_at=clock.now(),
            name=f"Bench system {i}",
            purpose="credit scoring of retail loan applications (benchmark)",
            sector="finance",
            owner=key.actor,
            holder=key.actor,
            generates_synthetic_content=False,
        )
        records.append((key.actor, e.event_id, sign_event(e, key)))
    Path(path).write_bytes(pickle.dumps(records, protocol=pickle.HIGHEST_PROTOCOL))
    return path


def sign_all(owners: list[ActorKey], n: int, out: Path, workers: int) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    raw = [(k.actor, k.private_key.private_bytes_raw()) for k in owners]
    jobs = [(s, min(s + CHUNK, n), str(out / f"{s:08d}.pkl")) for s in range(0, n, CHUNK)]
    with multiprocessing.get_context("spawn").Pool(workers, _init_worker, (raw,)) as pool:
        return [Path(p) for p in pool.imap(_sign_chunk, jobs)]


def records(files: list[Path]) -> Iterator[Record]:
    for f in files:
        yield from pickle.loads(f.read_bytes())
        f.unlink()  # 10^6 envelopes take about a gigabyte on disk


# --- the run --------------------------------------------------------------------------


@dataclass
class Run:
    notary_pid: int
    nats_pid: int
    started: float = field(default_factory=time.perf_counter)
    accepted: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)

    def sample(self, why: str) -> dict[str, Any]:
        s = {
            "t": round(time.perf_counter() - self.started, 1),
            "accepted": self.accepted,
            "notary_rss_mb": round(rss_mb(self.notary_pid), 1),
            "nats_rss_mb": round(rss_mb(self.nats_pid), 1),
            "why": why,
        }
        self.samples.append(s)
        if why != "periodic":
            print(f"  {line(s)}  ({why})", flush=True)
        return s


def line(s: dict[str, Any]) -> str:
    return (
        f"{s['t']:8.1f} s  {s['accepted']:>9,} accepted  "
        f"notary {s['notary_rss_mb']:6.1f} MB  nats {s['nats_rss_mb']:6.1f} MB"
    )


async def wait_for_log(log: Path, text: bytes, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in await asyncio.to_thread(log.read_bytes):
            return
        await asyncio.sleep(0.1)
    raise SystemExit(f"the notary did not print {text!r} in {timeout:.0f}s: see {log}")


async def enrol(url: str, home: Home, owners: int) -> list[ActorKey]:
    trust = home.trust()
    keys = [generate(f"owner{i}") for i in range(owners)]
    async with await LedgerClient.connect(url, home.regulator_key(), trust=trust) as reg:
        for i, key in enumerate(keys):
            await reg.submit(reg.event(
                ev.ActorEnrolled, subject=f"actor/{key.actor}", legal_name=f"Owner {i}",
                bin=f"{123456789000 + i:012d}", roles=["owner"],
                public_keys=[key.public_key_b64]))  # fmt: skip
    return keys


async def settled(url: str, home: Home, timeout: float = 300.0) -> tuple[HeadsLeaf, int, int]:
    """Wait until the newest checkpoint covers all of LEDGER, whose last leaf is a heads
    leaf, and is cosigned by the witness quorum: (that heads leaf, checkpoint size,
    checkpoints published)."""
    trust = home.trust()
    witnesses = [CosignatureVerifier.from_vkey(k) for k in trust.witness_vkeys()]
    verifiers = Verifiers(*(Verifier.from_vkey(k) for k in trust.log_vkeys()), *witnesses)
    witness_ids = {(w.name, w.key_hash) for w in witnesses}
    nc = await connect(url)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            size = await last_sequence(nc, LEDGER)
            cp = await last_message(nc, CHECKPOINTS)
            if cp is not None and SignedCheckpoint.parse(cp.data).checkpoint.size == size:
                last = await get_message(nc, LEDGER, size)
                if last is None or last.subject != HEADS_SUBJECT:
                    raise SystemExit(f"checkpoint of size {size} does not end with a heads leaf")
                note = open_note(cp.data, verifiers)
                cosigned = {(s.name, s.key_hash) for s in note.sigs} & witness_ids
                if len(cosigned) < trust.witness_quorum:
                    raise SystemExit(f"checkpoint of size {size} lacks the witness quorum")
                heads = HeadsLeaf.parse(last.data)
                if heads.size != size - 1:
                    raise SystemExit(f"heads leaf at index {size - 1} covers {heads.size}")
                return heads, size, cp.sequence
            await asyncio.sleep(0.5)
        raise SystemExit(f"no checkpoint covered LEDGER within {timeout:.0f}s")
    finally:
        await nc.close()


async def submit_all(
    url: str, home: Home, files: list[Path], run: Run, args: argparse.Namespace
) -> float:
    client = await LedgerClient.connect(url, trust=home.trust())
    source = records(files)
    marks = milestones(args.subjects)
    deadline = time.monotonic() + args.max_minutes * 60
    stopped = False

    async def worker() -> None:
        nonlocal stopped
        for actor, eid, env in source:
            if time.monotonic() > deadline:
                stopped = True
                return
            try:
                await client.submit_envelope(env, eid, "SystemRegistered", actor=actor, timeout=600)
                run.accepted += 1
            except SubmissionError as e:
                run.failed += 1
                if len(run.errors) < 10:
                    run.errors.append(f"{type(e).__name__}: {e}")
            while marks and run.accepted >= marks[0]:
                run.sample(f"{marks.pop(0):,} accepted")

    async def sampler() -> None:
        while True:
            await asyncio.sleep(args.sample)
            s = run.sample("periodic")
            if len(run.samples) % max(1, int(60 / args.sample)) == 0:
                rate = s["accepted"] / max(s["t"], 1e-9)
                print(f"  {line(s)}  ({rate:,.0f}/s so far)", flush=True)

    run.started = time.perf_counter()
    run.sample("start")
    sampling = asyncio.create_task(sampler())
    try:
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    finally:
        sampling.cancel()
        await client.close()
    elapsed = time.perf_counter() - run.started
    if stopped:
        print(f"  stopped after {args.max_minutes} minutes (--max-minutes)", flush=True)
    return elapsed


def stop_notary(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def commit() -> str:
    """The commit measured (with '+' when the work tree differs from it)."""
    git = ["git", "-C", str(HERE)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run([*git, "diff", "--quiet", "HEAD", "--", "ledger", "services"])
    return head.stdout.strip() + ("+" if dirty.returncode else "")


def file_mb(*paths: Path) -> float:
    return sum(p.stat().st_size for p in paths if p.exists()) / 2**20


async def main(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="ailedger-heads-rss-"))
    print(f"heads_rss: {args.subjects:,} subjects, {os.cpu_count()} cores, in {tmp}", flush=True)
    server = EmbeddedNats(tmp / "nats")
    notary: subprocess.Popen[bytes] | None = None
    try:
        url = await asyncio.to_thread(server.start)
        home = init_home(tmp / "home", origin="bench.ailedger.kz/heads", local_witness=True)
        log = tmp / "notary.log"
        notary = subprocess.Popen(  # noqa: ASYNC220 - returns at once; the notary runs apart
            [sys.executable, "-m", "ailedger", "up", "--home", str(home.path), "--nats", url,
             "--checkpoint-every", str(args.checkpoint_every)],
            stdout=log.open("wb"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        await wait_for_log(log, b"notary up")
        if b"witness up" not in log.read_bytes():
            raise SystemExit(f"no local witness beside the notary: see {log}")
        run = Run(notary.pid, server.pid)
        owners = await enrol(url, home, args.owners)
        before, _, _ = await settled(url, home)
        print(
            f"  enrolled {args.owners} owners: the map holds {before.subjects} subjects; "
            f"notary {rss_mb(notary.pid):.1f} MB",
            flush=True,
        )

        t = time.perf_counter()
        files = await asyncio.to_thread(
            sign_all, owners, args.subjects, tmp / "signed", args.workers
        )
        sign_s = time.perf_counter() - t
        print(f"  signed {args.subjects:,} events in {sign_s:.0f} s ({args.workers} workers)")

        elapsed = await submit_all(url, home, files, run, args)
        rate = run.accepted / elapsed
        t = time.perf_counter()
        heads, size, checkpoints = await settled(url, home)
        settle_s = time.perf_counter() - t
        final = run.sample("final checkpoint")
        peak = max(s["notary_rss_mb"] for s in run.samples)
        peak_nats = max(s["nats_rss_mb"] for s in run.samples)
        state = home.state_dir / "notary.heads.sqlite"
        sqlite_mb = file_mb(state)
        sqlite_all_mb = file_mb(state, Path(f"{state}-wal"), Path(f"{state}-shm"))
        with contextlib.closing(sqlite3.connect(state)) as db:
            depth = db.execute("SELECT depth FROM meta").fetchone()[0]
        added = heads.subjects - before.subjects
        if added != run.accepted:
            print(f"  !! the map gained {added:,} subjects for {run.accepted:,} accepted events")
    finally:
        if notary is not None:
            stop_notary(notary)
        await asyncio.to_thread(server.stop)

    by_mark = {s["why"]: s["notary_rss_mb"] for s in run.samples}
    result = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "commit": commit(),
        "command": " ".join(["python", "bench/heads_rss.py", *sys.argv[1:]]),
        "subjects_requested": args.subjects,
        "accepted": run.accepted,
        "failed": run.failed,
        "errors": run.errors,
        "map_subjects_before": before.subjects,
        "map_subjects": heads.subjects,
        "heads_leaf_index": heads.index,
        "checkpoint_size": size,
        "checkpoints_published": checkpoints,
        "sign_seconds": round(sign_s, 1),
        "ingest_seconds": round(elapsed, 1),
        "ingest_rate_per_s": round(rate, 1),
        "final_checkpoint_wait_seconds": round(settle_s, 1),
        "notary_rss_mb_peak": peak,
        "notary_rss_mb_final": final["notary_rss_mb"],
        "notary_rss_mb_at": {k: v for k, v in by_mark.items() if k.endswith("accepted")},
        "nats_rss_mb_peak": peak_nats,
        "nats_rss_mb_final": final["nats_rss_mb"],
        "heads_bucket_depth": depth,
        "heads_sqlite_mb": round(sqlite_mb, 1),
        "heads_sqlite_with_wal_mb": round(sqlite_all_mb, 1),
        "samples": run.samples,
    }
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def table(r: dict[str, Any]) -> str:
    notary = f"{r['notary_rss_mb_peak']:.0f} / {r['notary_rss_mb_final']:.0f} MB"
    nats = f"{r['nats_rss_mb_peak']:.0f} / {r['nats_rss_mb_final']:.0f} MB"
    disk = f"{r['heads_sqlite_mb']:.0f} MB ({r['heads_sqlite_with_wal_mb']:.0f} MB)"
    rows = [
        ("subjects in the map (last heads leaf)", f"{r['map_subjects']:,}"),
        ("events accepted / failed", f"{r['accepted']:,} / {r['failed']:,}"),
        ("last checkpoint (cosigned, ends with the heads leaf)", f"size {r['checkpoint_size']:,}"),
        ("ingest rate (sign excluded)", f"{r['ingest_rate_per_s']:,.0f} events/s"),
        ("notary RSS peak / final", notary),
        *((f"notary RSS at {k}", f"{v:.0f} MB") for k, v in r["notary_rss_mb_at"].items()),
        ("nats-server RSS peak / final", nats),
        ("heads.sqlite on disk (with WAL)", disk),
        ("head map bucket depth (top arrays)", str(r.get("heads_bucket_depth", "?"))),
    ]  # fmt: skip
    width = max(len(a) for a, _ in rows)
    return "\n".join(f"{a:<{width}}  {b}" for a, b in rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=1_000_000)
    parser.add_argument("--owners", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=1000, help="submissions in flight")
    parser.add_argument("--workers", type=int, default=2, help="signing processes")
    parser.add_argument("--checkpoint-every", type=int, default=1000)
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between RSS samples")
    parser.add_argument("--max-minutes", type=float, default=40.0, help="stop submitting after")
    parser.add_argument("--out", type=Path, default=HERE / "heads_rss.json")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    result = asyncio.run(main(parser.parse_args()))
    print(table(result))
    result_path: Path = parser.parse_args().out
    result_path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {result_path}")
