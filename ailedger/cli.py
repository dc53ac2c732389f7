"""The ``ailedger`` command line.

Errors are one line on stderr, ``error: <message> [<code>]``, and the exit
status of the error's class (docs/errors.md lists them all): 1 a check
failed, 2 a usage or input error, 3 a service is unavailable. Anything that
is not a :class:`~ledger.formats.errors.LedgerError` is a bug in ailedger:
one line that says so, exit status 70. Never a traceback (set
``AILEDGER_DEBUG=1`` to see one). Typer's own usage errors exit 2; a closed
stdout (``ailedger log | head``) exits 0 quietly.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ailedger import resources
from ailedger.demo import VERDICT_STYLE, ledger_table, rejections_table
from ledger.bus import investigate, proofs
from ledger.bus.auth import READER
from ledger.bus.client import (
    LedgerClient,
    SubmissionRejected,
    SubmissionTimeout,
    envelope_head,
    sign_event,
)
from ledger.bus.home import (
    DEFAULT_HOME,
    Home,
    init_home,
    remember_home,
    resolve_home,
    user_config_dir,
)
from ledger.bus.logview import (
    LogRow,
    RejectionRow,
    describe,
    read_log,
    read_rejections,
    sealed_entries,
)
from ledger.bus.streams import (
    HDR_DETAIL,
    HDR_EVENT,
    HDR_INTAKE_SUBJECT,
    HDR_REASON,
    REJECTED,
    NatsUnreachable,
    connect,
    last_sequence,
    read_stream,
)
from ledger.formats.dsse import EnvelopeError, add_signature, parse_envelope
from ledger.formats.entry import Entry
from ledger.formats.errors import BUG, CHECK_FAILED, USAGE, LedgerError
from ledger.formats.heads import HeadsLeaf
from ledger.formats.keys import ActorKey, generate, load_key, save_key
from ledger.formats.receipt import Receipt
from ledger.formats.timeutil import SystemClock, format_moment, format_time, parse_moment
from ledger.formats.tree import TreeStore
from ledger.formats.trust import TrustPolicy
from ledger.law import events as ev
from ledger.law.rules import SystemVerdict
from ledger.state.application import LedgerState
from ledger.state.persistence import store_envs
from ledger.verify.bundle import VerificationError
from ledger.verify.pins import PinStore, verify_pinned
from ledger.views.compliance import TimelineRow
from ledger.views.store import WRITER_LOCK, open_view, writing
from services.projector import Projector, RebuildReport
from services.projector import rebuild as projector_rebuild

app = typer.Typer(
    name="ailedger",
    help="A verifiable compliance ledger for AI systems (Kazakhstan Law No. 230-VIII).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


class _Console(Console):
    def on_broken_pipe(self) -> None:
        # Rich would exit 1; the reader going away is not an error (one_line_errors).
        self.quiet = True
        raise BrokenPipeError


# Piped output (CI logs, files) gets room for the ledger tables instead of 80 columns.
console = _Console() if sys.stdout.isatty() else _Console(width=132)
err = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=200)

HomeOpt = Annotated[
    Path | None,
    typer.Option(
        "--home",
        envvar="AILEDGER_HOME",
        help="Ledger home (default: ./.ailedger, else the one `ailedger init` remembered).",
        show_default=False,
    ),
]
NatsOpt = Annotated[
    str | None,
    typer.Option(
        "--nats",
        envvar="AILEDGER_NATS_URL",
        help="NATS URL (default: the one `ailedger init --nats` stored in the home, "
        "else the embedded server of `ailedger up`).",
    ),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="JSON: one object (one per line for lists and streams).")
]


class CliError(LedgerError):
    """A bad argument or option, or a command used where it cannot work."""

    code = "usage"
    exit_status = USAGE


class UnreadableFile(CliError):
    """A file named on the command line is missing or cannot be read."""

    code = "file_unreadable"
    exit_status = USAGE


P = ParamSpec("P")
R = TypeVar("R")

#: click's ClickException (vendored by newer Typers): Typer reports these itself,
#: a usage error with exit status 2.
_CLICK_EXCEPTION: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def error_line(e: LedgerError) -> str:
    """``error: <message> [<code>]``: what ``ailedger`` prints for a LedgerError."""
    message = str(e)
    if message.startswith(f"{e.code}: "):  # rejections spell their code out already
        message = message[len(e.code) + 2 :]
    return f"error: {_one_line(message) or e.code} [{e.code}]"


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def one_line_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """A LedgerError becomes one line on stderr and its class's exit status; anything
    else is a bug (exit 70); a closed stdout exits 0. Never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, _CLICK_EXCEPTION, KeyboardInterrupt):
            raise  # Typer's own: usage errors exit 2
        except BrokenPipeError:
            # The reader went away (`ailedger log | head`): not an error.
            _silence_stdout()
            raise typer.Exit(0) from None
        except LedgerError as e:
            if os.environ.get("AILEDGER_DEBUG"):
                raise
            sys.stderr.write(error_line(e) + "\n")
            raise typer.Exit(e.exit_status) from None
        except Exception as e:
            if os.environ.get("AILEDGER_DEBUG"):
                raise
            sys.stderr.write(
                f"error: a bug in ailedger: {type(e).__name__}: {_one_line(str(e))} "
                "(please report it; AILEDGER_DEBUG=1 shows the traceback)\n"
            )
            raise typer.Exit(BUG) from None

    return wrapper


def _version() -> str:
    try:
        return package_version("ai-compliance-ledger")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def _version_callback(value: bool) -> None:
    if value:
        sys.stdout.write(f"ailedger {_version()}\n")
        raise typer.Exit(0)


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """A verifiable compliance ledger for AI systems (Kazakhstan Law No. 230-VIII)."""


def _emit(doc: object) -> None:
    """One JSON object on one line of stdout (the only --json format)."""
    sys.stdout.write(json.dumps(doc, ensure_ascii=False) + "\n")


def _home_path(home: Path | None) -> Path:
    return resolve_home(home)


def _nats_source(home: Path | None, nats: str | None) -> tuple[str, str]:
    """The NATS URL and a hint to add when nothing answers there."""
    if nats:
        return nats, ""
    if _started:
        return _started[-1], f" (the home's nats-server, store {Home(_home_path(home)).nats_dir})"
    path = _home_path(home)
    h = Home(path)
    configured = h.nats_url
    if configured:
        return configured, f" (the server configured for {path} in {h.config_path})"
    if h.url_file.exists():
        return h.url_file.read_text().strip(), (
            f" (the embedded server of {path}: is `ailedger up --home {path}` still running?)"
        )
    raise CliError(f"no NATS server: start one with `ailedger up --home {path}` or pass --nats URL")


def _nats_url(home: Path | None, nats: str | None) -> str:
    return _nats_source(home, nats)[0]


#: The URL of the home's running nats-server, found or started by a reading command
#: (:func:`reads_ledger`).
_started: list[str] = []


