"""refstore: immutable, versioned snapshots of data anywhere fsspec reaches, without copying it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
from .version import ArtifactVersion, VerifyReport

if TYPE_CHECKING:
    from .runs import Run, finish, init, restore, save

_RUNS_API = ("Run", "finish", "init", "restore", "save")

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


def __getattr__(name: str) -> Any:
    """``refstore.run`` (the current run or ``None``, looked up on each access) and the runs API, loaded
    on first use so that ``import refstore`` stays light."""
    if name not in ("run", *_RUNS_API):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import runs

    if name == "run":
        return runs.current_run()
    globals()[name] = value = getattr(runs, name)
    return value
