"""Reading features back: a view's committed rows (`read_features`) and point-in-time joins
of a spine to views (`get_historical_features`).

May import: engine.plan (to load a job), engine.store, engine.define, engine.errors.
"""
