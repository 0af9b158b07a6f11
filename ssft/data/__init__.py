"""Data: synthetic tasks, the trace dataset and its validation."""
