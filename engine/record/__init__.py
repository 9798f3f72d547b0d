"""Recording: the state ledger beside the output, and its reconciliation with the files."""
