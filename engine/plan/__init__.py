"""Planning: load a job, check what it needs (environments, secrets, source schemas), tile
time into intervals, and decide from the store's state which tasks a run does.

May import: engine.read (to probe sources), engine.store, engine.define, engine.errors.
"""
