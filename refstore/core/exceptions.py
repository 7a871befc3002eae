"""The exception tree of refstore.

    RefstoreError
    ├── InvalidURLError (ValueError)
    │   ├── UnsupportedSchemeError
    │   └── InvalidNameError
    ├── ObjectNotFoundError (FileNotFoundError)
    ├── LocalChangesError (FileExistsError)
    ├── ObjectChangedError
    ├── TooManyObjectsError
    ├── ManifestError (ValueError)
    │   ├── IntegrityError
    │   │   └── CorruptBlobError (also ObjectChangedError)
    │   └── UnsafePathError
    ├── ArtifactNotFoundError (LookupError)
    │   └── DeletedVersionError
    ├── AliasedVersionError
    ├── ArtifactTypeError (ValueError)
    ├── ConflictError
    ├── StorageAccessError (PermissionError)
    ├── StorageUnavailableError (ConnectionError)
    └── RunError

Every message names the object, URL or name at fault, and never carries a credential.
"""

from __future__ import annotations


class RefstoreError(Exception):
    """Root of every error refstore raises."""


class InvalidURLError(RefstoreError, ValueError):
    """A URL or name that cannot be parsed."""


class UnsupportedSchemeError(InvalidURLError):
    """A URL scheme with no backend, or whose backend package is missing."""


class InvalidNameError(InvalidURLError):
    """An artifact name, alias or reference that breaks the naming rules."""


class ObjectNotFoundError(RefstoreError, FileNotFoundError):
    """A referenced object or local path does not exist."""


class LocalChangesError(RefstoreError, FileExistsError):
    """A download would replace local files whose bytes differ from the manifest (``overwrite=True``
    replaces them)."""


class ObjectChangedError(RefstoreError):
    """The source no longer matches the manifest and the pinned version cannot be fetched."""


class TooManyObjectsError(RefstoreError):
    """A reference would exceed ``max_objects``."""


class ManifestError(RefstoreError, ValueError):
    """A manifest or record that cannot be read."""


class IntegrityError(ManifestError):
    """Bytes, a manifest or a record that fail their digest."""


class CorruptBlobError(IntegrityError, ObjectChangedError):
    """A registry blob whose stored bytes do not hash to its name (moved to ``quarantine/``): an
    :class:`IntegrityError` of the registry, and the :class:`ObjectChangedError` reads of altered bytes
    raised before."""


class UnsafePathError(ManifestError):
    """A logical path that could escape a destination folder (``..``, absolute, backslash, NUL)."""


class ArtifactNotFoundError(RefstoreError, LookupError):
    """No such artifact, version or alias."""


class DeletedVersionError(ArtifactNotFoundError):
    """A version that was deleted (``Registry.delete``, retention, a TTL): it is no longer read."""


class AliasedVersionError(RefstoreError):
    """A delete refused because aliases other than ``latest`` point at the version (``force=True``
    removes them too); the message names them."""


class ArtifactTypeError(RefstoreError, ValueError):
    """A version whose ``type`` differs from the type of the artifact's earlier versions."""


class ConflictError(RefstoreError):
    """A concurrent writer won a race that cannot be retried."""


class StorageAccessError(RefstoreError, PermissionError):
    """Credentials are missing or were refused (on any backend); the message names the URL, the answer and
    what to set (environment variables or ``storage_options``), never a credential."""


class StorageUnavailableError(RefstoreError, ConnectionError):
    """Storage cannot be reached (refused connection, unknown host) or kept failing (resets, timeouts, 5xx
    answers, cut-off bodies) after bounded retries."""


class RunError(RefstoreError):
    """Run misuse: no current run, unknown run path, a file the run never saved."""
