"""Run records in the registry: the run itself and each synced state of each file, sealed like versions."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..core.exceptions import ManifestError
from ..core.names import check_logical_path
from ..core.records import seal, unseal, unseal_as
from .code_state import CodeState

RUN_FORMAT = "refstore.run/1"
FILE_STATE_FORMAT = "refstore.runfile/1"


@dataclass(frozen=True, slots=True)
class RunRecord:
    """What ``runs/<project>/<id>/run.json`` says; ``state`` is ``running``, ``finished``, ``failed`` or
    ``crashed`` (see :mod:`refstore.runs.status`)."""

    project: str
    id: str
    name: str
    created_at: str
    state: str = "running"
    finished_at: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    code: CodeState | None = None
    #: ``Type: message`` of the exception a ``failed`` run ended on (credentials removed).
    error: str | None = None

    @property
    def path(self) -> str:
        return f"{self.project}/{self.id}"

    def to_bytes(self) -> bytes:
        body = asdict(self)
        body["code"] = self.code.to_json() if self.code else None
        if self.error is None:
            del body["error"]  # a record without an error reads as before
        return seal({"format": RUN_FORMAT, **body})

    @classmethod
    def from_bytes(cls, data: bytes, source: str) -> RunRecord:
        body = unseal(data, source, RUN_FORMAT)
        body.pop("format")
        code = body.pop("code", None)
        try:
            record = cls(**body, code=CodeState.from_json(code) if code else None)
        except TypeError as exc:
            raise ManifestError(f"{source}: malformed run record ({exc})") from None
        texts = (record.project, record.id, record.name, record.created_at, record.state)
        optional = (record.finished_at, record.error)
        if not (
            all(isinstance(t, str) for t in texts)
            and all(t is None or isinstance(t, str) for t in optional)
            and isinstance(record.config, dict)
        ):
            raise ManifestError(f"{source}: malformed run record")
        return record


@dataclass(frozen=True, slots=True)
class FileState:
    """One synced state of a run file: ``runs/<project>/<id>/files/<quoted path>/<state>.json``.

    The bytes are in ``runs/<project>/<id>/blobs/<hex of digest>``, uploaded before this record is written.
    """

    path: str
    state: int
    digest: str
    size: int
    policy: str
    synced_at: str

    def to_bytes(self) -> bytes:
        return seal({"format": FILE_STATE_FORMAT, **asdict(self)})

    @classmethod
    def from_bytes(cls, data: bytes, source: str) -> FileState:
        record = unseal_as(cls, data, source, FILE_STATE_FORMAT, "file state")
        check_logical_path(record.path)
        numbers_ok = all(type(n) is int and n >= 0 for n in (record.state, record.size))
        texts_ok = all(isinstance(t, str) for t in (record.digest, record.policy, record.synced_at))
        if not (numbers_ok and texts_ok and ":" in record.digest):
            raise ManifestError(f"{source}: malformed file state")
        return record
