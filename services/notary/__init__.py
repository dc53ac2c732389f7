"""The notary: the single sequencer that turns INTAKE submissions into LEDGER
entries, signs checkpoints of them and answers lookups.

- :mod:`services.notary.sequencer`: INTAKE in, admission through the state's
  :class:`~ledger.state.application.Batch`, fenced atomic LEDGER appends, answers;
- :mod:`services.notary.checkpointer`: signed checkpoints into CHECKPOINTS, never
  two inconsistent ones;
- :mod:`services.notary.lookup`: receipts and tlog-proofs for an event id;
- :mod:`services.notary.service`: :class:`Notary` wires them over one state;
  :func:`serve` runs it.
"""

from __future__ import annotations

from ledger.formats.errors import USAGE, LedgerError

__all__ = ["MAX_ENVELOPE", "Notary", "NotaryError", "exclusive", "serve"]


class NotaryError(LedgerError, RuntimeError):
    """The notary cannot run (no genesis, foreign key, state from another ledger)."""

    code = "notary_cannot_run"
    exit_status = USAGE


# After NotaryError: the modules below import it from here.
from services.notary.service import Notary, exclusive, serve  # noqa: E402
from services.notary.submission import MAX_ENVELOPE  # noqa: E402
