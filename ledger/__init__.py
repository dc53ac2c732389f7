"""ailedger: a verifiable compliance ledger for AI systems.

Every registration, classification, incident, measure, audit, insurance change
and regulator decision is an Ed25519-signed DSSE envelope, integrated by a
single notary into an append-only NATS JetStream stream (LEDGER) and hashed into
an RFC 9162 Merkle tree. The library is split by concept:

- ``timeutil``  RFC 3339 times and the one injectable clock
- ``keys``      Ed25519 keys, fingerprints, key ids
- ``dsse``      DSSE v1 envelopes (PAE, sign, verify the exact bytes)
- ``events``    the event catalogue v1 (msgspec Structs, strict decoding)
- ``entry``     the ledger entry format hashed into the tree
- ``merkle``, ``note``, ``checkpoint``  RFC 9162 and C2SP formats
- ``trust``     the regulator's trust policy
- ``receipt``   the notary's signed receipts
- ``domain``    the compliance domain model (eventsourcing aggregates)
- ``bus``, ``natsserver``  NATS JetStream streams and the embedded server
- ``client``    the SDK that signs and submits events
"""

__version__ = "0.1.0"
