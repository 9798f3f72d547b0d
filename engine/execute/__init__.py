"""Executing: handing tasks to workers and gathering what they report."""
