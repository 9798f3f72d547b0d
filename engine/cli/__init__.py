"""The `rivulet` command line: the only package that knows about the terminal. It parses
arguments, calls the library (engine.materialize, engine.retrieve, engine.testing) and prints.

May import anything below it.
"""

from engine.cli.commands import main

__all__ = ["main"]
