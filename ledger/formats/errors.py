"""The one base of every error a user can cause, with a stable code and exit status.

Every exception that reports a problem with the user's input, a check that
failed or a service that is not there derives from :class:`LedgerError`, in
every layer. Each class names its own ``code`` (stable: scripts and the
documentation rely on it, see ``docs/errors.md``) and the ``exit_status`` the
``ailedger`` command exits with:

* 1 (:data:`CHECK_FAILED`): a check failed: a bundle or proof did not verify,
  a submission was rejected, the ledger broke its own rules.
* 2 (:data:`USAGE`): a usage or input error: a bad or missing file, a bad
  argument, an unknown key, a setting that does not make sense.
* 3 (:data:`UNAVAILABLE`): a service is unavailable: NATS or the database
  cannot be reached or did not answer in time.
* 70 (:data:`BUG`, ``EX_SOFTWARE`` of sysexits.h): anything that is not a
  :class:`LedgerError` is a bug in ailedger.

Existing classes keep their other bases (``ValueError``, ``RuntimeError`` ...)
so ``except ValueError`` still catches what it caught. The notary's rejections
(:mod:`ledger.law.rejections`) are errors too; their codes are the reason codes.
"""

from __future__ import annotations

from typing import ClassVar, Final

__all__ = ["BUG", "CHECK_FAILED", "UNAVAILABLE", "USAGE", "LedgerError", "MissingExtra"]

#: A check failed (verification, a rejected submission).
CHECK_FAILED: Final = 1
#: A usage or input error (bad file, bad argument, unknown key).
USAGE: Final = 2
#: A service is unavailable (NATS, the database).
UNAVAILABLE: Final = 3
#: Not a :class:`LedgerError`: a bug in ailedger.
BUG: Final = 70

#: The exit statuses a :class:`LedgerError` may have, and what they mean.
EXIT_STATUSES: Final = {
    CHECK_FAILED: "a check failed (verification failed, a submission rejected)",
    USAGE: "usage or input error (bad file, bad argument, unknown key)",
    UNAVAILABLE: "a service is unavailable (NATS, the database)",
}


class LedgerError(Exception):
    """An error of ailedger's own, reported as one line with its code."""

    #: Stable, unique among all subclasses: snake_case, never renamed or reused.
    code: ClassVar[str] = "error"
    #: What ``ailedger`` exits with: one of :data:`EXIT_STATUSES`.
    exit_status: ClassVar[int] = CHECK_FAILED


class MissingExtra(LedgerError, ImportError):
    """An optional dependency is not installed: the message names the pip command."""

    code = "missing_extra"
    exit_status = USAGE

    def __init__(self, what: str, extra: str) -> None:
        self.extra = extra
        self.install = f"pip install 'ai-compliance-ledger[{extra}]'"
        super().__init__(f"{what} needs the {extra!r} extra: {self.install}")
