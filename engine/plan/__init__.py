"""Planning: load a job, check what it needs, and cut the work into tasks."""
