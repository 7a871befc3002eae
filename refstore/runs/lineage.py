"""Lineage: artifact versions and runs as one directed graph, ``used version -> run -> logged version``.

A version names the run that logged it (``created_by`` in its record) and the runs that used it
(``artifacts/<name>/lineage/``); a run keeps no list of its own. :class:`LineageIndex` reads every version
of every artifact once and answers both ways; :func:`lineage` walks it from one node to a depth. Deleted
versions stay in it (``LineageIndex.deleted`` names them): what a run used or logged is part of its history.
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from ..snapshots.registry import Registry

VERSION: Literal["version"] = "version"
RUN: Literal["run"] = "run"


@dataclass(frozen=True, slots=True, order=True)
class Node:
    """An artifact version (``key`` is ``name:v<N>``) or a run (``key`` is ``project/id``)."""

    kind: Literal["version", "run"]
    key: str

    @property
    def id(self) -> str:
        """Unique across kinds: ``version:mnist:v3``, ``run:project/id``."""
        return f"{self.kind}:{self.key}"


#: An edge ``(source, target)``: a used version to the run, or a run to a version it logged.
Edge = tuple[Node, Node]


@dataclass(frozen=True, slots=True)
class Lineage:
    """The nodes within ``depth`` edges of ``start`` (each with its distance) and the edges between them."""

    start: Node
    depth: int
    distances: dict[Node, int]
    edges: list[Edge]
    #: True when the walk stopped at its node limit before reaching ``depth``.
    truncated: bool = False


class LineageIndex:
    """What every run used and logged, and who logged and used every version, read once from a registry."""

    def __init__(self, registry: Registry) -> None:
        self.created_by: dict[str, str] = {}
        self.users: dict[str, list[str]] = {}
        self.logged: defaultdict[str, list[str]] = defaultdict(list)
        self.used: defaultdict[str, list[str]] = defaultdict(list)
        #: The versions that are deleted (``name:vN``).
        self.deleted: set[str] = set()
        for name in registry.artifacts(deleted=True):
            for version in registry.versions(name, deleted=True):
                key = version.qualified_name
                if version.deleted:
                    self.deleted.add(key)
                if version.created_by:
                    self.created_by[key] = version.created_by
                    self.logged[version.created_by].append(key)
                self.users[key] = version.used_by()
                for run_path in self.users[key]:
                    self.used[run_path].append(key)

    def edges_of(self, node: Node) -> list[Edge]:
        """Every edge that starts or ends at ``node``."""
        if node.kind == VERSION:
            made = self.created_by.get(node.key)
            edges = [(Node(RUN, made), node)] if made else []
            return edges + [(node, Node(RUN, run)) for run in self.users.get(node.key, [])]
        return [(Node(VERSION, v), node) for v in self.used.get(node.key, [])] + [
            (node, Node(VERSION, v)) for v in self.logged.get(node.key, [])
        ]


def lineage(index: LineageIndex, start: Node, depth: int, *, limit: int = 500) -> Lineage:
    """The graph around ``start``, breadth first to ``depth`` edges, at most ``limit`` nodes."""
    distances = {start: 0}
    edges: set[Edge] = set()
    queue = deque([start])
    truncated = False
    while queue:
        node = queue.popleft()
        if distances[node] >= depth:
            continue
        for edge in index.edges_of(node):
            other = edge[1] if edge[0] == node else edge[0]
            if other not in distances:
                if len(distances) >= limit:
                    truncated = True
                    continue
                distances[other] = distances[node] + 1
                queue.append(other)
            edges.add(edge)
    return Lineage(start, depth, distances, sorted(edges), truncated)
