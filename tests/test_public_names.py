"""``dir(refstore)`` lists the public names only, whatever submodules have been imported."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "imports",
    [
        "import refstore",
        "import refstore, refstore.snapshots.registry, refstore.surfaces.cli, refstore.snapshots.gc; "
        "refstore.Registry",
    ],
)
def test_dir_shows_only_the_public_names(imports: str) -> None:
    code = f"import json; {imports}; print(json.dumps([dir(refstore), refstore.__all__]))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    listed, public = json.loads(out)
    assert listed == sorted([*public, "run"])
    assert not {"registry", "cli", "gc", "annotations", "TYPE_CHECKING", "Any", "_LAZY"} & set(listed)
