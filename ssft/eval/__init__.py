"""Evaluation: tag-prompted sampling, metrics, the evaluate and report stages."""
