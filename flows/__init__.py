"""Prefect flows: the whole DAG (pipeline.py) and its deployment (prefect.yaml at the repository root)."""
