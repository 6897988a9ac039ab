"""The persons package."""
