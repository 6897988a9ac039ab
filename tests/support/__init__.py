"""Fixtures of real services the tests start: an S3-compatible server."""
