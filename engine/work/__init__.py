"""Working: what a worker does with a task — read the window, run the transform over
micro-batches through the call runtime, check the output, write and rename its file.

May import: engine.runtime, engine.plan, engine.read, engine.store, engine.define. Never the
ledger: the driver records what a worker committed.
"""
