"""Prefect orchestration of the DVC pipeline (``flows/pipeline.py``) and the process that serves it."""
