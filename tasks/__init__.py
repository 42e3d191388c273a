"""Prefect tasks: thin wrappers that add retries, caching, tags and concurrency limits to the
stage modules' functions (src/complexitynet/<stage>.py). No pipeline logic lives here;
flows/pipeline.py composes these tasks into the DAG."""
