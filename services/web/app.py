"""The web app's factory, its shared context and its server.

:func:`create_app` builds the Litestar application: the HTTP API under
``/api/v1`` (:mod:`services.web.api`), its OpenAPI document at
``/api/v1/openapi.json``, and, unless told not to, the web UI of
:mod:`services.web.ui` (``ui_router()`` and ``template_config()``). Every
handler, the UI's too, gets the app's :class:`WebContext` as the dependency
``web``.

:class:`WebContext` holds what requests share: the ledger home and its trust
policy, one NATS connection as the ``_reader`` bus identity (DESIGN §7: direct
get on LEDGER, CHECKPOINTS and REJECTED, nothing else), the gateway's client
as the ``_gateway`` identity (it publishes actors' signed envelopes to
``intake.<actor>.<type>``; it holds no signing key), the home's Merkle tree
file, and an incremental reader of LEDGER through its seals
(:mod:`ledger.bus.sealed`), so that an entry by index or a proof costs a direct
get and O(log n) stored hashes once the reader has caught up. Nothing here
needs the notary: reads come from LEDGER and CHECKPOINTS alone.

:func:`serve_web` runs the app on uvicorn inside the caller's event loop (as
the witness does); ``ailedger web`` calls it. Localhost by default.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin

from ledger.bus.auth import GATEWAY, READER
from ledger.bus.home import Home
from ledger.bus.proofs import ProofUnavailable, SignedCheckpoint, find_checkpoint, tlog_proof
from ledger.bus.sealed import Leaf, SealedReader, parse_leaf, trusted_reader
from ledger.bus.streams import (
    CHECKPOINTS,
    LEDGER,
    connect,
    get_message,
    last_message,
    last_sequence,
    read_stream,
)
from ledger.formats.merkle import stored_hash_index
from ledger.formats.note import NoteError, Verifier, Verifiers, open_note
from ledger.formats.tree import TreeError, TreeStore
from ledger.formats.trust import TrustPolicy
from ledger.state.persistence import store_envs
from ledger.views.compliance import ComplianceView
from ledger.views.store import open_view
from services.httpserve import bind, serve_until
from services.web.auth import TokenStore, tokens_path
from services.web.gateway import Gateway
from services.web.problems import WebCannotRun, handle_exception

__all__ = [
    "DEFAULT_PORT",
    "MAX_BODY",
    "WebConfig",
    "WebContext",
    "create_app",
    "serve_web",
]

log = logging.getLogger("ailedger.web")
T = TypeVar("T")

#: The largest request body of any endpoint (413 above); the gateway's is smaller.
MAX_BODY: Final = 1 << 20
DEFAULT_PORT: Final = 8470
API_VERSION: Final = "1"


@dataclass(frozen=True)
class WebConfig:
    """What the web app needs: a ledger home and the NATS server of its ledger."""

    home: Home
    nats_url: str
    max_body: int = MAX_BODY
    #: How long the gateway waits for the notary's verdict before answering 503.
    submit_timeout: float = 30.0


class WebContext:
    """What the requests of one app share (the dependency ``web``)."""

    def __init__(self, config: WebConfig) -> None:
        self.config = config
        self.home = config.home
        if not self.home.exists():
            raise WebCannotRun(f"{self.home.path} is not a ledger home")
        self.trust: TrustPolicy = self.home.trust()
        self.verifiers = Verifiers(*(Verifier.from_vkey(k) for k in self.trust.log_vkeys()))
        self.tokens = TokenStore(tokens_path(self.home))
        self.nc: Any = None
        self.tree: TreeStore | None = None
        self.gateway: Gateway | None = None
        #: wb-query's read object (investigation), once the query layer is there.
        self.query: Any = None
        self._reader: SealedReader | None = None
        self._warming: asyncio.Task[None] | None = None
        self._closed = False
        self._read_lock = asyncio.Lock()
        self._checkpoint_lock = asyncio.Lock()
        self._gateway_lock = asyncio.Lock()
        self._gateway_retry = 0.0
        self._view: ComplianceView | None = None
        #: The read model's questions run on this one thread (ComplianceView's rule).
        self._view_thread = ThreadPoolExecutor(1, thread_name_prefix="ailedger-web-view")
        self._checkpoint_position = 0
        #: tree size -> CHECKPOINTS sequence of its newest (most recently cosigned) note
        self._checkpoints: dict[int, int] = {}
        self._opened: dict[bytes, SignedCheckpoint | None] = {}
        self._roots_checked: set[tuple[int, bytes]] = set()

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Connect to NATS (NatsUnreachable names the URL), open the tree, start reading
        LEDGER; idempotent (``serve_web`` starts it before it listens)."""
        if self.nc is not None:
            return
        self.nc = await connect(
            self.config.nats_url,
            name="ailedger-web",
            forever=True,
            **self.home.bus_identity(READER),
        )
        self.tree = TreeStore(self.home.tree_path)
        self._warming = asyncio.create_task(self._warm_up())
        await self.ensure_gateway()

    async def ensure_gateway(self) -> Gateway | None:
        """The gateway's NATS client, connected as ``_gateway`` (retried at most every 5 s
        while it cannot connect: the server may not know the identity yet; connected again
        when nats-py gave its connection up for good)."""
        if self.gateway is not None and self.gateway.closed:
            log.warning("the gateway's NATS connection closed; connecting again")
            with contextlib.suppress(Exception):
                await self.gateway.close()
            self.gateway = None
            self._gateway_retry = 0.0
        if self.gateway is not None:
            return self.gateway
        async with self._gateway_lock:
            now = time.monotonic()
            if self.gateway is not None or now < self._gateway_retry:
                return self.gateway
            self._gateway_retry = now + 5.0
            identity = self.home.identities().get(GATEWAY)
            if identity is None:
                log.warning("no %s bus identity in %s: the gateway is off", GATEWAY, self.home.path)
                return None
            try:
                self.gateway = await Gateway.connect(
                    self.config.nats_url, identity, self.trust, timeout=self.config.submit_timeout
                )
            except Exception as e:  # refused by the server's authorization, unreachable
                log.warning("the gateway cannot connect as %s: %s", GATEWAY, e)
            return self.gateway

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._warming is not None:
            self._warming.cancel()
            with contextlib.suppress(BaseException):
                await self._warming
        if self.gateway is not None:
            with contextlib.suppress(Exception):
                await self.gateway.close()
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.drain()
        if self.tree is not None:
            self.tree.close()
        closing = asyncio.get_running_loop().run_in_executor(self._view_thread, self._close_view)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(closing, 10)
        self._view_thread.shutdown(wait=False)

    # -- the read model (the projector's compliance view) ---------------------------

    def _close_view(self) -> None:
        if self._view is not None:
            datastore: Any = getattr(self._view.view, "datastore", None)
            with contextlib.suppress(Exception):
                if datastore is not None:
                    datastore.close()
            self._view = None

    def _with_view(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        if self._view is None:
            self._view = open_view(store_envs(self.home.state_dir)[1])
        return fn(self._view, *args, **kwargs)

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(view, *args, **kwargs)`` on the read model's thread, where the
        compliance view (the projector's, in the home's state directory) is opened
        once. It only reads: the projector keeps it up to date."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._view_thread, functools.partial(self._with_view, fn, args, kwargs)
        )

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the read model's thread (for :mod:`ledger.bus.investigate`'s
        ``call=``: the view's own methods)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._view_thread, functools.partial(fn, *args))

    def view(self) -> ComplianceView:
        """The compliance view, opened on the read model's thread (call its methods
        through :meth:`read` or :meth:`call`)."""
        if self._view is None:
            self._view_thread.submit(self._with_view, lambda v: v, (), {}).result(timeout=30)
        assert self._view is not None
        return self._view

    # -- LEDGER through its seals --------------------------------------------------

    def _tree(self) -> TreeStore:
        assert self.tree is not None, "the web context is not started"
        return self.tree

    async def catch_up(self, size: int | None = None) -> int:
        """Read LEDGER's new sealed batches (up to its end, or until ``size`` sealed
        entries), appending their leaves to the tree file where it is behind, batch by
        batch (the notary may append the same leaves to the same file first). Returns
        the number of sealed entries known."""
        async with self._read_lock:
            reader = self._ledger_reader()
            if size is not None and reader.size >= size:
                return reader.size
            # Without a size: what LEDGER holds now, not what a busy notary appends
            # meanwhile (a batch being committed at the end is still waited for).
            target = await last_sequence(self.nc, LEDGER) if size is None else None
            for attempt in range(2):
                async with contextlib.aclosing(reader.read()) as batches:
                    async for batch in batches:
                        pairs = [(e.index, e.leaf_hash) for e in batch.entries]
                        if not await asyncio.to_thread(_extend, self._tree(), pairs):
                            if attempt:
                                raise ProofUnavailable(
                                    f"the tree file {self._tree().path} does not follow LEDGER"
                                )
                            # the tree file lost leaves this reader had seen (deleted,
                            # rebuilt): read LEDGER again from its start
                            log.warning("tree file %s behind LEDGER: re-reading", self._tree().path)
                            self._reader = None
                            break
                        if size is not None and reader.size >= size:
                            break
                        if target is not None and reader.position >= target:
                            break
                if self._reader is not None:
                    break
                reader = self._ledger_reader()
            return reader.size

    def _ledger_reader(self) -> SealedReader:
        if self._reader is None:
            self._reader = trusted_reader(self.nc, self.trust)
            self._reader.keep_seals = False
        return self._reader

    async def _warm_up(self) -> None:
        """Read LEDGER once at start, so that the first entry asked for is served at once."""
        try:
            # in steps, so that requests get the reader's lock between them
            target = await last_sequence(self.nc, LEDGER)
            reader = self._ledger_reader()
            while reader.position < target:
                before = reader.position
                await self.catch_up(reader.size + 20_000)
                reader = self._ledger_reader()
                if reader.position == before:
                    break
            log.info("web: %d sealed entries read from LEDGER", reader.size)
        except Exception as e:  # a request will try again, and say why
            log.warning("web: reading LEDGER at start: %s", e)

    async def entry(self, index: int) -> tuple[Leaf, int]:
        """Sealed leaf ``index`` and its LEDGER sequence (ProofUnavailable if not sealed)."""
        if index < 0:
            raise ProofUnavailable(f"no entry {index}")
        sequence = self._ledger_reader().sequence_of(index)
        if sequence is None:
            known = await self.catch_up(index + 1)
            sequence = self._ledger_reader().sequence_of(index)
            if sequence is None:
                raise ProofUnavailable(f"no sealed entry {index} (LEDGER holds {known})")
        message = await get_message(self.nc, LEDGER, sequence)
        if message is None:
            raise ProofUnavailable(f"LEDGER message {sequence} of entry {index} is gone")
        leaf = parse_leaf(message.data)
        # What is served is the leaf that the seals folded into the tree, nothing else.
        tree = self._tree()
        (stored,) = await asyncio.to_thread(tree.read_hashes, [stored_hash_index(0, index)])
        if leaf.index != index or leaf.leaf_hash != stored:
            raise ProofUnavailable(f"LEDGER message {sequence} is not the sealed entry {index}")
        return leaf, sequence

    # -- checkpoints ------------------------------------------------------------

    def _signed(self, data: bytes) -> SignedCheckpoint | None:
        """A checkpoint of this ledger signed by a log key of the trust policy, else None
        (the last notes opened are remembered: the newest is asked for again and again)."""
        if data in self._opened:
            return self._opened[data]
        try:
            open_note(data, self.verifiers)
            signed: SignedCheckpoint | None = SignedCheckpoint.parse(data)
        except (ProofUnavailable, NoteError, ValueError):
            signed = None
        if signed is not None and signed.checkpoint.origin != self.trust.origin:
            signed = None
        if len(self._opened) >= 64:
            del self._opened[next(iter(self._opened))]
        self._opened[data] = signed
        return signed

    async def latest_checkpoint(self) -> SignedCheckpoint:
        """The newest checkpoint in CHECKPOINTS with a valid log signature."""
        message = await last_message(self.nc, CHECKPOINTS)
        if message is None:
            raise ProofUnavailable("no checkpoint has been signed yet")
        signed = self._signed(message.data)
        if signed is not None:
            return signed
        # the last message is foreign: the newest one that is not
        return await find_checkpoint(self.nc, verifiers=self.verifiers)

    async def checkpoint_sizes(self) -> dict[int, int]:
        """Every signed checkpoint's tree size -> the sequence of its newest note."""
        async with self._checkpoint_lock:
            last = await last_sequence(self.nc, CHECKPOINTS)
            if last > self._checkpoint_position:
                start = self._checkpoint_position + 1
                async for m in read_stream(self.nc, CHECKPOINTS, start, last):
                    signed = self._signed(m.data)
                    if signed is not None:
                        self._checkpoints[signed.checkpoint.size] = m.sequence
                self._checkpoint_position = last
            return dict(self._checkpoints)

    async def checkpoint(self, size: int | None = None) -> SignedCheckpoint:
        """The newest checkpoint, or the newest note of the checkpoint of tree size ``size``."""
        if size is None:
            return await self.latest_checkpoint()
        sequence = (await self.checkpoint_sizes()).get(size)
        message = None if sequence is None else await get_message(self.nc, CHECKPOINTS, sequence)
        signed = None if message is None else self._signed(message.data)
        if signed is None:
            raise ProofUnavailable(f"no checkpoint of size {size}")
        return signed

    async def proof_tree(self, signed: SignedCheckpoint) -> TreeStore:
        """The tree file, holding at least the checkpoint's leaves and agreeing with its root."""
        size = signed.checkpoint.size
        await self.catch_up(size)
        tree = self._tree()
        if tree.size < size:
            raise ProofUnavailable(f"LEDGER holds fewer sealed entries than {size}")
        if (size, signed.checkpoint.root_hash) not in self._roots_checked:
            # the tree file only grows: a root it gave once it gives again
            root = await asyncio.to_thread(tree.root, size)
            if root != signed.checkpoint.root_hash:
                raise ProofUnavailable(
                    f"the tree of LEDGER's first {size} entries does not give the checkpoint's root"
                )
            self._roots_checked.add((size, root))
        return tree

    async def tlog_proof(self, index: int, size: int | None = None) -> bytes:
        """C2SP tlog-proof of entry ``index`` under the newest checkpoint (or of ``size``)."""
        signed = await self.checkpoint(size)
        if not 0 <= index < signed.checkpoint.size:
            raise ProofUnavailable(
                f"entry {index} is not covered by the checkpoint of size {signed.checkpoint.size}"
            )
        tree = await self.proof_tree(signed)
        return await asyncio.to_thread(tlog_proof, tree, index, signed)


