"""The storage package."""
