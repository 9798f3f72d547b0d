"""Realtime serving: a job's realtime feature views answering requests with their resources,
in this process (`FeatureServer`) or over Tecton's HTTP API (`rivulet serve`, FastAPI on
uvicorn). A request enters the same call runtime a batch micro-batch does: resources built
once per process and repaired when broken, rate limits, retries, timeouts.

May import: engine.runtime, engine.plan (the job, secrets, rates), engine.define and
engine.errors; never the batch path (work, execute, store, read).
"""

from engine.serve.server import Feature, FeatureServer, FeatureVector

__all__ = ["Feature", "FeatureServer", "FeatureVector"]
