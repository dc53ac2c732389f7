"""A :class:`~ledger.state.application.LedgerState` in a process of its own, for bulk
replays (the projector's ``rebuild``): the state's CPU-bound replay runs on another
core than the reading of LEDGER, the seal checks and the view.

The parent (``services.projector.StateWorker``) starts ``python -c "from
ledger.state.worker import main; main()"``: this module imports only the state
(not NATS, the views or the services), so the child is ready sooner. Requests and
answers are pickles, length-prefixed, on the child's stdin and stdout; the child
exits when its stdin closes (also when the parent is killed), after the
transaction it is in.
"""

from __future__ import annotations

import pickle
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ledger.state.application import LedgerState

__all__ = ["Runs", "WorkerError", "main", "replay_runs"]

#: A chunk for the state: runs of consecutive indexes, as ``(first index, [(sequence,
#: stored bytes)])``.
Runs = Sequence[tuple[int, Sequence[tuple[int, bytes]]]]


class WorkerError(RuntimeError):
    """A request the worker cannot answer (no store open, an unknown request)."""


def replay_runs(state: LedgerState, runs: Runs) -> None:
    """The runs of a chunk into ``state``, in one transaction (:meth:`LedgerState.replay_runs`)."""
    state.replay_runs(runs)


def main() -> None:
    """Answer requests until stdin closes: ``("open", env, trust, fresh)`` (``fresh``:
    :meth:`LedgerState.assume_fresh`), ``("replay",
    runs)`` (answers the state's size), ``("replay_file", path)`` (the runs pickled in
    that file, which it deletes once read), ``("position",)``, ``("digest",)``."""
    requests, answers = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing printed can get between two answers
    state: LedgerState | None = None
    while len(header := requests.read(8)) == 8:
        op, *args = pickle.loads(requests.read(int.from_bytes(header, "big")))
        try:
            if op == "open":
                state = LedgerState(args[0], trust=args[1])
                if len(args) > 2 and args[2]:
                    state.assume_fresh()
                value: Any = None
            elif state is None:
                raise WorkerError("the state worker has no store open")
            elif op == "replay":
                replay_runs(state, args[0])
                value = state.size
            elif op == "replay_file":
                path = Path(args[0])
                runs = pickle.loads(path.read_bytes())
                path.unlink()
                replay_runs(state, runs)
                value = state.size
            elif op == "position":
                value = state.position()
            elif op == "digest":
                value = state.digest()
            else:
                raise WorkerError(f"unknown request {op!r}")
            answer = pickle.dumps(("ok", value), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:
            try:
                answer = pickle.dumps(("error", e), protocol=pickle.HIGHEST_PROTOCOL)
            except Exception:
                answer = pickle.dumps(("error", WorkerError(f"{type(e).__name__}: {e}")))
        answers.write(len(answer).to_bytes(8, "big"))
        answers.write(answer)
        answers.flush()
