"""``ailedger web`` and ``ailedger web-token``: the HTTP API and workbench, and its tokens.

``ailedger web`` serves the app of :mod:`services.web.app` (the API under
``/api/v1``, the workbench pages) on localhost by default, reading LEDGER and
CHECKPOINTS as the home's ``_reader`` bus identity and forwarding gateway
submissions as ``_gateway``. It prints one line, ``web up: URL (pid N)``, once
it listens, and stops cleanly on SIGINT or SIGTERM.

``ailedger web-token issue --actor A`` (a gateway token for actor A) or
``--role regulator|auditor`` (an investigator token) prints a new bearer token
once; the home keeps only its hash (:mod:`services.web.auth`). It registers
itself on :mod:`ailedger.cli`'s app when imported, as ``ailedger.witnesscmd`` does.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Annotated

import typer

from ailedger.cli import HomeOpt, JsonOpt, NatsOpt, _emit, _home, _nats_url, app, one_line_errors

__all__ = ["web", "web_token_app"]


@app.command()
@one_line_errors
def web(
    home: HomeOpt = None,
    nats: NatsOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8470,
    ui: Annotated[bool, typer.Option(help="Serve the workbench pages too.")] = True,
) -> None:
    """Serve the HTTP API (/api/v1) and the web workbench in the foreground."""
    from ledger.bus.auth import GATEWAY
    from services.web.app import WebConfig, ready_line, serve_web

    h = _home(home)
    url = _nats_url(home, nats)
    if h.identities().index_path.exists():
        # the gateway's own bus identity: the server admits it from the next
        # authorization the notary installs (ailedger up makes it before the notary)
        h.identities().ensure(GATEWAY)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("uvicorn").setLevel(logging.WARNING)

    def ready(listening: str) -> None:
        sys.stdout.write(ready_line(listening) + "\n")
        sys.stdout.flush()  # supervisors read this line through a pipe

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve_web(WebConfig(h, url), stop, host=host, port=port, ui=ui, on_ready=ready)

    asyncio.run(main())
    sys.stdout.write("web stopped cleanly\n")


web_token_app = typer.Typer(
    help="Bearer tokens of the HTTP API: a gateway token bound to an actor, or an "
    "investigator token (regulator, auditor). Only their hashes are stored.",
    no_args_is_help=True,
)
app.add_typer(web_token_app, name="web-token")


@web_token_app.command("issue")
@one_line_errors
def web_token_issue(
    actor: Annotated[
        str | None, typer.Option(help="Bind the token to this actor (gateway submissions).")
    ] = None,
    role: Annotated[
        str | None, typer.Option(help="An investigator token: regulator or auditor.")
    ] = None,
    label: Annotated[str, typer.Option(help="Who holds it (shown in the list).")] = "",
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Issue a token and print it once (it cannot be shown again)."""
    from services.web.auth import issue_token

    token, principal = issue_token(_home(home), actor=actor, role=role, label=label)
    if json_out:
        _emit({"token": token, "id": principal.token_id, "bound_to": principal.describe()})
        return
    sys.stdout.write(token + "\n")
    sys.stderr.write(
        f"token {principal.token_id} for {principal.describe()}: keep it secret; only its "
        "hash is stored, it cannot be shown again\n"
    )


@web_token_app.command("list")
@one_line_errors
def web_token_list(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """The tokens of this home: id, what each is bound to, when it was issued."""
    from services.web.auth import list_tokens

    for principal, issued in list_tokens(_home(home)):
        if json_out:
            _emit(
                {
                    "id": principal.token_id,
                    "kind": principal.kind,
                    "actor": principal.actor,
                    "role": principal.role,
                    "label": principal.label,
                    "issued": issued,
                }
            )
        else:
            sys.stdout.write(f"{principal.token_id}  {issued}  {principal.describe()}\n")


@web_token_app.command("revoke")
@one_line_errors
def web_token_revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (at least 8 hex digits).")],
    home: HomeOpt = None,
) -> None:
    """Revoke a token: the web app refuses it from its next request."""
    from services.web.auth import revoke_token

    gone = revoke_token(_home(home), token_id)
    if not gone:
        from services.web.auth import TokenError

        raise TokenError(f"no token with id {token_id}")
    sys.stdout.write(f"revoked {gone} token{'s' if gone > 1 else ''}\n")
