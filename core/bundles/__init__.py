"""The bundles package."""
