"""Executing: the Executor protocol (protocol.py: tasks, events, results, the worker loop
`serve`), the driver loop over a pool of workers (driving.py), the local executor that hosts
workers in this process or spawned ones, and the Ray executor (core actors; Ray imported
only there).

May import: engine.work, engine.runtime, engine.plan, engine.define, engine.errors.
"""
