"""refstore: immutable, versioned snapshots of data anywhere fsspec reaches, without copying it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._exceptions import (
    ArtifactNotFoundError,
    ArtifactTypeError,
    ConflictError,
    CorruptBlobError,
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
from ._version import __version__

if TYPE_CHECKING:
    from .artifact import Artifact
    from .backends import ObjectMeta
    from .fs import RefstoreFileSystem
    from .gc import GCReport, collect_garbage
    from .manifest import Manifest, ManifestDiff, ManifestEntry
    from .registry import Registry
    from .runs import Run, finish, init, restore, save
    from .version import ArtifactVersion, VerifyReport

#: Public names imported on first use (module-level ``__getattr__``): fsspec, asyncio and tqdm are not
#: loaded by ``import refstore`` itself (benchmarks/case_import.py measures it).
_LAZY = {
    "Artifact": "artifact",
    "ArtifactVersion": "version",
    "GCReport": "gc",
    "Manifest": "manifest",
    "ManifestDiff": "manifest",
    "ManifestEntry": "manifest",
    "ObjectMeta": "backends",
    "RefstoreFileSystem": "fs",
    "Registry": "registry",
    "VerifyReport": "version",
    "collect_garbage": "gc",
    **dict.fromkeys(("Run", "finish", "init", "restore", "save"), "runs"),
}

__all__ = [
    "Artifact",
    "ArtifactNotFoundError",
    "ArtifactTypeError",
    "ArtifactVersion",
    "ConflictError",
    "CorruptBlobError",
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
