"""refstore: immutable, versioned snapshots of data anywhere fsspec reaches, without copying it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .core.exceptions import (
    AliasedVersionError,
    ArtifactNotFoundError,
    ArtifactTypeError,
    ConflictError,
    CorruptBlobError,
    DeletedVersionError,
    IntegrityError,
    InvalidNameError,
    InvalidURLError,
    LocalChangesError,
    ManifestError,
    ObjectChangedError,
    ObjectNotFoundError,
    RefstoreError,
    RunError,
    StorageAccessError,
    StorageUnavailableError,
    TooManyObjectsError,
    UnsafePathError,
    UnsupportedSchemeError,
)

if TYPE_CHECKING:
    from .core.manifest import Manifest, ManifestDiff, ManifestEntry
    from .runs import Run, finish, init, restore, save
    from .snapshots.artifact import Artifact
    from .snapshots.gc import GCReport, collect_garbage
    from .snapshots.registry import Registry
    from .snapshots.version import ArtifactVersion, VerifyReport
    from .storage.backends import ObjectMeta
    from .surfaces.fs import RefstoreFileSystem

#: Public names imported on first use (module-level ``__getattr__``): fsspec, asyncio and tqdm are not
#: loaded by ``import refstore`` itself (benchmarks/case_import.py measures it).
_LAZY = {
    "Artifact": "snapshots.artifact",
    "ArtifactVersion": "snapshots.version",
    "GCReport": "snapshots.gc",
    "Manifest": "core.manifest",
    "ManifestDiff": "core.manifest",
    "ManifestEntry": "core.manifest",
    "ObjectMeta": "storage.backends",
    "RefstoreFileSystem": "surfaces.fs",
    "Registry": "snapshots.registry",
    "VerifyReport": "snapshots.version",
    "collect_garbage": "snapshots.gc",
    **dict.fromkeys(("Run", "finish", "init", "restore", "save"), "runs"),
}

__all__ = [
    "AliasedVersionError",
    "Artifact",
    "ArtifactNotFoundError",
    "ArtifactTypeError",
    "ArtifactVersion",
    "ConflictError",
    "CorruptBlobError",
    "DeletedVersionError",
    "GCReport",
    "IntegrityError",
    "InvalidNameError",
    "InvalidURLError",
    "LocalChangesError",
    "Manifest",
    "ManifestDiff",
    "ManifestEntry",
    "ManifestError",
    "ObjectChangedError",
    "ObjectMeta",
    "ObjectNotFoundError",
    "RefstoreError",
    "RefstoreFileSystem",
    "Registry",
    "Run",
    "RunError",
    "StorageAccessError",
    "StorageUnavailableError",
    "TooManyObjectsError",
    "UnsafePathError",
    "UnsupportedSchemeError",
    "VerifyReport",
    "__version__",
    "collect_garbage",
    "finish",
    "init",
    "restore",
    "save",
]


def __getattr__(name: str) -> Any:
    """``refstore.run`` (the current run or ``None``, looked up on each access) and the public names of
    :data:`_LAZY`, imported on first use so that ``import refstore`` stays light."""
    import importlib

    if name == "run":
        return importlib.import_module(".runs", __name__).current_run()
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    return value


def __dir__() -> list[str]:
    """The public names only: not submodules, imports or helpers."""
    return sorted({*__all__, "run"})
