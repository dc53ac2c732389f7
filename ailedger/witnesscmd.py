"""``ailedger witness``: run a standalone witness for the log of a ledger home.

The witness (``services.witness``) cosigns the home's checkpoints over
c2sp.org/tlog-witness HTTP with its own key (``keys/witness.pem``, created when
missing) and keeps what it cosigned in its own state directory (``witness/``
of the home unless ``--state``). It prints its URL and its cosignature verifier
key: the key counts for verifiers only once the trust policy lists it in
``witness_keys``. It registers itself on :mod:`ailedger.cli`'s app when imported
(``ailedger.cli`` imports it last, so either may be imported first).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ailedger.cli import HomeOpt, JsonOpt, _emit, _home, app, one_line_errors

if TYPE_CHECKING:
    from services.witness.service import Witness

__all__ = ["witness"]


@app.command()
@one_line_errors
def witness(
    home: HomeOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 0,
    state: Annotated[
        Path | None,
        typer.Option(
            help="The witness's state directory (default: HOME/witness). Never derived: "
            "it is what the witness cosigned."
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Run a witness (C2SP tlog-witness) for this home's log in the foreground."""
    from services.witness.service import WitnessConfig, serve_witness

    h = _home(home)
    vkey = h.ensure_witness_key()
    config = WitnessConfig.from_home(h, state_dir=state)
    trusted = vkey in h.trust().witness_vkeys()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("uvicorn").setLevel(logging.WARNING)  # its start/stop chatter

    def ready(url: str, w: Witness) -> None:
        if json_out:
            _emit(
                {
                    "url": url,
                    "name": w.name,
                    "verifier_key": w.vkey,
                    "origins": list(config.logs),
                    "state": str(config.state_dir),
                    "in_trust_policy": trusted,
                    "pid": os.getpid(),
                }
            )
        else:
            sys.stdout.write(
                f"witness up: {w.name} at {url} (pid {os.getpid()}); Ctrl-C to stop\n"
                f"  witnessing    {', '.join(config.logs)}\n"
                f"  verifier key  {w.vkey}\n"
                f"  state         {config.state_dir}\n"
            )
            if not trusted:
                sys.stdout.write(
                    "  note: this key is not in the trust policy's witness_keys: its "
                    "cosignatures count only once the regulator adds it\n"
                )
        sys.stdout.flush()  # supervisors read these lines through a pipe

    async def main() -> Witness:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await serve_witness(config, stop, host=host, port=port, on_ready=ready)

    stopped = asyncio.run(main())
    if not json_out:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(stopped.counts.items())) or "no requests"
        sys.stdout.write(f"witness stopped cleanly: {counts}\n")
