"""The source and entity every benchmark job reads: the events file named by BENCH_EVENTS.

The source is made by a function each job calls, not at this module's import: a job file
is imported anew at every run, but this module only once per process, and scenarios in
one process point BENCH_EVENTS at different files.
"""

import os

from engine import BatchSource, Entity, Field, FileConfig, String


def events_source() -> BatchSource:
    """The events file BENCH_EVENTS names now."""
    return BatchSource(
        name="events",
        batch_config=FileConfig(uri=os.environ["BENCH_EVENTS"], timestamp_field="timestamp"),
    )


user = Entity(name="user", join_keys=[Field("user_id", String)])
