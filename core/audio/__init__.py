"""The audio package."""
