"""Prefect tasks: thin wrappers that add retries, caching, tags and concurrency limits to the
stage functions in complexitynet (src/complexitynet/stages.py, execute.py). No pipeline logic
lives here; flows/pipeline.py composes these tasks into the DAG."""
