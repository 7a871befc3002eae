"""Run records in the registry: the run itself, sealed like versions; each synced state of each file
(:class:`FileState`) is a record of :mod:`refstore.core.records`, where gc reads it too."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..core.exceptions import ManifestError
from ..core.records import FileState as FileState  # where the runs code imports it from
from ..core.records import seal, unseal
from .code_state import CodeState

RUN_FORMAT = "refstore.run/1"


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