def reads_ledger(fn: Callable[P, R]) -> Callable[P, R]:
    """For a command that only reads (log, status, get, prove ...): when the home's own
    embedded nats-server is not running (no `ailedger up`, a demo that is over), start
    it for the command's duration (LEDGER is on its disk) and stop it after. The
    command still reads as the home's `_reader`; no notary runs. A configured server
    (--nats, `ailedger init --nats`) is never started."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        home, nats = kwargs.get("home"), kwargs.get("nats")
        server, url = _offline_server(
            home if isinstance(home, Path) else None, nats if isinstance(nats, str) else None
        )
        if url is None:
            return fn(*args, **kwargs)
        _started.append(url)
        try:
            return fn(*args, **kwargs)
        finally:
            _started.clear()
            if server is not None:
                server.stop()

    return wrapper


def _offline_server(home: Path | None, nats: str | None) -> tuple[Any, str | None]:
    """The home's embedded nats-server if it should be started (:func:`reads_ledger`),
    started, and the URL to read from (None: the usual one)."""
    from ledger.bus.natsserver import AUTH_FILE, EmbeddedNats

    if nats:
        return None, None
    h = Home(_home_path(home))
    if not h.exists() or h.nats_url or not (h.nats_dir / "jetstream").is_dir():
        return None, None  # not a home, an external server, or a store that never served
    running = EmbeddedNats.attach(h.nats_dir)
    if running is not None:
        return None, running.url  # `ailedger up`'s, or another command's: used as it is
    h.ensure_bus_identities()
    # The users the notary last wrote (actors included), else the services' own.
    auth = h.nats_dir / AUTH_FILE
    if auth.is_file():
        server = EmbeddedNats(h.nats_dir, authorization=auth.read_text())
    else:
        from services.notary.service import start_home_server

        server = start_home_server(h)
    url = server.start()
    err.print(
        f"note: the home's nats-server was not running: started for this command "
        f"({url}, pid {server.pid}; no notary)",
        highlight=False,
    )
    return server, url


def _bus_identity(
    home: Path | None, identity: str | None, creds: Path | None = None
) -> dict[str, Any]:
    """Connect options of a bus identity (DESIGN §7): the ``--creds`` file, else the
    home's identity ``identity`` (reader, or the submitting actor), else none."""
    if creds is not None:
        if not creds.is_file():
            raise CliError(f"{creds}: no such credentials file (`ailedger creds issue ACTOR`)")
        name = identity or creds.name.split(".")[0]
        return {"nkeys_seed": str(creds), "inbox_prefix": f"_INBOX.{name}"}
    if identity is None:
        return {}
    return Home(_home_path(home)).bus_identity(identity)


async def _connect(
    home: Path | None,
    nats: str | None,
    name: str,
    forever: bool = False,
    *,
    identity: str | None = READER,
    creds: Path | None = None,
) -> Any:
    """A NATS connection for ``home``, as bus identity ``identity`` (the home's reader
    unless told); when nothing answers, say which URL failed and where it came from
    (never suggesting the embedded server for an external one).
    ``forever``: a long-running command, which reconnects without end."""
    url, hint = _nats_source(home, nats)
    options = _bus_identity(home, identity, creds)
    try:
        if forever:
            return await connect(url, name=name, forever=True, **options)
        return await connect(url, name=name, max_reconnect_attempts=2, **options)
    except NatsUnreachable as e:
        raise NatsUnreachable(f"{e}{hint}") from None


def _home(path: Path | None) -> Home:
    resolved = _home_path(path)
    home = Home(resolved)
    if not home.exists():
        raise CliError(
            f"{resolved} is not a ledger home: create one with `ailedger init {resolved}`"
        )
    return home


creds_app = typer.Typer(
    help="Bus credentials (DESIGN §7): each actor connects to NATS with an nkey of its own, "
    "never its signing key.",
    no_args_is_help=True,
)
app.add_typer(creds_app, name="creds")


@creds_app.command("issue")
@one_line_errors
def creds_issue(
    actor: Annotated[str, typer.Argument(help="The actor (as enrolled).")],
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Where to write it (default: ./ACTOR.creds)."),
    ] = None,
    home: HomeOpt = None,
) -> None:
    """Write ACTOR's bus credentials file (0600) for `submit --creds` and the SDK's creds=.

    The server lets the actor publish only to its own intake subjects once the
    notary has integrated its enrolment, and refuses it while it is suspended.
    """
    h = _home(home)
    known = h.identities().get(actor) is not None
    out = h.identities().issue(actor, output or Path(f"{actor}.creds"))
    console.print(f"bus credentials of {actor}: {out} (0600; keep it with the actor)")
    if not known:
        # The notary makes an actor's identity when it integrates its enrolment.
        err.print(
            f"note: {actor} has no enrolment the notary has seen yet: the server accepts "
            "these credentials once the notary integrates its enrolment (or next reloads)",
            highlight=False,
        )


@app.command()
@one_line_errors
def keygen(
    actor: Annotated[str, typer.Argument(help="Actor id (a slug, e.g. bank).")],
    out: Annotated[Path | None, typer.Option(help="Key file (default: ./<actor>.pem).")] = None,
) -> None:
    """Generate an Ed25519 key for an actor (PEM, mode 0600)."""
    key = generate(actor)
    path = out or Path(f"{actor}.pem")
    save_key(key, path)
    console.print(f"wrote {path}")
    console.print(f"  actor        {key.actor}")
    console.print(f"  key id       {key.keyid}")
    console.print(f"  public key   {key.public_key_b64}")


@app.command()
@one_line_errors
def init(
    directory: Annotated[
        Path | None,
        typer.Argument(
            help="Where to create the ledger home (default: ./.ailedger).", show_default=False
        ),
    ] = None,
    home_opt: Annotated[
        Path | None, typer.Option("--home", envvar="AILEDGER_HOME", help="Same as DIRECTORY.")
    ] = None,
    origin: Annotated[str, typer.Option(help="The log's origin line.")] = "ailedger.local/registry",
    regulator: Annotated[str, typer.Option(help="The regulator's actor id.")] = "regulator",
    regulator_name: Annotated[str, typer.Option()] = (
        "Ministry of Artificial Intelligence and Digital Development"
    ),
    regulator_bin: Annotated[str, typer.Option(help="12-digit BIN.")] = "000000000000",
    nats: NatsOpt = None,
    auth_file: Annotated[
        Path | None,
        typer.Option(
            help="With --nats: the authorization file the external server includes "
            "(ailedger writes its users there, DESIGN §7).",
        ),
    ] = None,
    auth_reload: Annotated[
        str | None,
        typer.Option(
            help="With --nats: the shell command that makes the external server reload "
            "its configuration, e.g. 'nats-server --signal reload=PID'.",
        ),
    ] = None,
    witness: Annotated[
        bool,
        typer.Option(
            "--witness/--no-witness",
            help="A local witness key, trusted with quorum 1, run by `ailedger up` beside "
            "the notary: a demonstration (real deployments name independent witnesses).",
        ),
    ] = True,
) -> None:
    """Create root keys, the trust policy and the genesis entry (integrated as index 0).

    The home and --nats are remembered: later commands need neither flag.
    """
    if (auth_file or auth_reload) and not nats:
        raise CliError("--auth-file and --auth-reload are for an external server (--nats URL)")
    from services.notary import serve

    if directory is not None and home_opt is not None and directory != home_opt:
        raise CliError(f"two homes given: {directory} and --home {home_opt}; give one")
    directory = directory or home_opt or DEFAULT_HOME
    home = init_home(
        directory,
        origin=origin,
        regulator=regulator,
        regulator_name=regulator_name,
        regulator_bin=regulator_bin,
        local_witness=witness,
    )

    async def integrate_genesis() -> str:
        stop = asyncio.Event()
        stop.set()  # start (which integrates genesis), then stop at once
        url = ""

        def ready(u: str, _notary: object) -> None:
            nonlocal url
            url = u

        await serve(home, stop, nats_url=nats, on_ready=ready)
        return url

    if nats:
        home.save_config(
            nats=nats,
            auth_file=str(auth_file.resolve()) if auth_file else None,
            auth_reload=auth_reload,
        )
    remember_home(directory)
    try:
        url = asyncio.run(integrate_genesis())
    except NatsUnreachable as e:
        raise NatsUnreachable(
            f"{e}; the home {directory} was created: `ailedger up --home {directory}` "
            "integrates its genesis once that server answers"
        ) from None
    console.print(f"created ledger home {directory}")
    console.print(f"  trust policy   {home.trust_path}  (publish this)")
    console.print(
        f"  genesis        {home.genesis_path}  (LEDGER index 0 on {nats or 'the embedded store'})"
    )
    console.print(f"  regulator key  {home.regulator_key_path}  (root key, keep offline)")
    console.print(f"  notary key     {home.notary_key_path}")
    if witness:
        console.print(
            f"  witness key    {home.witness_key_path}  (local witness, quorum 1: a demonstration)"
        )
    console.print(f"  origin         {origin}")
    if nats:
        console.print(f"  nats           {nats}  (remembered in {home.config_path})")
    console.print(f"  remembered     {directory.resolve()}  (commands find it without --home)")
    if url and not nats:
        console.print(f"next: ailedger up --home {directory}")
    elif nats:
        console.print(f"next: ailedger up --home {directory}   (the notary, on {nats})")


