"""`python -m engine` runs the `rivulet` command line."""

from engine.cli import main

main()
