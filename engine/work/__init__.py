"""Working: what a worker process does with a task — resources, transforms, calls."""
