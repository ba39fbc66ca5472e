"""Image upload and processing service."""
