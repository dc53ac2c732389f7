"""The ``ailedger`` application: the command line (``cli``), the demo and its
scenario, the JSON Schema generator and the published schemas and examples.

It sits on top of ``ledger`` (the library) and ``services`` (the processes).
"""
