"""The law as data and pure functions: the event catalogue, who may sign what,
the one admission judgement (``admission``: key histories, suspensions,
roles, and whether an entry may be admitted; the notary, the offline verifier
and the timeline all ask it), the compliance rules R1-R8 and the rejection
reason codes.

Only ``events`` needs msgspec; ``authority``, ``admission``, ``rules`` and
``rejections`` use the standard library (and ``ledger.formats``), so the
offline verifier can use them.
"""
