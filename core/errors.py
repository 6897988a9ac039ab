"""The project's error taxonomy.

`InputError` and its children are permanent: the same input fails the same way, so a task
records the message on the video and never retries. `RetryableError` covers outages (storage,
database, broker) where trying again later can succeed.
"""

from __future__ import annotations


class OceanStreamError(Exception):
    """Base class of every error the project raises on purpose."""


class InputError(OceanStreamError):
    """A permanent problem with one input; retrying cannot help."""


class VideoNotFoundError(InputError):
    """The path does not exist or is not a regular file."""


class EmptyVideoError(InputError):
    """The file has zero bytes."""


class VideoDecodeError(InputError):
    """The file is not a video, or its stream is truncated or corrupt."""


class VideoLimitError(InputError):
    """The video is over a configured limit (size, duration or resolution)."""


class NoFaceError(InputError):
    """No face was found in any sampled frame."""


class ModelBundleError(OceanStreamError):
    """A model bundle is missing, malformed or incompatible."""


class RetryableError(OceanStreamError):
    """A transient failure (storage, database, broker): the work may be retried."""


class StorageError(RetryableError):
    """Reading or writing the artifact store failed."""


class ArtifactError(InputError):
    """A stored intermediate (frames, features) is missing or corrupt; that video fails."""
