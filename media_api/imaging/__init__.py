"""Pure image handling (no web, DB or S3 imports) so the API and the workers run the same code."""
