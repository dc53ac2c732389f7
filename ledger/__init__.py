"""ailedger's library: a verifiable compliance ledger for AI systems.

Every registration, classification, incident, measure, audit, insurance change
and regulator decision is an Ed25519-signed DSSE envelope, integrated by a
single notary into an append-only NATS JetStream stream (LEDGER) and hashed into
an RFC 9162 Merkle tree. The library is a stack of layers; each imports only
the layers below it (``tests/test_layers.py`` enforces it):

==============  =================================================================
``formats``     bytes and signatures: times, keys, DSSE, entries, Merkle (RFC 9162),
                signed notes and checkpoints (C2SP), receipts, the trust policy.
                Standard library and ``cryptography`` only.
``law``         the event catalogue (msgspec), who may sign what, the rules R1-R8,
                the rejection reason codes.
``verify``      the offline verifier of evidence bundles: ``formats`` and the
                dependency-free part of ``law`` only, so third parties can audit it.
``state``       the compliance domain as eventsourcing aggregates; the notary's
                admission state; the one bridge between asyncio and eventsourcing.
``views``       read models (compliance view, timeline) on SQLite or PostgreSQL.
``bus``         NATS JetStream: streams, the embedded server, proofs and bundles,
                the client SDK, the ledger home on disk.
==============  =================================================================

Above the library: ``services`` (the long-running notary and projector) and
``ailedger`` (the command line, the demo and its scenario).
"""

__version__ = "0.1.0"
