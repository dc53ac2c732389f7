"""Compliance state with eventsourcing: aggregates named after the law's nouns
(``domain``), the application that admits and applies ledger entries
(``application``), and the one place where asyncio meets the synchronous
library (``asyncbridge``).
"""
