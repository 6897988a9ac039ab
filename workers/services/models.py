"""Model bundles: which one a process serves with, and recording bundles in the database.

The active version lives in the database. Workers read it when they ingest each video and
load that version's bundle from its registered location, so activating a version changes
what the next videos are scored with, without restarting anything; every prediction keeps
the version that made it.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.bundles.model_card import card_of
from core.errors import ModelBundleError
from db import repository as repo
from db.repository.model_catalog import list_model_versions
from workers.services.errors import UsageError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from core.bundles.bundle import ModelBundle
    from db.models import ModelVersion
    from workers.settings import Settings

UNTRAINED_WARNING = (
    "warning: model {version} is untrained (seeded weights); its scores are not a "
    "personality assessment until a trained bundle is loaded (--model or OCEANSTREAM_MODEL)."
)


@lru_cache(maxsize=4)
def _load(path: str | None, num_frames: int) -> ModelBundle:
    from core.bundles.bundle import build_default_bundle, load_bundle

    if path is None:
        return build_default_bundle(num_frames=num_frames)
    return load_bundle(Path(path).expanduser())


def resolve_bundle(path: str | Path | None, num_frames: int = 16) -> ModelBundle:
    """The bundle at `path`, or the built-in untrained one; loaded once per process."""
    return _load(None if path is None else str(path), num_frames)


def serving_bundle(
    session_factory: object, settings: object, override: str | Path | None = None
) -> tuple[ModelBundle, str | None]:
    """The bundle `analyze` serves with, and where it lives.

    In order: an explicit `--model`, `OCEANSTREAM_MODEL`, the version activated in the
    database (`oceanstream models activate`), the built-in untrained bundle.
    """
    path = override or getattr(settings, "model", None)
    num_frames = int(getattr(settings, "num_frames", 16))
    if path:
        return resolve_bundle(path, num_frames), str(Path(path).expanduser().absolute())
    with session_factory() as session:  # type: ignore[operator]
        active = repo.get_active_model_version(session=session)
        version = None if active is None else str(active.version)
    if version is not None:
        bundle = load_registered_bundle(session_factory, version)
        return bundle, getattr(active, "uri", None)
    return resolve_bundle(None, num_frames), None


def register_bundle(session_factory: object, bundle: ModelBundle, uri: str | None = None) -> None:
    """Make sure the bundle's version has a row, so predictions can reference it."""
    meta = bundle.metadata
    with session_factory.begin() as session:  # type: ignore[attr-defined]
        repo.ensure_model_version(
            session=session,
            version=meta.version,
            trained=meta.trained,
            metadata=meta.to_dict(),
            uri=uri,
        )


def active_or_default_version(*, session: Session, settings: Settings) -> str:
    """The version activated in the database, else the configured (or built-in) bundle's,
    registered. All in the caller's session: on SQLite it may hold the write lock, and a
    second session opened here would wait on it."""
    active = repo.get_active_model_version(session=session)
    if active is not None:
        return str(active.version)
    bundle = resolve_bundle(settings.model, settings.num_frames)
    meta = bundle.metadata
    repo.ensure_model_version(
        session=session,
        version=meta.version,
        trained=meta.trained,
        metadata=meta.to_dict(),
        uri=settings.model,
    )
    return meta.version


def load_registered_bundle(session_factory: object, version: str) -> ModelBundle:
    """Load the bundle a `model_versions` row points at, checking it is that version."""
    from core.bundles.bundle import build_default_bundle, load_bundle

    with session_factory() as session:  # type: ignore[operator]
        row = repo.get_model_version(session=session, version=version)
        if row is None:
            raise ModelBundleError(f"model version {version!r} is not registered")
        uri, meta = row.uri, dict(row.meta or {})
    if uri:
        bundle = load_bundle(Path(uri).expanduser())
    else:
        bundle = build_default_bundle(num_frames=int(meta.get("num_frames", 16)))
    if bundle.metadata.version != version:
        raise ModelBundleError(
            f"model version {version!r} points at {uri or 'the built-in bundle'}, "
            f"which is version {bundle.metadata.version!r}"
        )
    return bundle


class BundleLocationError(ValueError):
    """The version is already registered at another location, and moving it was not asked."""


def register_bundle_dir(
    session_factory: object, path: Path, move: bool = False
) -> tuple[str, bool]:
    """Load the bundle at `path` (which checks it), record it with its absolute location.

    A version already registered from another folder keeps its location (workers load it
    from there) and this raises `BundleLocationError`, unless `move` is set: then the stored
    location becomes `path`. Returns (version, trained). Raises `ModelBundleError` for a
    folder that is not a bundle, `ValueError` for a version already stored with the other
    trained flag.
    """
    from core.bundles.bundle import load_bundle

    directory = str(path.expanduser().absolute())
    bundle = load_bundle(path.expanduser())  # its errors name the folder as the user gave it
    meta = bundle.metadata
    with session_factory.begin() as session:  # type: ignore[attr-defined]
        row = repo.ensure_model_version(
            session=session,
            version=meta.version,
            trained=meta.trained,
            metadata=meta.to_dict(),
            uri=directory,
            relocate=move,
        )
        stored = row.uri
    if stored != directory:
        raise BundleLocationError(
            f"model version {meta.version} is already registered at {stored}; it stays there "
            f"(pass --move to serve it from {directory} instead)"
        )
    return meta.version, meta.trained


def activate_version(session_factory: object, version: str) -> None:
    """Activate `version` after checking its bundle loads and is that version."""
    load_registered_bundle(session_factory, version)
    with session_factory.begin() as session:  # type: ignore[attr-defined]
        repo.activate_model_version(session=session, version=version)


class UnknownModelVersion(UsageError):
    """No registered version (nor the built-in one) is, or starts with, the given text."""


def find_version(*, session: Session, ref: str) -> ModelVersion | None:
    """The registered version `ref` names, in full or by a unique prefix; None if none.

    An ambiguous prefix raises `UnknownModelVersion` listing the candidates.
    """
    rows = list_model_versions(session=session)
    exact = [row for row in rows if row.version == ref]
    matches = exact or [row for row in rows if ref and row.version.startswith(ref)]
    if len(matches) > 1:
        names = ", ".join(sorted(row.version for row in matches))
        raise UnknownModelVersion(f"model version {ref!r} is ambiguous; it matches {names}")
    return matches[0] if matches else None


def model_card(session_factory: object, ref: str, num_frames: int = 16) -> dict[str, Any]:
    """The card of a registered version (or of the built-in bundle), with a short header.

    The card is the bundle's own (`BundleMetadata.card`), or for bundles saved before cards
    one derived from their metadata, gaps left as None.
    """
    with session_factory() as session:  # type: ignore[operator]
        row = find_version(session=session, ref=ref)
        if row is not None:
            meta = dict(row.meta or {})
            return {
                "version": row.version,
                "trained": row.trained,
                "created": meta.get("created_at") or row.created_at.isoformat(timespec="seconds"),
                "active": row.active,
                "uri": row.uri,
                "card": card_of(meta),
            }
    if ref.startswith("untrained"):  # the built-in bundle, before anything registered it
        bundle = resolve_bundle(None, num_frames)
        meta = bundle.metadata.to_dict()
        if bundle.metadata.version.startswith(ref):
            return {
                "version": bundle.metadata.version,
                "trained": False,
                "created": None,
                "active": False,
                "uri": None,
                "card": card_of(meta),
            }
    raise UnknownModelVersion(
        f"no model version {ref!r}; see oceanstream models list for the registered ones"
    )