@app.command()
@one_line_errors
def up(
    home: HomeOpt = None,
    nats: NatsOpt = None,
    port: Annotated[int | None, typer.Option(help="Port of the embedded server.")] = None,
    web: Annotated[bool, typer.Option("--web/--no-web", help="Run the web app.")] = True,
    web_port: Annotated[
        int, typer.Option(help="Port of the web app on 127.0.0.1 (0: any free port).")
    ] = 8470,
    state: Annotated[
        Path | None, typer.Option(help="The notary's state store (SQLite; rebuildable).")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Submissions taken from INTAKE at once.")
    ] = None,
    ack_wait: Annotated[
        float | None, typer.Option(help="Seconds before an unfinished submission is redelivered.")
    ] = None,
    checkpoint_every: Annotated[
        int | None, typer.Option(help="Sign a checkpoint after this many new entries ...")
    ] = None,
    checkpoint_interval: Annotated[
        float | None, typer.Option(help="... or after this many seconds with new entries.")
    ] = None,
) -> None:
    """Run the ledger in the foreground: nats-server, witness, notary, projector, web app.

    Each part is a process of its own with its output in one log; Ctrl-C stops them
    all. A part that dies stops the others and the exit status is non-zero."""
    from ailedger.supervisor import (
        Part,
        PartFailed,
        Stopped,
        Supervisor,
        option_args,
        part_command,
        url_in,
    )
    from ledger.bus.natsserver import EmbeddedNats
    from services.notary.service import start_home_server

    h = _home(home)
    nats = nats or h.nats_url  # the external server `init --nats` remembered
    where = ["--home", str(h.path)]
    on_bus = where + (["--nats", nats] if nats else [])

    async def main() -> PartFailed | None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        sup = Supervisor(stop)
        failure: PartFailed | None = None
        try:
            if nats is None:
                running = EmbeddedNats.attach(h.nats_dir)
                if running is not None:
                    raise CliError(
                        f"the home's nats-server is already running (pid {running.pid}, "
                        f"{running.url}): is another `ailedger up` running for {h.path}?"
                    )
                await sup.start_server(start_home_server(h, port), h)
            witnesses = h.witness_urls()
            if not witnesses and h.trust().witness_quorum > 0:
                line = await sup.start(
                    Part("witness", part_command("witness", *where), "witness up:")
                )
                witnesses = [url_in(line)]
            notary_options = option_args(
                [
                    ("--state", state),
                    ("--batch-size", batch_size),
                    ("--ack-wait", ack_wait),
                    ("--checkpoint-every", checkpoint_every),
                    ("--checkpoint-interval", checkpoint_interval),
                ]
            )
            for w in witnesses:
                notary_options += ["--witness", w]
            await sup.start(
                Part("notary", part_command("notary", *on_bus, *notary_options), "notary up:")
            )
            await sup.start(Part("projector", part_command("project", *on_bus), "projector up:"))
            site = ""
            if web and _web_available():
                line = await sup.start(
                    Part("web", part_command("web", *on_bus, "--port", str(web_port)), "web up:")
                )
                site = f"; workbench {url_in(line)}"
            sup.say("up", f"all parts up{site}; Ctrl-C stops them (pid {os.getpid()})")
            failure = await sup.run_until_stopped()
        except PartFailed as e:
            failure = e
        except Stopped:
            pass
        finally:
            await sup.stop_all()
        if failure is None:
            sup.say("up", "all parts stopped cleanly")
        return failure

    failure = asyncio.run(main())
    if failure is not None:
        raise failure


def _web_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("services.web") is not None


@app.command()
@one_line_errors
def notary(
    home: HomeOpt = None,
    nats: NatsOpt = None,
    port: Annotated[int | None, typer.Option(help="Port of the embedded server.")] = None,
    state: Annotated[
        Path | None, typer.Option(help="The notary's state store (SQLite; rebuildable).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Submissions taken from INTAKE at once.")] = 500,
    ack_wait: Annotated[
        float, typer.Option(help="Seconds before an unfinished submission is redelivered.")
    ] = 10.0,
    checkpoint_every: Annotated[
        int, typer.Option(help="Sign a checkpoint after this many new entries ...")
    ] = 10_000,
    checkpoint_interval: Annotated[
        float, typer.Option(help="... or after this many seconds with new entries.")
    ] = 1.0,
    witness: Annotated[
        list[str] | None,
        typer.Option(
            "--witness",
            help="A witness URL (repeatable; default: config.json's, else the home's own "
            "witness in this process).",
        ),
    ] = None,
) -> None:
    """Run the notary alone (`ailedger up` runs it as a part), on the home's running
    nats-server, else the embedded one it starts, unless --nats."""
    from services.notary import Notary, serve
    from services.witness.service import start_local_witness

    h = _home(home)
    nats = nats or h.nats_url  # the external server `init --nats` remembered
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per cosigning request

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        def ready(url: str, notary: Notary) -> None:
            console.print(
                f"notary up: {notary.origin}, {notary.size} "
                f"{'entry' if notary.size == 1 else 'entries'}, NATS {url} "
                f"(pid {os.getpid()}); Ctrl-C to stop",
                highlight=False,
            )
            sys.stdout.flush()  # supervisors read this line through a pipe

        witnesses = list(witness or []) or h.witness_urls()
        witness_task = None
        if not witnesses and h.trust().witness_quorum > 0:
            # The home's own witness beside the notary (ailedger init --witness).
            url, witness_task = await start_local_witness(h, stop, None)
            console.print(f"witness up: {h.witness_name()} at {url} (local: a demonstration)")
            witnesses = [url]
        notary = await serve(
            h,
            stop,
            witnesses=witnesses,
            nats_url=nats,
            port=port,
            state_path=state,
            on_ready=ready,
            batch_size=batch_size,
            ack_wait=ack_wait,
            checkpoint_every=checkpoint_every,
            checkpoint_interval=checkpoint_interval,
        )
        stop.set()
        if witness_task is not None:
            await witness_task
        stats = ", ".join(f"{k} {v}" for k, v in notary.stats.items())
        console.print(f"notary stopped cleanly: {stats}", highlight=False)

    asyncio.run(main())


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise UnreadableFile(f"cannot read {path}: {e.strerror}") from None