def _extend(tree: TreeStore, leaves: Sequence[tuple[int, bytes]]) -> bool:
    """Append the (index, leaf hash) pairs the tree lacks; False if the tree is short of
    the first of them (a gap: it lost leaves). Another writer appending the same leaves
    first is not an error."""
    for _ in range(5):
        size = tree.size
        new = [(i, h) for i, h in leaves if i >= size]
        if not new:
            return True
        if new[0][0] != size:
            return False
        try:
            tree.append(size, [h for _, h in new])
            return True
        except TreeError:  # the notary appended meanwhile: look again
            continue
    return tree.size >= leaves[-1][0] + 1


def _provide_web(state: State) -> WebContext:
    web = state.get("web")
    assert isinstance(web, WebContext)
    return web


def _ui_parts(web: WebContext) -> tuple[list[Any], Any]:
    """The web UI's route handlers and template configuration: what
    ``services.web.ui.mount(web)`` returns, if that module and function exist."""
    try:
        ui: Any = importlib.import_module("services.web.ui")
    except ImportError as e:
        if e.name != "services.web.ui":
            raise
        return [], None
    mount = getattr(ui, "mount", None)
    if mount is None:
        log.warning("services.web.ui has no mount(web): the web UI is off")
        return [], None
    handlers, template_config = mount(web)
    return list(handlers), template_config


