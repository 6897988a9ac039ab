"""The project's error taxonomy.

`InputError` and its children are permanent: the same input fails the same way, so a task
records the message on the video at once and never retries. `RetryableError` covers outages
(storage, database, broker) where trying again later can succeed.

Anything else a stage raises is neither: a fault nobody foresaw. It is not recorded as the
video's failure (it may well be an outage in disguise); the message is delivered again, and
the delivery cap fails the video if it never finishes.
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


class ModelIntegrityError(ModelBundleError, InputError):
    """A model version's bundle is there but is not that version (changed after it was saved,
    or unreadable), or the version is not registered.

    A bundle problem to the commands that load bundles, and permanent for every video pinned
    to that version: those fail at once, with this message, instead of waiting on a bundle
    that will never pass its check.
    """


class RetryableError(OceanStreamError):
    """A transient failure (storage, database, broker): the work may be retried."""


class StorageError(RetryableError):
    """Reading or writing the artifact store failed."""


class ArtifactError(InputError):
    """A stored intermediate (frames, features) is missing or corrupt; that video fails."""


class ContentMismatchError(ArtifactError):
    """A stored file no longer hashes to the content hash it was registered under."""
