"""The notary process: one :class:`Notary` wires a sequencer, a checkpointer and a
lookup server over one state, one Merkle tree and one state thread;
:func:`serve` runs it (with the embedded nats-server unless given a URL)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import httpx
from nats.aio.client import Client as NATS

from ledger.bus.alarms import Alarms
from ledger.bus.auth import NOTARY, OPERATOR, Authorizer, external_apply, render_authorization
from ledger.bus.home import Home
from ledger.bus.natsserver import EmbeddedNats
from ledger.bus.streams import connect, ensure_notary_consumer, ensure_streams
from ledger.formats.checkpoint import Checkpoint, CosignatureVerifier, parse_checkpoint
from ledger.formats.headmap import HeadMap, HeadStoreError, SqliteNodeStore
from ledger.formats.note import Signer, Verifier, Verifiers
from ledger.formats.timeutil import Clock
from ledger.formats.tree import TreeStore
from ledger.state.application import LedgerState
from ledger.state.asyncbridge import StateThread
from ledger.state.persistence import sqlite_env
from services.notary import NotaryError
from services.notary.answers import RecentRejections
from services.notary.checkpointer import Checkpointer
from services.notary.cosigning import collect_cosignatures
from services.notary.health import Health
from services.notary.lookup import Lookup
from services.notary.permissions import BusPermissions
from services.notary.sequencer import Sequencer

__all__ = ["Notary", "exclusive", "serve", "setup_bus", "start_home_server"]

log = logging.getLogger("ailedger.notary")

#: Checkpoint cadence: after this many new entries, or this many seconds with new
#: entries. Receipts do not wait for checkpoints (seals prove them at once), so
#: the cadence is about freshness for third parties, and each checkpoint costs a
#: heads leaf on the sequencing path (~16 ms at 10^6 subjects) and a cosigning
#: round: at 5,000 entries/s, 256 entries would mean 20 a second.
CHECKPOINT_EVERY = 10_000
CHECKPOINT_INTERVAL = 1.0


class Notary:
    """Sequencer, checkpointer and lookup server of one ledger, over one state."""

    def __init__(
        self,
        nc: NATS,
        state: LedgerState,
        signer: Signer,
        tree: TreeStore,
        *,
        clock: Clock | None = None,
        genesis: bytes | None = None,
        batch_size: int = 500,
        verify_threads: int = 2,
        ack_wait: float = 10.0,
        checkpoint_every: int = CHECKPOINT_EVERY,
        checkpoint_interval: float = CHECKPOINT_INTERVAL,
        authorizer: Authorizer | None = None,
        settings_check_interval: float = 5.0,
        alarms: Alarms | None = None,
        heads: HeadMap | None = None,
        witnesses: Sequence[str] = (),
        witness_timeout: float = 5.0,
        recosign_interval: float = 60.0,
    ) -> None:
        self.nc = nc
        #: What went wrong that an operator must see (``ailedger doctor``).
        self.alarms = alarms if alarms is not None else Alarms()
        self.state = state
        self.signer = signer
        self.origin = signer.name
        self.tree = tree
        #: The state and the tree are used from this one thread only.
        self.state_thread = StateThread("notary-state")
        rejections = RecentRejections()
        self.sequencer = Sequencer(
            nc,
            state,
            self.state_thread,
            signer,
            tree,
            rejections,
            clock=clock,
            genesis=genesis,
            batch_size=batch_size,
            verify_threads=verify_threads,
            ack_wait=ack_wait,
            alarms=self.alarms,
            heads=heads,
        )
        #: The witnesses' add-checkpoint URLs (C2SP tlog-witness).
        self.witnesses = list(witnesses)
        self.witness_timeout = witness_timeout
        #: One HTTP client for every cosigning round: a new one per checkpoint
        #: costs a TLS context (~40 ms measured), a shared one ~6 ms a round.
        self._http: httpx.AsyncClient | None = None
        trust = state.trust
        self.checkpointer = Checkpointer(
            nc,
            self.state_thread,
            signer,
            tree,
            size=lambda: self.sequencer.reader.size,  # sealed leaves, not sequences
            catch_up=self.sequencer.sync,
            every=checkpoint_every,
            interval=checkpoint_interval,
            guard=self._may_sign,
            alarms=self.alarms,
            append_heads=self.sequencer.append_heads,
            cosign=self._cosign if trust is not None and trust.witness_quorum > 0 else None,
            recosign_interval=recosign_interval,
        )
        self.health = Health(
            nc,
            self.alarms,
            origin=self.origin,
            last_sequence=lambda: self.sequencer.last_sequence,
            checkpoint_size=lambda: (
                self.checkpointer.latest[0].size if self.checkpointer.latest else None
            ),
            interval=settings_check_interval,
        )
        self.lookup = Lookup(
            nc,
            state,
            self.state_thread,
            self.sequencer.receipt_of,
            rejections,
            self.checkpointer.tlog_proof,
        )
        #: The server's users follow the actor registry (None: not this notary's job).
        self.permissions = (
            BusPermissions(authorizer, state, self.state_thread) if authorizer else None
        )
        if self.permissions is not None:
            self.sequencer.on_integrated = self.permissions.integrated

    @property
    def last_sequence(self) -> int:
        """LEDGER's last entry, as far as this notary knows."""
        return self.sequencer.last_sequence

    @property
    def size(self) -> int:
        """Sealed entries in LEDGER (foreign messages are not entries)."""
        return self.sequencer.reader.size

    @property
    def latest_checkpoint(self) -> tuple[Checkpoint, bytes, int] | None:
        """The last checkpoint in CHECKPOINTS: (checkpoint, signed note, stream sequence)."""
        return self.checkpointer.latest

    @property
    def stats(self) -> dict[str, int]:
        return self.sequencer.stats

    async def start(self) -> None:
        """Set up streams, rebuild state from LEDGER, integrate genesis if the ledger is new."""
        await ensure_streams(self.nc)
        await self.health.check_streams()
        await self.health.subscribe()
        await self.sequencer.begin()
        if self.permissions is not None:
            trust = self.state.trust
            await self.permissions.refresh([trust.regulator] if trust is not None else [])
        await self.checkpointer.start(await self._log_verifiers())
        await self.sequencer.subscribe()
        await self.lookup.subscribe()
        log.info("notary ready: %s, %d entries", self.origin, self.size)

    async def _log_verifiers(self) -> Verifiers:
        """The ledger's notary keys, once this notary's key is proven to be one of them."""
        info = await self.state_thread.call(self.state.ledger_info)
        if info is None:
            raise NotaryError("LEDGER has no genesis entry")
        if self.signer.verifier().vkey not in info.notary_keys:
            raise NotaryError(
                f"this notary's key {self.signer.verifier().vkey} is not a notary key of "
                f"ledger {info.origin!r}"
            )
        if info.origin != self.origin:
            raise NotaryError(f"notary key is named {self.origin!r}, the ledger is {info.origin!r}")
        problem = self._log_key_problem()
        if problem is not None:
            raise NotaryError(f"refusing to start: {problem}")
        return Verifiers(*(Verifier.from_vkey(k) for k in info.notary_keys))

    async def run(self, stop: asyncio.Event) -> None:
        """Integrate submissions until ``stop`` is set."""
        while not stop.is_set():
            if not self.health.connection_ok():  # raises when NATS will not come back
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.2)
                continue
            await self.health.maybe_check_streams()
            await self.checkpointer.maybe_checkpoint()
            await self.sequencer.step()

    async def checkpoint(self) -> bytes | None:
        """Sign and publish a checkpoint of the whole tree; None if nothing new to cover."""
        return await self.checkpointer.checkpoint()

    async def _cosign(self, note: bytes, old_size: int) -> bytes:
        """The checkpoint ``note`` with the cosignatures of the trust policy's
        witness quorum, or :class:`~services.notary.cosigning.CosigningError`."""
        trust = self.state.trust
        assert trust is not None
        verifiers = Verifiers(*(CosignatureVerifier.from_vkey(k) for k in trust.witness_vkeys()))

        async def proof_from(old: int) -> list[bytes]:
            size = parse_checkpoint(note.partition(b"\n\n")[0].decode() + "\n").size
            if old in (0, size):
                return []
            return await self.state_thread.call(self.tree.consistency_proof, old, size)

        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.witness_timeout, trust_env=False)
        return await collect_cosignatures(
            note,
            old_size,
            await proof_from(old_size),
            self.witnesses,
            verifiers,
            trust.witness_quorum,
            timeout=self.witness_timeout,
            proof_from=proof_from,
            client=self._http,
        )

    def _log_key_problem(self) -> str | None:
        """Why the trust policy does not make this notary's log key valid now, or None."""
        trust = self.state.trust
        if trust is None:
            return None
        return trust.log_key_problem(self.signer.verifier().vkey, self.sequencer.clock.now())

    async def _may_sign(self) -> bool:
        """Checkpoints are signed only over streams with the required settings, with a
        log key the trust policy makes valid now."""
        problem = self._log_key_problem()
        if problem is not None:
            log.error("not signing a checkpoint: %s", problem)
            return False
        return self.health.signing and await self.health.check_streams()

    async def close(self) -> None:
        await self.health.unsubscribe()
        await self.lookup.unsubscribe()
        await self.sequencer.unsubscribe()
        await self.checkpointer.close()
        self.state_thread.close()
        self.sequencer.close()
        if self._http is not None:
            await self._http.aclose()


