"""NATS JetStream: the streams and their settings (``streams``), the embedded
nats-server (``natsserver``), proofs and evidence bundles read from the streams
(``proofs``), the client SDK (``client``), reading the log (``logview``) and
the ledger home on disk (``home``).
"""
