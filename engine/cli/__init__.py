"""The `rivulet` command line: the only package that knows about the terminal."""

from engine.cli.commands import main

__all__ = ["main"]
