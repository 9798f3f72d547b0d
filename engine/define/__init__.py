"""Definitions: the plain, validated objects a job file declares. Nothing here runs user code.

May import: engine.errors only.
"""
