"""``python -m refstore.surfaces.demo``: the main job on the embedded default registry, end to end.

Snapshots a local folder into ``./.refstore`` (copies, since a local folder keeps no old versions), changes
a file, logs v1, downloads v0 and shows that the old bytes came back. Uses a scratch folder
(``./refstore-demo`` unless one is given) and no cloud account.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from ..snapshots.artifact import Artifact
from ..snapshots.registry import Registry
from ..storage.store import DEFAULT_ROOT


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    work = Path(args[0] if args else "refstore-demo").absolute()
    shutil.rmtree(work, ignore_errors=True)
    data = work / "data"
    (data / "labels").mkdir(parents=True)
    (data / "train.csv").write_text("id,label\n1,cat\n2,dog\n")
    (data / "labels" / "names.txt").write_text("cat\ndog\n")
    os.chdir(work)
    # $REFSTORE_ROOT, else the scratch folder's own ./.refstore: never a registry found in a parent folder
    registry = Registry(os.environ.get("REFSTORE_ROOT") or DEFAULT_ROOT)
    print(f"registry: {registry.root}")

    first = Artifact("pets", description="demo data set")
    first.add_dir(data)
    v0 = registry.log(first)
    print(f"logged {v0.qualified_name}: {len(v0.manifest)} files, digest {v0.digest[:23]}...")

    (data / "train.csv").write_text("id,label\n1,cat\n2,dog\n3,bird\n")
    second = Artifact("pets")
    second.add_dir(data)
    v1 = registry.log(second, aliases=["candidate"])
    print(f"changed train.csv, logged {v1.qualified_name} (aliases {', '.join(v1.aliases)})")
    print(f"diff v0 -> v1: {registry.diff('pets:v0', 'pets:v1').to_json()}")

    target = registry.get("pets:v0").download()
    old = (target / "train.csv").read_text()
    print(f"downloaded pets:v0 to {target}; train.csv holds:\n{old}", end="")
    ok = old == "id,label\n1,cat\n2,dog\n"
    print("OK: the old bytes came back" if ok else "FAILED: the bytes differ")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
