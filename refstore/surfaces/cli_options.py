"""Options every ``refstore`` command accepts before or after its name, and completion of artifact names.

``refstore --root X ls`` and ``refstore ls --root X`` mean the same: :func:`global_options` adds ``--root``,
``--json``, ``-y/--yes`` and ``--debug`` to the main group and to every subcommand. Each stores its value in
``ctx.obj`` (keys ``root``, ``json``, ``yes``, ``debug``); the group sets every key, a subcommand only the
options it was given, so a value after the subcommand wins over one before it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:  # imported when a completion runs: `refstore --help` stays quick
    from click.shell_completion import CompletionItem

F = TypeVar("F", bound=Callable[..., Any])

#: ``ctx.obj`` before any option is seen.
DEFAULTS: dict[str, Any] = {"root": None, "json": False, "yes": False, "debug": False}


def settings(ctx: click.Context) -> dict[str, Any]:
    """The global settings of this invocation (``ctx.obj``), created with :data:`DEFAULTS` when missing."""
    obj = ctx.ensure_object(dict)
    for key, value in DEFAULTS.items():
        obj.setdefault(key, value)
    return obj


def _store(key: str, *, group: bool) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        given = ctx.get_parameter_source(param.name or key) not in (None, click.core.ParameterSource.DEFAULT)
        if group or given:
            settings(ctx)[key] = value

    return callback


def global_options(*, group: bool = False) -> Callable[[F], F]:
    """Add ``--root``, ``--json``, ``-y/--yes`` and ``--debug`` to a command (``group=True``: the main group,
    where ``--root`` also reads ``$REFSTORE_ROOT``); their values go to :func:`settings`, not to arguments."""

    def option(*decls: str, **attrs: Any) -> Callable[[F], F]:
        key = decls[-1].lstrip("-")
        return click.option(*decls, expose_value=False, callback=_store(key, group=group), **attrs)

    def decorate(function: F) -> F:
        for add in reversed(
            [
                option(
                    "--root",
                    envvar="REFSTORE_ROOT" if group else None,
                    metavar="URL",
                    help="Registry URL (default $REFSTORE_ROOT, else the nearest .refstore).",
                ),
                option("--json", is_flag=True, help="Machine-readable output."),
                option("-y", "--yes", is_flag=True, help="Answer yes to every question (gc: delete)."),
                option("--debug", is_flag=True, help="Show the traceback of an error."),
            ]
        ):
            function = add(function)
        return function

    return decorate


def complete_ref(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Shell completion of artifact names, and of ``NAME:`` versions and aliases; never raises or prints."""
    from click.shell_completion import CompletionItem

    try:
        return [CompletionItem(c) for c in _candidates(ctx, incomplete) if c.startswith(incomplete)]
    except Exception:  # a completion that fails offers nothing: a traceback would garble the shell
        return []


def _candidates(ctx: click.Context, incomplete: str) -> list[str]:
    import contextlib
    import io
    import warnings

    quiet = contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO())
    with warnings.catch_warnings(), quiet[0], quiet[1]:
        warnings.simplefilter("ignore")
        registry = registry_of(ctx)  # the registry the command would use
        if ":" not in incomplete:
            return list(registry.artifacts())
        name = incomplete.split(":", 1)[0]
        versions = registry.versions(name)
        aliases = {a for v in versions for a in v.aliases}
        return [v.qualified_name for v in versions] + [f"{name}:{a}" for a in sorted(aliases)]


def registry_of(ctx: click.Context, *, create: bool = False) -> Any:
    """The registry at ``--root`` / ``$REFSTORE_ROOT``, else the nearest ``.refstore`` in the current folder
    or its parents (else ``./.refstore``). Unless ``create`` (``log``), one that does not exist is an error
    naming it: reading a typo'd root never looks like an empty registry."""
    from ..core.exceptions import ObjectNotFoundError
    from ..snapshots.registry import Registry

    registry = Registry(ctx.obj["root"])
    if not create and not registry.exists():
        if ctx.obj["root"] is None:
            raise ObjectNotFoundError(
                f"no registry: no .refstore in {os.getcwd()} or its parents; `refstore init` makes one "
                "here, or pass --root URL (or set REFSTORE_ROOT)"
            )
        raise ObjectNotFoundError(
            f"{registry.root}: no registry there; `refstore init {ctx.obj['root']}` makes one"
        )
    return registry
