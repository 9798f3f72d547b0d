"""The source and entity every benchmark job reads: the events file named by BENCH_EVENTS."""

import os

from engine import BatchSource, Entity, Field, FileConfig, String

events = BatchSource(
    name="events",
    batch_config=FileConfig(uri=os.environ["BENCH_EVENTS"], timestamp_field="timestamp"),
)
user = Entity(name="user", join_keys=[Field("user_id", String)])
