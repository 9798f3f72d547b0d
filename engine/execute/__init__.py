"""Executing: the Executor protocol (protocol.py: tasks, events, results, the worker loop
`serve`) and the local executor that hosts workers in this process or spawned ones.

May import: engine.work, engine.runtime, engine.plan, engine.define, engine.errors.
"""
