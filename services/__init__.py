"""Long-running processes of ailedger: thin shells around the ``ledger`` library."""
