"""The law as data and pure functions: the event catalogue, who may sign what,
the compliance rules R1-R8 and the rejection reason codes.

Only ``events`` needs msgspec; ``authority``, ``rules`` and ``rejections`` use
the standard library, so the offline verifier can use them.
"""
