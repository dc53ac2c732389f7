"""Read models: the compliance view (verdicts at any moment, timelines) as
eventsourcing projections on SQLite (embedded default) or PostgreSQL.
"""
