"""Backends by scheme, imported lazily by dotted name so ``import refstore`` loads no cloud client.

Adding a scheme is adding one module beside this file and one line to :data:`BACKENDS`.
"""

from __future__ import annotations

import importlib

from .._exceptions import UnsupportedSchemeError
from ._base import Backend, BodyFile, ObjectMeta, ProgressHook, RecordsHook

__all__ = ["BACKENDS", "Backend", "BodyFile", "ObjectMeta", "ProgressHook", "RecordsHook", "backend_class"]

#: scheme -> (module:class, the package a user installs for it)
BACKENDS: dict[str, tuple[str, str]] = {
    "s3": ("refstore.backends.s3:S3Backend", "s3fs"),
    "s3a": ("refstore.backends.s3:S3Backend", "s3fs"),
    "gs": ("refstore.backends.gcs:GCSBackend", "gcsfs"),
    "gcs": ("refstore.backends.gcs:GCSBackend", "gcsfs"),
    "az": ("refstore.backends.azure:AzureBackend", "adlfs"),
    "abfs": ("refstore.backends.azure:AzureBackend", "adlfs"),
    "abfss": ("refstore.backends.azure:AzureBackend", "adlfs"),
    "http": ("refstore.backends.http:HTTPBackend", "aiohttp"),
    "https": ("refstore.backends.http:HTTPBackend", "aiohttp"),
    "file": ("refstore.backends.local:LocalBackend", "fsspec"),
}


def backend_class(scheme: str) -> type[Backend]:
    """The backend class for ``scheme``; :class:`UnsupportedSchemeError` names what to install."""
    try:
        target, package = BACKENDS[scheme]
    except KeyError:
        known = ", ".join(sorted(BACKENDS))
        raise UnsupportedSchemeError(f"{scheme}://: no backend for this scheme (known: {known})") from None
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UnsupportedSchemeError(
            f"{scheme}://: the backend needs the package {package!r}: pip install {package}"
        ) from exc
    cls: type[Backend] = getattr(module, class_name)
    return cls
