"""The witness: cosigns checkpoints of the logs it witnesses (c2sp.org/tlog-witness).

See :mod:`services.witness.service`; the protocol's pure part is
:mod:`ledger.formats.witness`.
"""