def open_head_map(path: Path) -> HeadMap:
    """The notary's head map store at ``path``; one that cannot be read (another
    version, a torn or foreign file) is derived data: removed and rebuilt from LEDGER."""
    try:
        return HeadMap(SqliteNodeStore(path))
    except HeadStoreError as e:
        log.warning("head map store %s unusable (%s): rebuilding it from LEDGER", path, e)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return HeadMap(SqliteNodeStore(path))


def _mentions(path: Path, public_key: str | None) -> bool:
    try:
        return public_key is not None and public_key in path.read_text()
    except OSError:
        return False


async def setup_bus(nats_url: str, home: Home, *, ack_wait: float = 10.0) -> None:
    """As the operator: create the streams and the notary's durable consumer if missing.
    The notary itself has no admin rights on the bus (DESIGN §7)."""
    nc = await connect(nats_url, name="ailedger-setup", **home.bus_identity(OPERATOR))
    try:
        await ensure_streams(nc)
        await ensure_notary_consumer(nc, ack_wait=ack_wait)
    finally:
        await nc.close()


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` + ``.lock``: one notary per state store."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise NotaryError(
                f"another notary is using the state store {path}; give this one its own (--state)"
            ) from None
        yield


def start_home_server(home: Home, port: int | None = None) -> EmbeddedNats:
    """The home's embedded nats-server, configured (not yet started) with NATS
    authorization on: the services' users now, the actors' once the notary has
    read the registry (the regulator is enrolled by the genesis entry itself)."""
    users = home.ensure_bus_identities().public_keys()
    authorization = render_authorization(users, {home.trust().regulator: True})
    return EmbeddedNats(home.nats_dir, port=port, authorization=authorization)


async def serve(
    home: Home,
    stop: asyncio.Event,
    *,
    nats_url: str | None = None,
    port: int | None = None,
    state_path: Path | None = None,
    clock: Clock | None = None,
    on_ready: Callable[[str, Notary], None] | None = None,
    batch_size: int = 500,
    ack_wait: float = 10.0,
    checkpoint_every: int = CHECKPOINT_EVERY,
    checkpoint_interval: float = CHECKPOINT_INTERVAL,
    witnesses: Sequence[str] | None = None,
) -> Notary:
    """Run a notary for ``home`` until ``stop`` is set.

    Without ``nats_url`` it starts the embedded nats-server on the home's store
    and writes its URL to ``home/run/nats.url`` for the other commands.
    """
    state_path = state_path or home.state_dir / "notary.sqlite"
    server: EmbeddedNats | None = None
    with exclusive(state_path):
        identities = home.identities()
        authorizer: Authorizer | None = None
        running = EmbeddedNats.attach(home.nats_dir) if nats_url is None else None
        if running is not None:
            # The home's server is already up (``ailedger up``'s supervisor runs it
            # as a part of its own): use it, and keep its authorization current.
            nats_url = running.url
            authorizer = Authorizer(identities, running.authorize)
            log.info("using the home's running nats-server %s (pid %d)", nats_url, running.pid)
        elif nats_url is None:
            # Authorization on by default: the services' users now, the actors'
            # as soon as the notary has read the registry.
            server = start_home_server(home, port)
            nats_url = await asyncio.to_thread(server.start)
            authorizer = Authorizer(identities, server.authorize)
            home.url_file.parent.mkdir(parents=True, exist_ok=True)
            home.url_file.write_text(nats_url + "\n")
        elif home.config().get("auth_file"):
            # External server: write its include file, run the configured reload command.
            config = home.config()
            authorizer = Authorizer(
                identities, external_apply(Path(config["auth_file"]), config.get("auth_reload"))
            )
            if not _mentions(Path(config["auth_file"]), identities.public_keys().get(OPERATOR)):
                # A new home: its services' users, before anyone connects.
                authorizer.update({home.trust().regulator: True})
        try:
            await setup_bus(nats_url, home, ack_wait=ack_wait)
            nc = await connect(
                nats_url, name="ailedger-notary", forever=True, **home.bus_identity(NOTARY)
            )
            state = LedgerState(sqlite_env(state_path), trust=home.trust())
            # The head map's nodes beside the state: derived, checked against
            # LEDGER's heads leaves at start and rebuilt from LEDGER if they differ.
            heads = open_head_map(state_path.with_name(state_path.stem + ".heads.sqlite"))
            notary = Notary(
                nc,
                state,
                home.notary_signer(),
                TreeStore(home.tree_path),
                clock=clock,
                genesis=home.genesis(),
                batch_size=batch_size,
                ack_wait=ack_wait,
                checkpoint_every=checkpoint_every,
                checkpoint_interval=checkpoint_interval,
                authorizer=authorizer,
                heads=heads,
                witnesses=home.witness_urls() if witnesses is None else witnesses,
            )
            notary.health.server = server  # its exit ends the notary (non-zero)
            try:
                # (``ailedger init`` only integrates the genesis: ``stop`` is set.)
                if notary.checkpointer.cosign and not notary.witnesses and not stop.is_set():
                    log.error(
                        "the trust policy requires %d witness cosignatures and no witness is "
                        "configured (config.json 'witnesses'): checkpoints will be withheld",
                        home.trust().witness_quorum,
                    )
                await notary.start()
                if on_ready is not None:
                    on_ready(nats_url, notary)
                await notary.run(stop)
            finally:
                await notary.close()
                notary.tree.close()
                heads.close()
                with contextlib.suppress(Exception):
                    await nc.drain()
        finally:
            if server is not None:
                home.url_file.unlink(missing_ok=True)
                await asyncio.to_thread(server.stop)
    return notary
