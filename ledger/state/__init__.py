"""Compliance state with eventsourcing: aggregates named after the law's nouns
(``domain``), the application that admits and applies ledger entries
(``application``; its :class:`~ledger.state.application.Batch` builds on
``overlay``, the aggregates of a batch not yet recorded, and ``recording``, the
state change of each event type), and the one place where asyncio meets the
synchronous library (``asyncbridge``). ``stored`` asks the store in one query
which aggregates exist and what one aggregate's events are; ``transcoding``
writes eventsourcing's JSON format with msgspec, byte for byte.
"""
