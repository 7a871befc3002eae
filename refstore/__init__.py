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
    TooManyObjectsError,
    UnsafePathError,
    UnsupportedSchemeError,
)
from ._version import __version__
from .artifact import Artifact
from .backends import ObjectMeta
from .manifest import Manifest, ManifestDiff, ManifestEntry
from .registry import Registry
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
    "RunError",
    "TooManyObjectsError",
    "UnsafePathError",
    "UnsupportedSchemeError",
    "VerifyReport",
    "__version__",
]
