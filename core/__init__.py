"""Pure analysis: decoding, faces, optical flow, the Keras models and model bundles.

Nothing in this package imports Celery, Redis or SQLAlchemy, and nothing reads the
environment: callers pass configuration in.
"""
