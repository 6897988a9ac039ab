"""The video package."""