def _json_object(path: Path) -> tuple[bytes, dict[str, Any]]:
    data = _read(path)
    try:
        doc = json.loads(data)
    except ValueError as e:
        raise CliError(f"{path} is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise CliError(f"{path} must hold a JSON object")
    return data, doc


def _signed(path: Path, doc: dict[str, Any], key: ActorKey) -> tuple[bytes, ev.Event]:
    """Fill in v, event_id, actor (the key's) and signed_at when missing; validate
    against the catalogue; sign. Nothing here touches the network."""
    doc.setdefault("v", 1)
    doc.setdefault("event_id", ev.new_event_id())
    doc.setdefault("actor", key.actor)
    doc.setdefault("signed_at", format_time(SystemClock().now()))
    try:
        event = ev.decode_event(json.dumps(doc).encode())
    except ev.SchemaError as e:
        raise CliError(f"{path} is not a valid event: {e}") from None
    if event.actor != key.actor:
        raise CliError(f"{path} is by actor {event.actor!r} but {key.keyid} is {key.actor!r}'s key")
    return sign_event(event, key), event


def _envelope_path(path: Path) -> Path:
    """``incident.json`` -> ``incident.envelope.json``, beside it."""
    name = path.name.removesuffix(".json")
    return path.with_name(f"{name}.envelope.json")


def _checked_envelope(path: Path, data: bytes) -> ev.Event:
    try:
        return envelope_head(data)
    except (EnvelopeError, ev.SchemaError) as e:
        raise CliError(f"{path} is not a valid signed envelope: {e}") from None


@app.command()
@one_line_errors
def template(
    event_type: Annotated[str, typer.Argument(metavar="TYPE", help="An event type.")],
    actor: Annotated[str | None, typer.Option(help="The signer (default: the example's).")] = None,
) -> None:
    """Print a valid example payload of TYPE, with a fresh event id, signed now."""
    try:
        doc = json.loads(resources.example(event_type))
    except KeyError:
        raise CliError(
            f"no event type {event_type!r}; valid types: {', '.join(resources.example_types())}"
        ) from None
    doc["event_id"] = ev.new_event_id()
    doc["signed_at"] = format_time(SystemClock().now())
    if actor is not None:
        doc["actor"] = actor
    sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


@app.command()
@one_line_errors
def schema(
    name: Annotated[
        str | None,
        typer.Argument(help="A schema name, or an event type (default: list the names)."),
    ] = None,
) -> None:
    """Print a published JSON Schema (without NAME: the names there are)."""
    if name is None:
        for n in resources.schema_names():
            sys.stdout.write(n + "\n")
        return
    names = resources.schema_names()
    chosen = name if name in names else f"events/{name}"
    if chosen not in names:
        raise CliError(f"no schema {name!r}; `ailedger schema` lists them: {', '.join(names)}")
    sys.stdout.write(resources.schema(chosen).decode())


@app.command()
@one_line_errors
def sign(
    file: Annotated[
        Path, typer.Argument(help="An event payload (JSON), or a signed envelope to cosign.")
    ],
    key: Annotated[Path, typer.Option("--key", help="The signer's key file.")],
    out: Annotated[
        Path | None,
        typer.Option("-o", "--out", help="Envelope file (default: FILE.envelope.json beside it)."),
    ] = None,
) -> None:
    """Sign a payload into a DSSE envelope, filling in v, event_id, actor, signed_at.

    Given a signed envelope, add this key's signature over the same payload bytes
    (written back to ENVELOPE unless -o): a second regulator root key, when the
    trust policy requires m-of-n. Nothing is sent: `ailedger submit ENVELOPE`
    sends it (without the key).
    """
    actor_key = load_key(key)
    data, doc = _json_object(file)
    if "payloadType" in doc:
        try:
            cosigned = add_signature(data, actor_key)
        except EnvelopeError as e:
            raise CliError(f"{file}: {e}") from None
        path = out or file
        path.write_bytes(cosigned)
        count = len(parse_envelope(cosigned).signatures)
        console.print(
            f"wrote {path}: signature {count} added, by {actor_key.keyid}", highlight=False
        )
        return
    envelope, event = _signed(file, doc, actor_key)
    path = out or _envelope_path(file)
    path.write_bytes(envelope)
    console.print(
        f"wrote {path}: {event.type_name} by {event.actor}, event {event.event_id}",
        highlight=False,
    )


@app.command()
@one_line_errors
def submit(
    file: Annotated[
        Path, typer.Argument(help="A signed DSSE envelope, or a payload (JSON) with --key.")
    ],
    key: Annotated[
        Path | None,
        typer.Option("--key", help="Sign the payload with this key (not for an envelope)."),
    ] = None,
    home: HomeOpt = None,
    nats: NatsOpt = None,
    trust: Annotated[Path | None, typer.Option(help="Trust policy (default: the home's).")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for a verdict.")] = 30.0,
    as_json: JsonOpt = False,
    creds: Annotated[
        Path | None,
        typer.Option(
            "--creds",
            help="The actor's bus credentials (`ailedger creds issue ACTOR`; default: "
            "the home's identity of the envelope's actor).",
        ),
    ] = None,
) -> None:
    """Submit one event; print the notary's receipt (exit 1 when it is rejected).

    An envelope goes as it is: its actor is the payload's, no key is needed. A
    payload is signed with --key first (v, event_id, actor, signed_at filled in
    when missing) and its envelope saved beside it (FILE.envelope.json) before
    anything is sent, so a submission that times out is retried with the same
    event id: `ailedger submit FILE.envelope.json`.
    """
    # Everything about the input is checked before any network I/O.
    actor_key = load_key(key) if key is not None else None
    data, doc = _json_object(file)
    if "payloadType" in doc:
        envelope, event = data, _checked_envelope(file, data)
        saved = file
    else:
        if actor_key is None:
            raise CliError(
                f"{file} is a payload, not a signed envelope: sign it with --key KEY "
                "(or `ailedger sign`)"
            )
        envelope, event = _signed(file, doc, actor_key)
        saved = _envelope_path(file)
        saved.write_bytes(envelope)
    policy = TrustPolicy.load(trust or Home(_home_path(home)).trust_path)

    async def send() -> Receipt:
        nc = await _connect(
            home, nats, f"ailedger-submit-{event.actor}", identity=event.actor, creds=creds
        )
        denied = _refusals(nc)
        client = LedgerClient(nc, trust=policy)
        try:
            sent: asyncio.Future[Receipt] = asyncio.ensure_future(
                client.submit_signed(envelope, timeout=timeout)
            )
            either: list[asyncio.Future[Any]] = [sent, denied]
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if denied.done() and not sent.done():
                sent.cancel()
                raise PermissionDenied(
                    f"the NATS server refused these credentials: {denied.result()}; they may "
                    f"not submit for {event.actor} (`ailedger creds issue {event.actor}` "
                    "writes the actor's own)"
                )
            return await sent
        finally:
            await client.close()

    try:
        receipt = asyncio.run(send())
    except SubmissionRejected as r:
        if as_json:
            _emit(
                {
                    "status": "rejected",
                    "type": event.type_name,
                    "event_id": event.event_id,
                    "code": r.code,
                    "detail": r.detail,
                    "envelope": str(saved),
                }
            )
        err.print(f"rejected: {r.code}: {r.detail}", highlight=False)
        raise typer.Exit(1) from None
    except SubmissionTimeout:
        raise SubmissionTimeout(
            f"no verdict for event {event.event_id} within {timeout}s; it may still be "
            f"integrated. The signed envelope is saved: retry with the same event id, "
            f"`ailedger submit {saved}`",
            event.event_id,
        ) from None
    if as_json:
        _emit(
            {
                "status": "accepted",
                "type": event.type_name,
                "event_id": receipt.event_id,
                "index": receipt.index,
                "integrated": format_time(receipt.integrated),
                "leaf_hash": base64.b64encode(receipt.leaf_hash).decode(),
                "origin": receipt.origin,
                "envelope": str(saved),
                "receipt": receipt.note.decode(),
            }
        )
        return
    console.print(
        f"accepted {event.type_name} as entry {receipt.index} (event {receipt.event_id}"
        + (f"; signed envelope saved in {saved})" if saved != file else ")"),
        highlight=False,
    )
    sys.stdout.write(receipt.note.decode())


class PermissionDenied(LedgerError):
    """The NATS server refused what these bus credentials tried (a reader that submits ...)."""

    code = "permission_denied"
    exit_status = USAGE


def _refusals(nc: Any) -> asyncio.Future[str]:
    """Resolved with the server's first permissions violation on ``nc`` (reported
    asynchronously by the server: nats-py hands it to the error callback)."""
    denied: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    logged = nc._error_cb

    async def watch(e: Exception) -> None:
        text = str(e)
        if "permissions violation" not in text:
            await logged(e)
        elif not denied.done():
            denied.set_result(text.removeprefix("nats: "))

    nc._error_cb = watch
    return denied


def _payload_json(entry: Entry | HeadsLeaf) -> Any:
    if isinstance(entry, HeadsLeaf):
        return {
            "format": "ailedger/heads/v1",
            "size": entry.size,
            "subjects": entry.subjects,
            "root": base64.b64encode(entry.root).decode(),
        }
    try:
        return json.loads(parse_envelope(entry.envelope).payload)
    except (EnvelopeError, ValueError):
        return None


async def _log_json(nc: Any, start: int, limit: int | None, trust: TrustPolicy) -> None:
    """Each sealed entry as one JSON line, with its decoded payload, as it is read."""
    async for entry, sealed_at in sealed_entries(nc, trust, start, limit):
        row = describe(entry, sealed_at)
        _emit(
            {
                "index": row.index,
                "integrated": format_time(row.integrated),
                "signer": row.signer,
                "type": row.type,
                "subject": row.subject,
                "prev": row.prev,
                "event_id": row.event_id,
                "payload": _payload_json(entry),
            }
        )
        sys.stdout.flush()


async def _rejected_json(nc: Any, limit: int | None) -> None:
    """Each refused submission as one JSON line, with its original bytes (base64)."""
    last = await last_sequence(nc, REJECTED)
    first = 1 if limit is None else max(1, last - limit + 1)
    # REJECTED has a retention (docs/operations.md): old sequences may be gone.
    async for m in read_stream(nc, REJECTED, first, last, subject="rejected.>"):
        h = m.headers or {}
        _emit(
            {
                "sequence": m.sequence,
                "intake_subject": h.get(HDR_INTAKE_SUBJECT, m.subject),
                "event_id": h.get(HDR_EVENT, None),
                "code": h.get(HDR_REASON, "?"),
                "detail": h.get(HDR_DETAIL, ""),
                "bytes": base64.b64encode(m.data).decode(),
                "sha256": h.get("Ailedger-Sha256"),
                "size": int(h["Ailedger-Size"]) if "Ailedger-Size" in h else len(m.data),
                "truncated": h.get("Ailedger-Truncated") == "1",
            }
        )
        sys.stdout.flush()


@app.command("log")
@one_line_errors
@reads_ledger
def log_cmd(
    home: HomeOpt = None,
    nats: NatsOpt = None,
    start: Annotated[int, typer.Option("--from", help="First index.")] = 0,
    limit: Annotated[int | None, typer.Option(help="At most this many entries.")] = None,
    rejected: Annotated[
        bool, typer.Option("--rejected", help="List refused submissions instead.")
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="One JSON object per line, with the decoded payload (--rejected: the "
            "original bytes, base64).",
        ),
    ] = False,
) -> None:
    """The ledger's entries in order: index, integrated time, signer, type, subject."""

    async def read() -> list[LogRow] | list[RejectionRow]:
        nc = await _connect(home, nats, "ailedger-log")
        try:
            if as_json:
                await (
                    _rejected_json(nc, limit)
                    if rejected
                    else _log_json(nc, start, limit, _home(home).trust())
                )
                return []
            if rejected:
                return await read_rejections(nc, limit)
            return await read_log(nc, start, limit, trust=_home(home).trust())
        finally:
            await nc.drain()

    rows = asyncio.run(read())
    if as_json:
        return
    if rejected:
        console.print(rejections_table([r for r in rows if isinstance(r, RejectionRow)]))
    else:
        console.print(ledger_table([r for r in rows if isinstance(r, LogRow)]))


async def _with_tree(
    home: Path | None, nats: str | None, job: Callable[[Any, TreeStore], Any]
) -> Any:
    """Run ``job(nc, tree)`` with a NATS connection and the home's tree file."""
    nc = await _connect(home, nats, "ailedger-proofs")
    tree = TreeStore(Home(_home_path(home)).tree_path)
    try:
        return await job(nc, tree)
    finally:
        tree.close()
        await nc.drain()


@app.command()
@one_line_errors
@reads_ledger
def checkpoint(
    home: HomeOpt = None,
    nats: NatsOpt = None,
    size: Annotated[int | None, typer.Option(help="The checkpoint of this tree size.")] = None,
) -> None:
    """Print the latest signed checkpoint (a C2SP signed note)."""

    async def job(nc: Any, tree: TreeStore) -> bytes:
        return (await proofs.find_checkpoint(nc, size)).note

    sys.stdout.write(asyncio.run(_with_tree(home, nats, job)).decode())


@app.command()
@one_line_errors
@reads_ledger
def prove(
    index: Annotated[int | None, typer.Argument(help="Entry index to prove.")] = None,
    home: HomeOpt = None,
    nats: NatsOpt = None,
    size: Annotated[
        int | None, typer.Option(help="Prove under the checkpoint of this size (default: latest).")
    ] = None,
    consistency: Annotated[
        tuple[int, int] | None,
        typer.Option("--consistency", help="OLD NEW: prove the tree of size NEW extends OLD."),
    ] = None,
) -> None:
    """An inclusion proof (C2SP tlog-proof) of an entry, or a consistency proof."""

    async def job(nc: Any, tree: TreeStore) -> bytes:
        if consistency is not None:
            old, new = consistency
            signed = await proofs.find_checkpoint(nc, new)
            await proofs.sync_tree(nc, tree, new, trust=_home(home).trust())
            hashes = proofs.consistency(tree, old, new)
            lines = [f"old {old}", f"new {new}", *(base64.b64encode(h).decode() for h in hashes)]
            return ("\n".join(lines) + "\n\n").encode() + signed.note
        if index is None:
            raise CliError("give an entry INDEX, or --consistency OLD NEW")
        signed = await proofs.find_checkpoint(nc, size)
        await proofs.sync_tree(nc, tree, signed.checkpoint.size, trust=_home(home).trust())
        return proofs.tlog_proof(tree, index, signed)

    sys.stdout.write(asyncio.run(_with_tree(home, nats, job)).decode())


@app.command()
@one_line_errors
@reads_ledger
def export(
    system: Annotated[str | None, typer.Option(help="A system id.")] = None,
    actor: Annotated[
        str | None, typer.Option(help="An actor id (its chain and what it signed).")
    ] = None,
    index_range: Annotated[
        str | None, typer.Option("--range", help="Entries FIRST..LAST (inclusive).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("-o", "--out", help="Bundle file (default: stdout).")
    ] = None,
    at: Annotated[
        int | None, typer.Option("--checkpoint", help="As of the checkpoint of this size.")
    ] = None,
    since: Annotated[
        int | None, typer.Option(help="Add a consistency proof from the checkpoint of this size.")
    ] = None,
    claim: Annotated[
        bool, typer.Option(help="Add the verdict on each system as of the checkpoint.")
    ] = False,
    home: HomeOpt = None,
    nats: NatsOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="With -o: the summary as one JSON object.")
    ] = False,
) -> None:
    """Write an evidence bundle (ailedger/bundle/v1) as of a signed checkpoint."""
    rng = None
    if index_range is not None:
        first, sep, last = index_range.partition("..")
        if not sep or not first.isdigit() or not last.isdigit():
            raise CliError(f"--range wants FIRST..LAST, got {index_range!r}")
        rng = (int(first), int(last))
    if system is None and actor is None and rng is None:
        raise CliError("choose what to export: --system ID, --actor ID or --range FIRST..LAST")

    trust_policy = _home(home).trust()

    async def job(nc: Any, tree: TreeStore) -> bytes:
        return await proofs.export_bundle(
            nc,
            tree,
            subjects=[f"system/{system}"] if system else [],
            actor=actor,
            index_range=rng,
            checkpoint_size=at,
            since=since,
            # what your own `ailedger verify` pinned: it needs the proof from there
            pinned=_pins().size(trust_policy.origin),
            claim=claim,
            trust=trust_policy,
        )

    bundle = asyncio.run(_with_tree(home, nats, job))
    if out is None:
        sys.stdout.write(bundle.decode())
        return
    out.write_bytes(bundle)
    doc = json.loads(bundle)
    size = proofs.SignedCheckpoint.parse(doc["checkpoint"].encode()).checkpoint.size
    if as_json:
        _emit(
            {
                "bundle": str(out),
                "entries": len(doc["entries"]),
                "chains": len(doc["chains"]),
                "checkpoint_size": size,
                "claim": "claim" in doc,
            }
        )
        return
    console.print(
        f"wrote {out}: {len(doc['entries'])} entries, {len(doc['chains'])} chains, "
        f"checkpoint size {size}",
        highlight=False,
    )


