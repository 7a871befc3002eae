"""Names, aliases, references and logical paths: what is accepted and what is refused."""

from __future__ import annotations

import pytest

import refstore
from refstore.core.names import check_alias, check_logical_path, check_name, parse_ref


@pytest.mark.parametrize("name", ["mnist", "a", "A-1.b_c", "x" * 128])
def test_valid_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "-a", ".a", "a/b", "a:b", "a b", "x" * 129, "ü"])
def test_invalid_names_raise_invalid_name_error(name: str) -> None:
    with pytest.raises(refstore.InvalidNameError, match="artifact name"):
        check_name(name)


@pytest.mark.parametrize("alias", ["latest", "v0", "v12"])
def test_reserved_aliases(alias: str) -> None:
    with pytest.raises(refstore.InvalidNameError, match="reserved"):
        check_alias(alias)


def test_parse_ref() -> None:
    assert parse_ref("mnist") == ("mnist", "latest")
    assert parse_ref("mnist:v3") == ("mnist", "v3")
    assert parse_ref("mnist:prod") == ("mnist", "prod")
    with pytest.raises(refstore.InvalidNameError):
        parse_ref("mnist:")


@pytest.mark.parametrize("path", ["a.txt", "sub/b.bin", "a/b/c", "..a", "a..b/c"])
def test_safe_logical_paths(path: str) -> None:
    assert check_logical_path(path) == path


@pytest.mark.parametrize(
    "path",
    ["", "/etc/passwd", "../x", "a/../../x", "a/./b", "a//b", "a\\b", "a\x00b", "C:/x", "a/", "x" * 1025],
)
def test_unsafe_logical_paths_raise(path: str) -> None:
    with pytest.raises(refstore.UnsafePathError):
        check_logical_path(path)
