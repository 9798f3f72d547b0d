"""Reading sources: a feature view's source rows for one interval, as a stream of Arrow
record batches, the window pushed down to DuckDB or the loader.

May import: engine.define, engine.errors, engine.arrow.
"""
