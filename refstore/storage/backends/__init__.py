"""Backends by scheme, imported lazily by dotted name so ``import refstore`` loads no cloud client.

Adding a scheme is adding one module beside this file and one line to :data:`BACKENDS`.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

from ...core.exceptions import UnsupportedSchemeError
from ...core.meta import ObjectMeta
from ._base import Backend, BodyFile, ProgressHook, RecordsHook

__all__ = [
    "BACKENDS",
    "Backend",
    "BodyFile",
    "ObjectMeta",
    "ProgressHook",
    "RecordsHook",
    "backend_class",
    "is_client_error",
]

#: scheme -> (module:class, the extra of ``refstore`` that installs its client; "" for the core install)
BACKENDS: dict[str, tuple[str, str]] = {
    "s3": ("refstore.storage.backends.s3:S3Backend", "s3"),
    "s3a": ("refstore.storage.backends.s3:S3Backend", "s3"),
    "gs": ("refstore.storage.backends.gcs:GCSBackend", "gcs"),
    "gcs": ("refstore.storage.backends.gcs:GCSBackend", "gcs"),
    "az": ("refstore.storage.backends.azure:AzureBackend", "azure"),
    "abfs": ("refstore.storage.backends.azure:AzureBackend", "azure"),
    "abfss": ("refstore.storage.backends.azure:AzureBackend", "azure"),
    "http": ("refstore.storage.backends.http:HTTPBackend", ""),
    "https": ("refstore.storage.backends.http:HTTPBackend", ""),
    "file": ("refstore.storage.backends.local:LocalBackend", ""),
}

#: extra -> the fsspec implementation it installs
_CLIENTS = {"s3": "s3fs", "gcs": "gcsfs", "azure": "adlfs"}

#: Top-level packages of the storage clients: an exception of theirs that reaches the command line is a
#: storage failure told in one line, not a bug.
_CLIENT_PACKAGES = frozenset(
    {"aiobotocore", "aiohttp", "adlfs", "azure", "botocore", "fsspec", "gcsfs", "google", "obstore", "s3fs"}
)


def backend_class(scheme: str) -> type[Backend]:
    """The backend class for ``scheme``; :class:`UnsupportedSchemeError` names the extra to install."""
    try:
        target, extra = BACKENDS[scheme]
    except KeyError:
        known = ", ".join(sorted(BACKENDS))
        raise UnsupportedSchemeError(f"{scheme}://: no backend for this scheme (known: {known})") from None
    module_name, _, class_name = target.partition(":")
    try:
        if extra and not _installed(_CLIENTS[extra]):  # some backends import their client on first use
            raise ModuleNotFoundError(f"No module named {_CLIENTS[extra]!r}", name=_CLIENTS[extra])
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = (exc.name or "").split(".")[0]
        if not extra or missing in ("", "refstore"):
            raise
        raise UnsupportedSchemeError(
            f"{scheme}://: this backend needs the package {missing!r}, which is not installed: "
            f"pip install 'refstore[{extra}]'"
        ) from exc
    cls: type[Backend] = getattr(module, class_name)
    return cls


def _installed(package: str) -> bool:
    """Whether ``package`` can be imported, without importing it."""
    try:
        return package in sys.modules or importlib.util.find_spec(package) is not None
    except ImportError:
        return False


def is_client_error(exc: BaseException) -> bool:
    """Whether ``exc`` comes from a storage client library (botocore, aiohttp, the Azure SDK, ...)."""
    return any(cls.__module__.split(".")[0] in _CLIENT_PACKAGES for cls in type(exc).__mro__)
