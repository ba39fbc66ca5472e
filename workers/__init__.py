"""Celery workers: thin tasks over the processing pipeline."""
