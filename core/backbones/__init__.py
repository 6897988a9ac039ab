"""Pretrained face networks, converted once from pinned registry packages to Keras files.

`registry` pins the sources and reads what is installed; `faceres` and `emotion` build each
network from its package's files. Fetching is `workers.services.backbones`'s job: nothing here
downloads.
"""

from core.backbones.registry import (
    BACKBONES,
    BackboneMissingError,
    BackboneSource,
    backbones_dir,
    installed_backbones,
    load_backbone,
)

__all__ = [
    "BACKBONES",
    "BackboneMissingError",
    "BackboneSource",
    "backbones_dir",
    "installed_backbones",
    "load_backbone",
]
