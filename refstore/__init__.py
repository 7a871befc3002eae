"""refstore: immutable, versioned snapshots of data anywhere fsspec reaches, without copying it."""

from __future__ import annotations

from ._exceptions import (
    ArtifactNotFoundError,
    ConflictError,
    IntegrityError,
    InvalidNameError,
    InvalidURLError,
    ManifestError,
    ObjectChangedError,
    ObjectNotFoundError,
    RefstoreError,
    RunError,
    StorageUnavailableError,
    TooManyObjectsError,
    UnsafePathError,
    UnsupportedSchemeError,
)
from ._version import __version__
from .artifact import Artifact
from .backends import ObjectMeta
from .manifest import Manifest, ManifestDiff, ManifestEntry
from .registry import Registry
from .runs import Run, finish, init, restore, save
from .version import ArtifactVersion, VerifyReport

__all__ = [
    "Artifact",
    "ArtifactNotFoundError",
    "ArtifactVersion",
    "ConflictError",
    "IntegrityError",
    "InvalidNameError",
    "InvalidURLError",
    "Manifest",
    "ManifestDiff",
    "ManifestEntry",
    "ManifestError",
    "ObjectChangedError",
    "ObjectMeta",
    "ObjectNotFoundError",
    "RefstoreError",
    "Registry",
    "Run",
    "RunError",
    "StorageUnavailableError",
    "TooManyObjectsError",
    "UnsafePathError",
    "UnsupportedSchemeError",
    "VerifyReport",
    "__version__",
    "finish",
    "init",
    "restore",
    "save",
]


def __getattr__(name: str) -> Run | None:
    """``refstore.run``: the current run, or ``None`` (looked up on each access, so never stale)."""
    if name == "run":
        from .runs import current_run

        return current_run()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
