"""The sync-to-async bridge: a call that fails leaves no thread of its own still writing files."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from refstore.core.loop import finish_in_thread, gather_limited, run_sync


def test_a_failed_call_returns_only_after_its_threads_finished_writing(tmp_path: Path) -> None:
    """One job fails while another's thread is writing (as a download's does when it places a file): the
    call raises only once that thread is done, so nothing is written after it returned."""
    started = threading.Event()

    def write_slowly() -> None:
        started.set()
        time.sleep(0.5)
        (tmp_path / "written").write_text("done")

    async def fail_once_writing() -> None:
        await asyncio.to_thread(started.wait)
        raise RuntimeError("a job failed")

    with pytest.raises(RuntimeError, match="a job failed"):
        run_sync(gather_limited, [finish_in_thread(write_slowly), fail_once_writing()], 2)
    assert (tmp_path / "written").read_text() == "done"
