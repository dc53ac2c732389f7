"""The witness: an independent C2SP tlog-witness that cosigns consistent checkpoints."""
