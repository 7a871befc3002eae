"""Property-based tests (hypothesis): URL parsing, logical-path validation, canonical manifest round trips."""

from __future__ import annotations

import os
import posixpath
import random
import re
import string

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

import refstore
from refstore.core.manifest import Manifest, ManifestEntry
from refstore.core.names import MAX_PATH_LENGTH, all_safe, check_logical_path, join_logical_all
from refstore.core.refs import ref_of
from refstore.storage.locations import resolve

SETTINGS = settings(
    max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
#: Manifests are costlier to draw: fewer examples, each with several entries.
MANIFEST_SETTINGS = settings(SETTINGS, max_examples=60)

# -- strategies ---------------------------------------------------------------------------------------------

#: Letters, digits, punctuation, spaces and a few non-ASCII characters: everything a segment may hold.
_SEGMENT_CHARS = st.sampled_from([*string.ascii_letters[:8], *string.digits[:3], *"-_.~ :@%+,;=é漢ß€😀"])
segment = st.text(_SEGMENT_CHARS, min_size=1, max_size=10).filter(lambda s: s not in (".", ".."))
logical_path = (
    st.lists(segment, min_size=1, max_size=5)
    .map("/".join)
    .filter(
        lambda p: (
            len(p) <= MAX_PATH_LENGTH
            and not (len(p) >= 2 and p[1] == ":" and p[0].isascii() and p[0].isalpha())
        )
    )
)
bucket = st.from_regex(r"[a-z0-9][a-z0-9-]{2,20}", fullmatch=True)
key_segment = st.text(string.ascii_letters + string.digits + "-_.~ =+", min_size=1, max_size=10).filter(
    lambda s: s not in (".", "..")
)
key = st.lists(key_segment, min_size=1, max_size=4).map("/".join)
secret = st.text(string.ascii_letters + string.digits, min_size=12, max_size=24).map(lambda s: f"Zq9{s}")
hexes = st.text("0123456789abcdef", min_size=32, max_size=32)


@st.composite
def entries(draw: st.DrawFn) -> list[ManifestEntry]:
    paths = draw(st.lists(logical_path, min_size=0, max_size=6, unique=True))
    paths = [p for p in paths if not any(q.startswith(p + "/") for q in paths)]
    made = []
    for path in paths:
        size = draw(st.integers(min_value=0, max_value=2**53))
        if draw(st.booleans()):  # a stored copy
            made.append(ManifestEntry(path, None, size, f"xxh3_128:{draw(hexes)}"))
            continue
        ref = ref_of(  # as snapshots make refs: a key's %, ? and # escaped
            f"s3://{draw(bucket)}/{draw(key)}/{path}"
            if draw(st.booleans())
            else f"s3://{draw(bucket)}/{draw(key)}"
        )
        etag = draw(st.one_of(st.none(), st.text(max_size=40)))
        digest = (
            f"etag:{etag}" if etag is not None else draw(st.sampled_from(["md5:", "crc32c:", "xxh3_128:"]))
        )
        if digest in ("md5:", "crc32c:", "xxh3_128:"):
            digest += draw(hexes)
        version_id = draw(st.one_of(st.none(), st.text(max_size=40)))
        made.append(ManifestEntry(path, ref, size, digest, etag, version_id))
    return made


# -- URL parsing ---------------------------------------------------------------------------------------------


@SETTINGS
@given(st.text(max_size=80))
def test_any_text_resolves_or_raises_invalid_url(text: str) -> None:
    try:
        location = resolve(text)
    except refstore.InvalidURLError:
        return
    assert location.url and "\x00" not in location.url


@SETTINGS
@given(st.sampled_from(["s3", "gs", "az"]), bucket, key, st.booleans())
def test_bucket_urls_round_trip(scheme: str, name: str, path: str, trailing_slash: bool) -> None:
    location = resolve(f"{scheme}://{name}/{path}" + ("/" if trailing_slash else ""))
    assert location.path == f"{name}/{path}"
    assert location.url == f"{scheme}://{name}/{path}"
    assert location.is_folder == trailing_slash
    assert resolve(location.url).path == location.path  # canonical URLs are fixed points


@SETTINGS
@given(st.lists(key_segment, min_size=1, max_size=4))
@example(["~"]).via("found by a CI run")
@example(["~", "data"])
def test_local_paths_become_absolute_file_urls(parts: list[str]) -> None:
    relative = "/".join(parts)
    assume(relative.strip())  # a blank string is refused as an empty URL
    location = resolve(relative)
    absolute = os.path.abspath(os.path.expanduser(relative))  # a leading "~" is the home folder
    assert location.path == absolute
    assert location.url == f"file://{absolute}"
    assert resolve(location.url).path == location.path


@SETTINGS
@given(st.sampled_from(["http", "https", "s3", "abfs"]), secret, key)
def test_credentials_in_urls_are_refused_and_never_echoed(scheme: str, password: str, path: str) -> None:
    with pytest.raises(refstore.InvalidURLError) as info:
        resolve(f"{scheme}://user:{password}@host-name/{path}")
    assert password not in str(info.value)


@SETTINGS
@given(
    st.sampled_from(
        ["X-Amz-Signature", "sig", "X-Goog-Signature", "token", "access_token", "api_key", "Signature"]
    ),
    secret,
    key,
)
def test_signed_query_strings_are_refused_and_never_echoed(param: str, value: str, path: str) -> None:
    for url in (
        f"https://example.org/{path}?a=1&{param}={value}",
        f"https://acct.blob.core.windows.net/c/{path}?{param}={value}",
    ):
        with pytest.raises(refstore.InvalidURLError) as info:
            resolve(url)
        assert value not in str(info.value)


# -- logical paths -------------------------------------------------------------------------------------------


@SETTINGS
@given(
    st.text(max_size=40)
    | st.lists(st.sampled_from(["a", "..", ".", "", "b\\c", "/", "\x00", "C:"])).map("/".join)
)
def test_logical_path_is_returned_unchanged_or_refused(path: str) -> None:
    try:
        checked = check_logical_path(path)
    except refstore.UnsafePathError:
        return
    assert checked == path
    segments = path.split("/")
    assert path and len(path) <= MAX_PATH_LENGTH and not path.startswith("/")
    assert "\\" not in path and all(ord(c) >= 32 and c != "\x7f" for c in path)
    assert not any(s in ("", ".", "..") for s in segments)
    root = "/download/root"
    assert posixpath.normpath(posixpath.join(root, path)).startswith(root + "/")


_PIECES = ["a", "..", ".", "", "b\\c", "/", "\x00", "\n", "\x7f", "C:", "é", "x:y", " "]


@SETTINGS
@given(
    st.lists(
        st.text(max_size=12)
        | st.lists(st.sampled_from(_PIECES), max_size=5).map("".join)
        | st.lists(st.sampled_from(_PIECES), max_size=4).map("/".join),
        max_size=5,
    )
)
@example(["ok", "a/./b"])
@example(["a/.."])
@example(["../a", "b"])
@example(["a", "a//b"])
@example(["a/"])
@example(["a", ""])
@example(["a", "C:x"])
@example(["a\nb"])
@example(["a", "x" * (MAX_PATH_LENGTH + 1)])
def test_many_paths_checked_at_once_are_refused_as_one_by_one(paths: list[str]) -> None:
    """A listing's paths are checked on their joined text (names.all_safe): it takes them exactly when
    each one alone would be taken, and otherwise the error is the first one's."""
    one_by_one: list[str] | Exception
    try:
        one_by_one = [check_logical_path(path) for path in paths]
    except refstore.UnsafePathError as exc:
        one_by_one = exc
    assert all_safe(paths) == (bool(paths) and isinstance(one_by_one, list))
    if isinstance(one_by_one, list):
        assert join_logical_all(None, paths) == paths
    else:
        with pytest.raises(refstore.UnsafePathError, match=re.escape(str(one_by_one))):
            join_logical_all(None, paths)


@SETTINGS
@given(logical_path)
def test_safe_logical_paths_are_accepted(path: str) -> None:
    assert check_logical_path(path) == path


@SETTINGS
@given(
    st.lists(segment, min_size=0, max_size=3),
    st.sampled_from(["..", ".", "", "a\\b", "x\x00y", "x\ny", "\x7f"]),
    st.lists(segment, min_size=0, max_size=3),
)
def test_one_bad_segment_anywhere_refuses_the_path(before: list[str], bad: str, after: list[str]) -> None:
    with pytest.raises(refstore.UnsafePathError):
        check_logical_path("/".join([*before, bad, *after]))


@SETTINGS
@given(logical_path)
def test_absolute_and_overlong_paths_are_refused(path: str) -> None:
    with pytest.raises(refstore.UnsafePathError):
        check_logical_path("/" + path)
    with pytest.raises(refstore.UnsafePathError):
        check_logical_path(path + "/" + "x" * MAX_PATH_LENGTH)


# -- manifests -----------------------------------------------------------------------------------------------


@MANIFEST_SETTINGS
@given(entries(), st.randoms(use_true_random=False))
def test_manifest_round_trips_through_canonical_bytes(items: list[ManifestEntry], rng: random.Random) -> None:
    manifest = Manifest.of(items)
    shuffled = list(items)
    rng.shuffle(shuffled)
    assert Manifest.of(shuffled).to_bytes() == manifest.to_bytes()
    back = Manifest.from_bytes(manifest.to_bytes(), expected_digest=manifest.digest)
    assert dict(back) == dict(manifest)
    assert back.to_bytes() == manifest.to_bytes()
    assert (back.digest, back.content_digest) == (manifest.digest, manifest.content_digest)


@MANIFEST_SETTINGS
@given(entries(), st.data())
def test_any_damage_to_manifest_bytes_is_detected(items: list[ManifestEntry], data: st.DataObject) -> None:
    manifest = Manifest.of(items)
    raw = bytearray(manifest.to_bytes())
    index = data.draw(st.integers(0, len(raw) - 1))
    raw[index] = data.draw(st.integers(0, 255).filter(lambda b: b != raw[index]))
    with pytest.raises(refstore.IntegrityError):
        Manifest.from_bytes(bytes(raw), expected_digest=manifest.digest)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(refstore.IntegrityError):
        Manifest.from_bytes(manifest.to_bytes()[:cut], expected_digest=manifest.digest)


@MANIFEST_SETTINGS
@given(entries(), st.data())
def test_damaged_bytes_without_a_digest_parse_or_raise_manifest_error(
    items: list[ManifestEntry], data: st.DataObject
) -> None:
    """Untrusted bytes never crash the reader with anything but ManifestError (e.g. TypeError, KeyError)."""
    raw = bytearray(Manifest.of(items).to_bytes())
    for _ in range(data.draw(st.integers(1, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    try:
        parsed = Manifest.from_bytes(bytes(raw))
    except refstore.ManifestError:
        return
    for path, entry in parsed.items():
        assert check_logical_path(path) == path == entry.path