@app.command()
@one_line_errors
def verify(
    bundle: Annotated[Path, typer.Argument(help="An evidence bundle (ailedger/bundle/v1).")],
    trust: Annotated[Path, typer.Option(help="The regulator's trust policy.")],
    since: Annotated[
        Path | None,
        typer.Option(
            help="A checkpoint you pinned earlier (signed note file), instead of the one "
            "ailedger verify remembered."
        ),
    ] = None,
    no_pin: Annotated[
        bool,
        typer.Option(
            "--no-pin",
            help="Neither require consistency with the checkpoint remembered for this origin "
            "nor remember this one.",
        ),
    ] = False,
    recompute: Annotated[
        bool,
        typer.Option(
            "--recompute",
            hidden=True,
            help="Accepted for compatibility: a claim is always recomputed.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="The report as one JSON object.")] = False,
) -> None:
    """Verify a bundle offline: no network, only the trust policy.

    A claimed verdict in the bundle is always recomputed from its entries. The
    newest checkpoint accepted per origin is remembered (under the user's config
    directory): the next bundle must extend it.
    """
    policy = TrustPolicy.load(trust)
    data = _read(bundle)
    pinned = _read(since) if since is not None else None
    try:
        report = verify_pinned(data, policy, None if no_pin else _pins(), since=pinned)
    except VerificationError as e:
        if as_json:
            _emit(
                {
                    "bundle": str(bundle),
                    "verified": False,
                    "check": e.check,
                    "index": e.index,
                    "subject": e.subject,
                    "notary_misbehaviour": e.misbehaviour,
                    "message": e.message,
                    "code": e.code,
                }
            )
        sys.stderr.write(f"{bundle}: FAILED {e} [{e.code}]\n")
        raise typer.Exit(e.exit_status) from None
    if as_json:
        _emit(
            {
                "bundle": str(bundle),
                "verified": True,
                "origin": report.origin,
                "size": report.size,
                "root": base64.b64encode(report.root).decode(),
                "log_key": report.log_key,
                "witnesses": report.witnesses,
                "entries": report.entries,
                "chains": report.chains,
                "signatures": report.signatures,
                "consistent_with": report.consistent_with,
                "completeness": {
                    subject: {
                        "complete_as_of": report.size,
                        "cosigned_at": (
                            None if report.cosigned_at is None else format_time(report.cosigned_at)
                        ),
                        "entries": 0 if head is None else head.count,
                        "newest": None if head is None else head.index,
                        "report": report.completeness_line(subject),
                    }
                    for subject, head in report.completeness.items()
                },
                "claim": report.recomputed,
            }
        )
        return
    console.print(f"{bundle}: VERIFIED", highlight=False)
    for line in report.lines:
        console.print(f"  {line}", highlight=False, soft_wrap=True)


def _pins() -> PinStore:
    """The checkpoints ``ailedger verify`` accepted, per origin (the user's config directory)."""
    return PinStore(user_config_dir() / "pins")


def _parse_at(text: str | None) -> datetime | None:
    """--at: a date (the end of that day in UTC+5), a date-time (UTC+5), or RFC 3339."""
    return None if text is None else parse_moment(text)


async def _projection(
    home: Path | None, nats: str | None, job: Callable[[Projector], Any], forever: bool = False
) -> Any:
    """Bring the projector's stores up to date with LEDGER, then run ``job``; while
    another process writes them (a running projector: ledger.views.store.writing),
    run ``job`` on them as they stand. ``forever`` (``ailedger project``): become
    their writer, waiting for the lock if needed."""
    h = _home(home)
    state_env, view_env = store_envs(h.state_dir)
    with writing(h.state_dir) as mine, contextlib.ExitStack() as waiting:
        if forever and not mine:
            err.print(
                f"waiting for the read model's writer to finish ({h.state_dir / WRITER_LOCK}: "
                "another projector, or a command catching up)",
                highlight=False,
            )
            mine = waiting.enter_context(writing(h.state_dir, wait=True))
        nc = await _connect(home, nats, "ailedger-projection", forever)
        projector = Projector(nc, LedgerState(state_env, trust=h.trust()), open_view(view_env))
        try:
            if mine:
                await projector.catch_up()
            return await job(projector)
        finally:
            projector.close()
            await nc.drain()


@app.command()
@one_line_errors
def project(
    home: HomeOpt = None,
    nats: NatsOpt = None,
    once: Annotated[bool, typer.Option(help="Catch up, print the state digest, exit.")] = False,
) -> None:
    """Follow LEDGER into the compliance state and views (foreground)."""

    async def job(projector: Projector) -> None:
        if once:
            digest = await projector.digest()
            position = (await projector.state_thread.call(projector.positions))[0]
            console.print(f"projected {position} entries; state digest {digest}", highlight=False)
            return
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        position = (await projector.state_thread.call(projector.positions))[0]
        console.print(f"projector up: {position} entries (pid {os.getpid()})", highlight=False)
        sys.stdout.flush()
        await projector.follow(stop)
        console.print("projector stopped cleanly", highlight=False)

    asyncio.run(_projection(home, nats, job, forever=not once))


@app.command()
@one_line_errors
@reads_ledger
def rebuild(home: HomeOpt = None, nats: NatsOpt = None) -> None:
    """Drop the compliance state and views and rebuild them from LEDGER."""
    h = _home(home)
    state_env, view_env = store_envs(h.state_dir)

    async def run() -> RebuildReport:
        nc = await _connect(home, nats, "ailedger-rebuild")
        try:
            with Progress(
                TextColumn("rebuilding from LEDGER"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                disable=not console.is_terminal,  # a bar only on a terminal
            ) as progress:
                task = progress.add_task("rebuild", total=None)
                return await projector_rebuild(
                    nc,
                    h,
                    state_env,
                    view_env,
                    lambda done, total: progress.update(task, completed=done, total=total),
                )
        finally:
            await nc.drain()

    with writing(h.state_dir) as mine:
        if not mine:
            raise CliError(
                f"a projector is writing the read model of {h.path} ({h.state_dir / WRITER_LOCK} "
                "is held): stop it (or `ailedger up`) before rebuilding"
            )
        report = asyncio.run(run())
    checked = (
        f"the Merkle root of entries 0..{report.checkpoint_size - 1} matches the signed "
        f"checkpoint of size {report.checkpoint_size}"
        if report.checkpoint_size
        else "no checkpoint signed yet to compare with"
    )
    console.print(f"rebuilt {report.entries} entries; {checked}", highlight=False)
    console.print(f"state digest {report.digest}", highlight=False)


@app.command()
@one_line_errors
@reads_ledger
def status(
    system: Annotated[
        str | None, typer.Argument(help="A system id (default: all systems).")
    ] = None,
    at: Annotated[
        str | None,
        typer.Option(
            help="As of this moment (default: now): a date (the end of that day, UTC+5), "
            "a date-time (UTC+5), or RFC 3339 with Z or an offset."
        ),
    ] = None,
    at_index: Annotated[
        int | None, typer.Option("--at-index", help="As of this ledger index (reproducible).")
    ] = None,
    checkpoint_size: Annotated[
        int | None,
        typer.Option(
            "--checkpoint",
            help="As of the signed checkpoint of this size: its last entry before its heads "
            "leaf (the verdicts a bundle exported at it claims).",
        ),
    ] = None,
    home: HomeOpt = None,
    nats: NatsOpt = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="One system: one JSON object; all: one object per line."),
    ] = False,
) -> None:
    """Compliance verdicts with their findings, legal basis and evidence, as of a moment."""
    if checkpoint_size is not None and (at is not None or at_index is not None):
        raise CliError("give one of --at, --at-index and --checkpoint")
    if at_index is not None and not 0 <= at_index <= investigate.MAX_INDEX:
        raise CliError(f"no entry {at_index}: indexes are 0 to {investigate.MAX_INDEX}")
    when = _parse_at(at)
    if when is None and at_index is None and checkpoint_size is None:
        when = SystemClock().now()

    async def job(projector: Projector) -> list[SystemVerdict]:
        nonlocal at_index
        if checkpoint_size is not None:  # one signed by a log key, and what it covers
            await investigate.newest_checkpoint(projector.nc, _home(home).trust(), checkpoint_size)
            at_index = await projector.state_thread.call(
                investigate.checkpoint_index, projector.view, checkpoint_size
            )

        def verdicts() -> list[SystemVerdict]:
            genesis = projector.view.view.row(0)
            if when is not None and genesis is not None and when < genesis.fact().integrated:
                start = genesis.fact().integrated
                raise CliError(
                    f"the ledger starts at {format_moment(start)}; nothing is recorded "
                    f"before it (asked as of {format_moment(when)})"
                )
            systems = [system] if system else projector.view.systems()
            out = []
            for s in systems:
                try:
                    out.append(projector.view.status(s, at=when, at_index=at_index))
                except ValueError:
                    if system:  # asked for by name: say why there is nothing
                        raise
            return out

        return await projector.state_thread.call(verdicts)

    try:
        results = asyncio.run(_projection(home, nats, job))
    except (ValueError, LookupError) as e:
        raise CliError(str(e)) from None
    if as_json:
        for v in results:
            _emit(v.to_json())
        return
    moment = f"index {at_index}" if at_index is not None else format_moment(when) if when else ""
    if checkpoint_size is not None:
        moment = f"checkpoint {checkpoint_size} ({moment})"
    if system is None:
        console.print(f"Compliance as of {moment}", highlight=False, soft_wrap=True)
        table = Table(header_style="bold")
        for column in ("system", "verdict", "findings", "as of entry"):
            table.add_column(column)
        for v in results:
            findings = ", ".join(f"{f.rule} {f.status}" for f in v.findings) or "-"
            table.add_row(
                v.system,
                f"[{VERDICT_STYLE[v.verdict]}]{v.verdict}[/]",
                findings,
                str(v.as_of_index),
            )
        console.print(table)
        return
    (v,) = results
    console.print(
        f"{v.system}: [{VERDICT_STYLE[v.verdict]}]{v.verdict}[/] as of {moment}; "
        f"entries up to {v.as_of_index}, rulebook adopted in entry {v.policy_index}",
        soft_wrap=True,
    )
    if v.findings:
        table = Table(header_style="bold")
        for column in ("rule", "status", "severity", "since", "deadline", "evidence", "finding"):
            table.add_column(column)
        for f in v.findings:
            table.add_row(
                f.rule,
                f.status,
                f.severity,
                format_time(f.since),
                format_time(f.deadline) if f.deadline else "-",
                ", ".join(map(str, f.evidence)),
                f"{f.summary}\n[dim]{f.legal_basis}[/]",
            )
        console.print(table)


@app.command()
@one_line_errors
@reads_ledger
def timeline(
    system: Annotated[str, typer.Argument(help="A system id.")],
    at: Annotated[
        str | None,
        typer.Option(
            help="Up to this moment (default: everything): a date (the end of that day, "
            "UTC+5), a date-time (UTC+5), or RFC 3339."
        ),
    ] = None,
    home: HomeOpt = None,
    nats: NatsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Who did what to a system, in ledger order, with the signer's key and its status."""
    until = _parse_at(at)

    async def job(projector: Projector) -> list[TimelineRow]:
        return await projector.state_thread.call(projector.view.timeline, system, until=until)

    try:
        rows = asyncio.run(_projection(home, nats, job))
    except LookupError as e:
        raise CliError(str(e)) from None
    if as_json:
        for r in rows:
            _emit({**r.__dict__, "integrated": format_time(r.integrated)})
        return
    title = f"Timeline of {system}" + (f" as of {format_moment(until)}" if until else "")
    table = Table(title=title, title_justify="left", header_style="bold")
    for column in ("index", "integrated", "signed", "signer", "role", "key", "event", "check"):
        no_wrap = column in ("integrated", "key")
        table.add_column(column, no_wrap=no_wrap)
    for r in rows:
        integrated = format_time(r.integrated)
        table.add_row(
            str(r.index),
            integrated,
            "same" if r.signed_at == integrated else r.signed_at,
            f"{r.legal_name} ({r.actor})",
            r.role,
            r.key_fingerprint,
            r.summary,
            r.verification,
        )
    console.print(table)


# --- investigation: read-only, from the read model and LEDGER (the notary may be down) ---

#: ``ailedger due``: exit statuses (besides the errors' 2, 3, 70).
DUE_NOTHING, DUE_OVERDUE, DUE_SOON = 0, CHECK_FAILED, 4


async def _investigation(
    home: Path | None, nats: str | None, job: Callable[[Projector, TreeStore], Any]
) -> Any:
    """Bring the read model up to date with LEDGER (as the reader), then run ``job``
    with the home's tree: nothing here needs the notary."""
    tree = TreeStore(_home(home).tree_path)
    try:
        return await _projection(home, nats, lambda projector: job(projector, tree))
    finally:
        tree.close()


@app.command("get")
@one_line_errors
@reads_ledger
def get_cmd(
    index: Annotated[int, typer.Argument(min=0, metavar="INDEX", help="The entry's index.")],
    home: HomeOpt = None,
    nats: NatsOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object (the entry's bytes in base64).")
    ] = False,
) -> None:
    """One entry decoded: event, signer and key status, seal, inclusion proof (verified).

    Like `rekor-cli get --log-index`: read from the read model and LEDGER with the
    home's read-only identity; works while the notary is down.
    """
    trust = _home(home).trust()

    async def job(projector: Projector, tree: TreeStore) -> investigate.EntryDetail:
        return await investigate.entry(
            projector.view, projector.nc, tree, trust, index, call=projector.state_thread.call
        )

    detail: investigate.EntryDetail = asyncio.run(_investigation(home, nats, job))
    if as_json:
        _emit(investigate.to_json(detail))
        return
    s = detail.signer
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    rows = [
        ("index", str(detail.index)),
        ("type", detail.type),
        ("subject", detail.subject + (f" (previous entry {detail.prev})" if detail.prev else "")),
        ("event", f"{detail.summary}  [dim]{detail.event_id}[/]"),
        ("signed", detail.signed_at),
        ("integrated", detail.integrated),
        (
            "signer",
            f"{s.legal_name} ({s.actor}), {'/'.join(s.roles) or '-'}"
            + (" [red]suspended[/]" if s.suspended else ""),
        ),
        (
            "key",
            f"{s.key_fingerprint}: {s.key_status}"
            + (f", valid from {s.key_valid_from}" if s.key_valid_from else "")
            + (f" until {s.key_valid_until}" if s.key_valid_until else "")
            + (f", compromised at {s.key_compromised_at}" if s.key_compromised_at else ""),
        ),
        (
            "key history",
            "; ".join(f"{k.index} {k.type} {k.integrated}" for k in s.key_history) or "-",
        ),
        ("check", s.verification if s.verification != "verified" else "[green]verified[/]"),
        ("leaf hash", detail.leaf_hash),
    ]
    if detail.seal is not None:
        seal = detail.seal
        rows.append(
            (
                "sealed",
                f"batch of entries {seal.first_index}..{seal.last_index} "
                f"(LEDGER #{seal.first_sequence}), sealed {seal.sealed_last} "
                f"by {', '.join(seal.signed_by)}",
            )
        )
    if detail.inclusion is not None:
        inc = detail.inclusion
        cosigned = (
            f", cosigned by {', '.join(inc.checkpoint.cosignatures)}"
            if inc.checkpoint.cosignatures
            else ""
        )
        rows.append(
            (
                "included",
                f"[green]proof verified[/] under the checkpoint of size {inc.checkpoint.size} "
                f"(signed by {', '.join(inc.checkpoint.signed_by)}{cosigned}); "
                f"`ailedger prove {detail.index}` prints it",
            )
        )
    else:
        rows.append(("included", f"[yellow]{detail.inclusion_note}[/]"))
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    console.print_json(json.dumps(detail.payload, ensure_ascii=False))


@app.command("search")
@one_line_errors
@reads_ledger
def search_cmd(
    actor: Annotated[str | None, typer.Option(help="Signed by this actor.")] = None,
    subject: Annotated[
        str | None,
        typer.Option(
            help="About this subject: system/ID, actor/ID, policy/ID (an ID alone: a system)."
        ),
    ] = None,
    event_type: Annotated[
        str | None, typer.Option("--type", help="Of this event type (e.g. IncidentReported).")
    ] = None,
    key: Annotated[
        str | None, typer.Option(help="Signed with this key (fingerprint, or key id ACTOR/FP).")
    ] = None,
    after: Annotated[int, typer.Option(help="Entries after this index (paging).")] = -1,
    limit: Annotated[int, typer.Option(help="At most this many entries.")] = 100,
    home: HomeOpt = None,
    nats: NatsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per entry.")] = False,
) -> None:
    """Entries by signer, subject, event type or signing key, in ledger order.

    Like `rekor-cli search`. Criteria combine (all must hold). When more entries
    match than --limit, the next page is --after the last index shown (stderr says so).
    """
    if subject is not None and "/" not in subject:
        subject = f"system/{subject}"

    async def job(projector: Projector, tree: TreeStore) -> investigate.SearchPage:
        return await projector.state_thread.call(
            functools.partial(
                investigate.search,
                projector.view,
                actor=actor,
                subject=subject,
                type=event_type,
                key=key,
                after=after,
                limit=limit,
            )
        )

    # The query is checked before anything is read.
    if actor is None and subject is None and event_type is None and key is None:
        raise investigate.BadQuery("search by --actor, --subject, --type or --key (at least one)")
    page: investigate.SearchPage = asyncio.run(_investigation(home, nats, job))
    if as_json:
        for e in page.entries:
            _emit(investigate.to_json(e))
    else:
        criteria = ", ".join(f"{k} {v}" for k, v in page.query.items())
        table = Table(title=f"Entries with {criteria}", title_justify="left", header_style="bold")
        for column in ("index", "integrated", "signer", "key", "type", "subject", "event"):
            table.add_column(column, no_wrap=column in ("integrated", "key"))
        for e in page.entries:
            table.add_row(
                str(e.index), e.integrated, e.actor, e.key_fingerprint, e.type, e.subject, e.summary
            )
        console.print(table)
    if page.next_after is not None:
        err.print(f"more entries: --after {page.next_after}", highlight=False)


@app.command("due")
@one_line_errors
@reads_ledger
def due_cmd(
    within: Annotated[
        str, typer.Option(help="The window: a number and a unit (s, m, h, d, w), e.g. 48h.")
    ] = "48h",
    system: Annotated[str | None, typer.Option(help="One system (default: all).")] = None,
    at: Annotated[
        str | None,
        typer.Option(help="As of this moment (default: now), as for `ailedger status --at`."),
    ] = None,
    home: HomeOpt = None,
    nats: NatsOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object: the moment, the window, the items.")
    ] = False,
) -> None:
    """Obligations overdue now and those falling due within the window, by deadline.

    Overdue: every violation the rules R1-R8 find now. Due: what becomes one by the
    end of the window if nothing more is recorded (preventive measures after an
    incident, audits and insurance about to lapse, a rulebook coming into force).
    Exit status: 0 nothing overdue or due, 1 something overdue, 4 something due
    within the window (nothing overdue); errors as every command (2, 3, 70).
    """
    window = investigate.parse_window(within)
    when = _parse_at(at)

    async def job(projector: Projector, tree: TreeStore) -> investigate.DueReport:
        return await projector.state_thread.call(
            functools.partial(investigate.due, projector.view, window, at=when, system=system)
        )

    report: investigate.DueReport = asyncio.run(_investigation(home, nats, job))
    if as_json:
        _emit(investigate.to_json(report))
    else:
        title = f"Due by {report.until} (as of {report.at}, entries up to {report.as_of_index})"
        table = Table(title=title, title_justify="left", header_style="bold")
        for column in ("deadline", "state", "system", "rule", "severity", "evidence", "obligation"):
            table.add_column(column, no_wrap=column == "deadline")
        for i in report.items:
            style = "red" if i.state == "overdue" else "yellow"
            table.add_row(
                i.deadline or "-",
                f"[{style}]{i.state}[/]",
                i.system,
                i.rule,
                i.severity,
                ", ".join(map(str, i.evidence)),
                f"{i.summary}\n[dim]{i.legal_basis}[/]",
            )
        console.print(table)
        console.print(
            f"{report.overdue} overdue, {report.due} due within {within}", highlight=False
        )
    if report.overdue:
        raise typer.Exit(DUE_OVERDUE)
    if report.due:
        raise typer.Exit(DUE_SOON)


def _doctor_text(doc: dict[str, Any]) -> str:
    """The health object of the notary as a few lines of text."""

    def when(t: Any) -> str:
        try:
            return format_time(datetime.fromtimestamp(float(t), UTC).replace(microsecond=0))
        except (TypeError, ValueError, OverflowError):
            return "?"

    checkpoint = doc.get("checkpoint") or {}
    signing = "on" if checkpoint.get("signing") else "OFF"
    lines = [
        f"notary {doc.get('origin')} (pid {doc.get('pid')}): {doc.get('last_sequence')} entries, "
        f"last checkpoint {checkpoint.get('size')}, checkpoint signing {signing}, "
        f"NATS {'connected' if doc.get('connected') else 'DISCONNECTED'}"
    ]
    for name, stream in sorted((doc.get("streams") or {}).items()):
        problems = stream.get("problems") or []
        lines.append(f"stream {name}: " + ("ok" if not problems else "; ".join(problems)))
    alarms = doc.get("alarms") or []
    if not alarms:
        lines.append("alarms: none")
    for a in alarms:
        lines.append(
            f"ALARM {a.get('code')}: {a.get('count')}x, last at {when(a.get('last_at'))}: "
            f"{a.get('detail')}"
        )
    return "\n".join(lines) + "\n"


@app.command()
@one_line_errors
def doctor(
    home: HomeOpt = None,
    nats: NatsOpt = None,
    as_json: JsonOpt = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the notary.")] = 5.0,
) -> None:
    """Ask the running notary for its health and alarms; exit 1 while any alarm is active."""
    from ledger.bus.alarms import request_health

    async def job() -> dict[str, Any]:
        nc = await _connect(home, nats, "ailedger-doctor")
        try:
            return await request_health(nc, timeout)
        finally:
            await nc.drain()

    doc = asyncio.run(job())
    if as_json:
        _emit(doc)
    else:
        sys.stdout.write(_doctor_text(doc))
    if doc.get("alarms") or not (doc.get("checkpoint") or {}).get("signing", True):
        raise typer.Exit(CHECK_FAILED)


@app.command()
@one_line_errors
def demo(
    keep: Annotated[
        Path | None, typer.Option(help="Keep the demo ledger in this directory.")
    ] = None,
    serve: Annotated[
        bool,
        typer.Option(
            "--serve",
            help="Then keep the demo ledger up (`ailedger up` on it) with the workbench; "
            "Ctrl-C stops it.",
        ),
    ] = False,
    web_port: Annotated[
        int, typer.Option(help="With --serve: port of the web app (0: any free port).")
    ] = 8470,
) -> None:
    """Play the demo scenario (docs/rules.md) on a fresh embedded ledger and show the result."""
    import shutil
    import tempfile

    from ailedger.demo import run_demo

    if not serve:
        raise typer.Exit(run_demo(console, keep))
    workdir = keep or Path(tempfile.mkdtemp(prefix="ailedger-demo-"))
    try:
        status = run_demo(console, workdir)
        if status:
            raise typer.Exit(status)
        from services.web.auth import issue_token

        home = Home(workdir / "ledger")
        token, _ = issue_token(home, role="regulator", label="ailedger demo --serve")
        console.print(
            f"\n[bold]Serving the demo ledger[/] {home.path}: sign in to the workbench with "
            f"this regulator token (shown once): {token}",
            highlight=False,
            soft_wrap=True,
        )
        sys.stdout.flush()
        up(home=home.path, web_port=web_port)
    finally:
        if keep is None:
            shutil.rmtree(workdir, ignore_errors=True)


# Commands in modules of their own register themselves on `app` when imported.
# Commands in modules of their own register themselves on `app` when imported.
import ailedger.monitorcmd  # noqa: E402
import ailedger.webcmd  # noqa: E402
import ailedger.witnesscmd  # noqa: E402, F401


def main() -> None:
    app()
