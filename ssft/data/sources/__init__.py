"""Trace sources: synthetic tasks, imported files, teacher models. Each returns trace rows (one per trace)."""
