"""Uploaded images, their processing jobs and variants."""
