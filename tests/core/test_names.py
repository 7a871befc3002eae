"""Names, aliases, references and logical paths: what is accepted and what is refused."""

from __future__ import annotations

import pytest

import refstore
from refstore.core.names import check_alias, check_logical_path, check_name, join_logical_all, parse_ref
from refstore.core.refs import ref_of, refs_of


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
    safe = ["a.txt", "sub/b.bin"]  # the checks of many paths at once (listings) refuse it the same way
    with pytest.raises(refstore.UnsafePathError) as many:
        join_logical_all(None, [*safe, path])
    with pytest.raises(refstore.UnsafePathError) as one:
        check_logical_path(path)
    assert str(many.value) == str(one.value)


def test_many_logical_paths_at_once() -> None:
    assert join_logical_all(None, ["a", "b/c"]) == ["a", "b/c"]
    assert join_logical_all("top/", ["a", "b/c"]) == ["top/a", "top/b/c"]
    assert join_logical_all(None, []) == []
    with pytest.raises(refstore.UnsafePathError, match="longer than 1024"):
        join_logical_all("p" * 1000, ["x" * 30])


def test_refs_of_many_urls_escape_as_one_by_one() -> None:
    urls = ["s3://b/a.txt", "s3://b/odd?#%.txt", "file:///tmp/x?y"]
    assert refs_of(urls) == [ref_of(u) for u in urls] != urls
    assert refs_of(urls[:1]) == urls[:1]
