"""The offline store, the floor below planning and work: where each interval's Parquet file
lives (`parquet`: layout, the atomic `PartitionWriter`, committed files), dead-letter files,
the state ledger, the store lock, and the reconciliation of ledger and files after a crash.

May import: engine.define, engine.errors, engine.arrow. Nothing in it knows plans, workers,
executors or the CLI.
"""
