"""Object storage: key formats and the S3 adapter."""
