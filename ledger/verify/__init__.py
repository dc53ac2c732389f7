"""The offline verifier of evidence bundles (``ailedger verify``).

Depends on ``ledger.formats`` and the dependency-free part of ``ledger.law``
only (``cryptography`` and the standard library): what a court's expert audits.
"""

from ledger.verify.bundle import (
    BUNDLE_FORMAT,
    CLAIM_FORMAT,
    Report,
    VerificationError,
    verify_bundle,
)

__all__ = ["BUNDLE_FORMAT", "CLAIM_FORMAT", "Report", "VerificationError", "verify_bundle"]