def create_app(
    config: WebConfig,
    *,
    ui: bool = True,
    route_handlers: Sequence[Any] = (),
) -> Litestar:
    """The web app: the API under /api/v1, its OpenAPI document, and the UI (``ui``).
    ``route_handlers`` are added as they are (tests, other front ends)."""
    from services.web import api, investigation  # they import WebContext from here

    web = WebContext(config)
    handlers: list[Any] = [
        api.api_router(config.max_body),
        investigation.investigation_router(),
        *route_handlers,
    ]
    template_config = None
    if ui:
        ui_handlers, template_config = _ui_parts(web)
        handlers += ui_handlers

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await web.start()
        try:
            yield
        finally:
            await web.close()

    return Litestar(
        route_handlers=handlers,
        dependencies={"web": Provide(_provide_web, sync_to_thread=False)},
        state=State({"web": web}),
        lifespan=[lifespan],
        exception_handlers={Exception: handle_exception},
        request_max_body_size=config.max_body,
        template_config=template_config,
        openapi_config=OpenAPIConfig(
            title="ailedger",
            version=API_VERSION,
            description=(
                "A verifiable compliance ledger for AI systems: public checkpoints, entries "
                "and proofs; a gateway for signed DSSE envelopes; investigation endpoints for "
                "regulators and auditors. Errors are RFC 9457 problem details with a `code`."
            ),
            # Litestar serves its own copy (and a catch-all 404 page) under this path;
            # the stable address is the API's own /api/v1/openapi.json.
            path="/api/v1/_openapi",
            render_plugins=[JsonRenderPlugin()],
        ),
        logging_config=None,
    )


# -- serving ------------------------------------------------------------------------


async def serve_web(
    config: WebConfig,
    stop: asyncio.Event,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    ui: bool = True,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Run the web app over HTTP in the current event loop until ``stop`` is set.
    ``port`` 0 picks a free port; ``on_ready(url)`` is called once it answers."""
    app = create_app(config, ui=ui)
    web = app.state["web"]
    assert isinstance(web, WebContext)
    sock = bind(host, port, WebCannotRun)
    try:
        await web.start()  # a NATS server that does not answer is said here, by its URL
    except BaseException:
        sock.close()
        await web.close()
        raise
    await serve_until(
        app,
        sock,
        stop,
        on_ready=on_ready,
        not_started=lambda: WebCannotRun("the web app stopped before it started (see its log)"),
    )


def ready_line(url: str) -> str:
    """What ``ailedger web`` prints once it listens (the supervisor waits for it)."""
    return f"web up: {url} (pid {os.getpid()})"
