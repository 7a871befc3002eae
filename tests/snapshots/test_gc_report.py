"""``gc`` says what in-flight logs protect and until when; the intent expiry can be set."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import refstore
from refstore.core.manifest import canonical_json
from refstore.snapshots.gc import collect_garbage, parse_duration
from refstore.storage.download import blob_path
from refstore.storage.hashing import hash_bytes
from refstore.surfaces.cli import main


def _cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def _registry() -> refstore.Registry:
    """The default registry ($REFSTORE_ROOT) with one version logged."""
    Path("kept.txt").write_text("referenced by v0")
    artifact = refstore.Artifact("kept")
    artifact.add_file("kept.txt")
    registry = refstore.Registry()
    registry.log(artifact)
    return registry


def _orphan_with_intent(registry: refstore.Registry, age: timedelta) -> tuple[str, datetime]:
    """An orphan blob, and the intent of a log started ``age`` ago that is about to reuse it."""
    data = b"about to be reused by a running log"
    blob = blob_path(hash_bytes(data))
    registry.store.create(blob, data)
    created = datetime.now(timezone.utc).replace(microsecond=0) - age
    body = {"format": "refstore.intent/1", "created_at": created.isoformat(), "paths": [blob, "manifests/x"]}
    registry.store.create("intents/running.json", canonical_json(body))
    return blob, created


def test_gc_reports_what_an_in_flight_log_protects_and_until_when() -> None:
    registry = _registry()
    blob, created = _orphan_with_intent(registry, timedelta(hours=2))
    until = (created + timedelta(days=7)).isoformat()
    result = _cli("gc")
    assert result.exit_code == 0, result.output
    started = created.isoformat()
    assert result.output.splitlines() == [
        f"in flight  intents/running.json: a log started {started} protects 2 paths until {until}",
        f"kept  {blob}  (only this in-flight log relies on it, until {until})",
        "log intents protect their paths for 7 days (REFSTORE_INTENT_TTL or gc --intent-ttl)",
        "dry run: 0 manifests and 0 blobs (0 B) unreferenced; --yes deletes them",
    ]
    (log,) = json.loads(_cli("gc", "-y", "--json").output)["in_flight"]
    assert log == {
        "intent": "intents/running.json",
        "created_at": created.isoformat(),
        "expires_at": until,
        "paths": [blob, "manifests/x"],
        "kept": [blob],
    }
    assert registry.store.exists(blob)


def test_the_intent_expiry_is_set_by_environment_option_or_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = _registry()
    blob, created = _orphan_with_intent(registry, timedelta(hours=2))
    assert collect_garbage(registry).in_flight[0].kept == [blob]  # 7 days by default
    assert collect_garbage(registry, intent_expiry=timedelta(minutes=30)).blobs == [blob]
    assert "protect their paths for 3 hours" in _cli("gc", "--intent-ttl", "3h").output
    assert f"would delete  {blob}" in _cli("gc", "--intent-ttl", "1h").output.splitlines()
    monkeypatch.setenv("REFSTORE_INTENT_TTL", "90m")
    report = collect_garbage(registry)
    assert (report.blobs, report.in_flight, report.expired_intents) == ([blob], [], ["intents/running.json"])
    dry = _cli("gc").output.splitlines()
    assert dry[:2] == [
        f"would delete  {blob}",
        f"would delete  intents/running.json  ({EXPIRED} 90 minutes: {CRASHED})",
    ]
    # an option or argument wins over the environment
    assert collect_garbage(registry, intent_expiry=timedelta(hours=3)).in_flight[0].expires_at == (
        created + timedelta(hours=3)
    )
    assert _cli("gc", "-y", "--intent-ttl", "1d").exit_code == 0 and registry.store.exists(blob)
    assert _cli("gc", "-y").exit_code == 0
    assert not registry.store.exists(blob) and not registry.store.exists("intents/running.json")


EXPIRED, CRASHED = "a log intent older than", "its log is taken as crashed"


def test_a_bad_expiry_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _registry()
    bad_option = _cli("gc", "--intent-ttl", "0")
    assert bad_option.exit_code == 2 and "--intent-ttl" in bad_option.output and "'0'" in bad_option.output
    monkeypatch.setenv("REFSTORE_INTENT_TTL", "soon")
    bad_env = _cli("gc")
    assert bad_env.exit_code == 1
    assert bad_env.output.strip().splitlines() == [
        "refstore: error: REFSTORE_INTENT_TTL: 'soon' is not a positive duration such as 7d, 36h, 90m or 3600"
    ]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("7d", 604800),
        ("36h", 129600),
        ("90m", 5400),
        ("600s", 600),
        ("3600", 3600),
        ("1w", 604800),
        ("1.5h", 5400),
    ],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)
