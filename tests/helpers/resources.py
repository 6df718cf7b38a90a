"""The test process's own resources: file descriptors, and waiting on state without an event."""

from __future__ import annotations

import resource
from collections.abc import Callable
from pathlib import Path

import pytest
import trio


def raise_fd_limit(wanted: int) -> None:
    """Raise RLIMIT_NOFILE's soft limit to ``wanted`` (at most the hard limit), or skip."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"needs {wanted} file descriptors; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


async def wait_until(condition: Callable[[], bool], *, timeout_s: float = 5.0) -> None:
    """Wait until ``condition()`` holds (checked every 10 ms); fail after ``timeout_s``.

    For state the gateway changes without an event to wait on (open connection counts).
    """
    with trio.fail_after(timeout_s):
        while not condition():  # noqa: ASYNC110 - polls state that has no event
            await trio.sleep(0.01)


def open_fds() -> int:
    """File descriptors this process has open (Linux /proc)."""
    return len(list(Path("/proc/self/fd").iterdir()))
