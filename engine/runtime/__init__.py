"""The call runtime: a transform called with its resources under a policy — resource pool
(built once, repaired, torn down), rate limits and in-flight caps, retries with transient
classification, timeouts, 429 adaptation, the dispatch of fast rows to threads, stopping,
and rate limits shared through Redis. Batch materialization uses it per micro-batch or row,
realtime serving per request.

May import: engine.errors and the plain values of engine.define (policies, resources,
secrets, schedules); never its feature views (what to call comes as a CallSpec), nor
plans, sources, stores or workers.
"""
