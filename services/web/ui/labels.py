"""Every word the workbench's pages show, by language: one dict per language.

English is complete; Kazakh ("kk") and Russian ("ru") are added as dicts of
their own with the same keys (a missing key falls back to English, so a
partial translation can ship). Templates read them as ``L.key``. A page's
language is ``?lang=`` (then remembered in a cookie), else the browser's
Accept-Language, among the languages here (services/web/ui/pages.py
``language``); with more than one, the header offers the others.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["DEFAULT_LANGUAGE", "LABELS", "labels"]

DEFAULT_LANGUAGE = "en"

LABELS: dict[str, dict[str, str]] = {
    "en": {
        "language_name": "English",
        "app_title": "AI Compliance Ledger",
        "app_subtitle": "Investigator's workbench",
        "nav_dashboard": "Systems",
        "nav_due": "Due soon",
        "nav_checkpoint": "Latest checkpoint",
        "nav_api": "API",
        # verdicts and statuses
        "verdict_compliant": "Compliant",
        "verdict_at_risk": "At risk",
        "verdict_non_compliant": "Non-compliant",
        "verdict_critical": "Critical",
        "status_violation": "Violation",
        "status_open": "Open",
        "status_late": "Met late",
        "severity_critical": "Critical",
        "severity_high": "High",
        "severity_medium": "Medium",
        # the date control
        "as_of": "As of",
        "as_of_now": "now",
        "as_of_help": (
            "A date (the end of that day) or a date and time, in Kazakhstan time (UTC+5)."
        ),
        "show": "Show",
        "now": "Now",
        "bad_moment": "Not a date or time",
        # the read model against LEDGER
        "fresh": "Read model up to date: entries up to #%s (LEDGER holds %s sealed leaves).",
        "stale": (
            "The read model is behind LEDGER by %s entries (it holds entries up to #%s): "
            "verdicts below do not count the missing entries."
        ),
        "no_projector": (
            "No projector is running: the read model stays as it is until one runs "
            "(ailedger up, or ailedger project)."
        ),
        # dashboard
        "dashboard_title": "AI systems by verdict",
        "systems_count": "systems",
        "col_system": "System",
        "col_verdict": "Verdict",
        "col_findings": "Findings",
        "col_as_of_entry": "As of entry",
        "only_these": "Show only these systems",
        "only_verdict": "Showing only",
        "all_verdicts": "all systems",
        "no_systems": "No AI system is registered in this ledger (as of this moment).",
        "not_registered_yet": "not registered yet",
        # system page
        "system_title": "AI system",
        "verdict_line": "Verdict",
        "entries_up_to": "Entries taken into account: up to",
        "rulebook_in": "rulebook adopted in entry",
        "download_bundle": "Download evidence bundle (newest checkpoint)",
        "bundle_help": (
            "A JSON file anyone can verify offline with `ailedger verify` and the trust policy."
        ),
        "findings_title": "Findings",
        "no_findings": "No finding: every rule is met.",
        "col_rule": "Rule",
        "col_status": "Status",
        "col_severity": "Severity",
        "col_since": "Since",
        "col_deadline": "Deadline",
        "col_finding": "Finding",
        "col_legal_basis": "Legal basis",
        "col_evidence": "Evidence",
        "timeline_title": "Timeline",
        "timeline_help": (
            "Every entry of this system integrated up to the moment shown, in ledger order."
        ),
        "timeline_cut": "The newest %s of %s entries.",
        "timeline_full": "Show the whole timeline",
        "col_index": "Entry",
        "col_integrated": "Integrated",
        "col_signed": "Signed",
        "col_who": "Who",
        "col_role": "Role",
        "col_what": "What",
        "col_key": "Key",
        "col_check": "Check",
        "col_proof": "Proof",
        "same_time": "same",
        "verified": "verified",
        "not_verified": "not verified",
        "proof_link": "proof",
        "no_timeline": "Nothing integrated for this system up to this moment.",
        # due
        "due_title": "Due soon",
        "due_help": (
            "Overdue: every rule broken now. Due: what the rules will find broken by the end "
            "of the window if nothing more is recorded (measures after incidents, reports, "
            "audits and insurance about to lapse, rulebook changes coming into force)."
        ),
        "within": "Within",
        "col_due": "Due",
        "col_left": "Time left",
        "col_obligation": "Obligation",
        "nothing_due": "Nothing is overdue and nothing falls due in this window.",
        "due_state_overdue": "Overdue",
        "due_state_due": "Due",
        "due_until": "Judged on the facts known at that moment, as they will stand at",
        # search
        "nav_search": "Search",
        "search_title": "Search the ledger",
        "search_help": (
            "Entries signed by an actor, about a subject (system/…, actor/…), of an event "
            "type, or signed with a key fingerprint: any of them together, in ledger order."
        ),
        "search_submit": "Search",
        "next_page": "Next page",
        "signed_by_actor": "Every entry this actor signed",
        "signed_with_key": "Every entry signed with this key",
        "nothing_found": "No entry matches.",
        # entry page
        "entry_title": "Entry",
        "entry_decoded": "Decoded event",
        "field_subject": "Subject",
        "field_type": "Event type",
        "field_actor": "Signer",
        "field_integrated": "Integrated",
        "field_signed_at": "Signed at",
        "field_key": "Signing key",
        "field_payload": "Payload (as signed)",
        "field_event_id": "Event id",
        "field_leaf_hash": "Leaf hash (RFC 9162)",
        "download_raw": "Download the entry's bytes",
        "signed_by": "Checkpoint signed by",
        "seal_title": "Sealed batch",
        "seal_line": "Appended in the batch of entries %s to %s, sealed by %s.",
        "seal_root_ok": "The seal's root is the tree's root at its size.",
        "signer_title": "Signer",
        "field_roles": "Roles",
        "field_check": "Check",
        "field_key_status": "The key today",
        "suspended": "suspended",
        "key_valid": "valid",
        "key_not_yet": "not yet valid",
        "key_rotated": "rotated out",
        "key_revoked": "revoked",
        "key_unknown": "not in the signer's history",
        "valid_from": "valid from",
        "valid_until": "until",
        "compromised_at": "compromised at",
        "key_history": "Key history (entries naming this key)",
        "col_event": "Event",
        "no_key_history": "No key event recorded for this signer.",
        "inclusion_title": "Inclusion proof",
        "proof_verified": "Verified: this entry is in the log under the signed checkpoint of size",
        "proof_failed": "NOT verified",
        "proof_does_not_verify": (
            "Entry %s: its inclusion proof does NOT verify under the signed checkpoint (%s). "
            "The Merkle tree file or LEDGER does not match what the log signed."
        ),
        "proof_unavailable": "No proof yet",
        "under_checkpoint": "under the checkpoint of size",
        "proof_hashes": "Proof hashes (RFC 9162)",
        "download_proof": "Download tlog-proof",
        "prev_entry": "Previous in chain",
        "no_prev": "first of its chain",
        # checkpoint page
        "checkpoint_title": "Checkpoint",
        "field_origin": "Origin",
        "field_size": "Tree size",
        "field_root": "Root hash",
        "witnesses_title": "Witness cosignatures",
        "col_witness": "Witness",
        "col_cosigned": "Cosigned at",
        "col_counted": "Counted by the trust policy",
        "quorum": "Quorum required",
        "counted": "counted",
        "no_witnesses": "No witness has cosigned this checkpoint.",
        "signed_note": "Signed note",
        "download_note": "Download the signed note",
        "consistency_proof": "consistency proof",
        "checkpoint_history": "Checkpoints (newest first, by tree size)",
        "yes": "yes",
        "no": "no",
        # signing in
        "login_title": "Sign in",
        "login_help": (
            "Investigation pages need a regulator or auditor token of this ledger, issued by "
            "its operator with `ailedger web-token issue --role regulator` (or auditor). "
            "Entries, proofs and checkpoints are public."
        ),
        "login_token": "Investigator token",
        "login_submit": "Sign in",
        "logout": "Sign out",
        # errors
        "not_found": "Not found",
        "error_title": "Cannot show this page",
        "footer": (
            "Read-only view of the ledger. Every page can be checked offline against the "
            "signed checkpoints."
        ),
    },
}


def labels(language: str = DEFAULT_LANGUAGE) -> Mapping[str, str]:
    """The labels of ``language``, English where it has none."""
    english = LABELS[DEFAULT_LANGUAGE]
    own = LABELS.get(language)
    return english if own is None or own is english else {**english, **own}
