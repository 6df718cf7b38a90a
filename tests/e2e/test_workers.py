"""``run --workers N``: N processes serve the same listening sockets, a dead one comes back, and
SIGTERM stops them all.

The quickstart template (Passthrough listener) is run as the README shows, with ``--workers 2``;
the stub backend answers. Workers are found as the children of the ``run`` process in /proc.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Final

import pytest

from tests.helpers.http import https_get
from tests.helpers.logs import assert_no_traceback
from tests.helpers.processes import READY_LISTENER, STUB_LISTENING, CliProcess, run_to_exit, started

QUICKSTART: Final = (
    Path(__file__).parents[1] / "fixtures" / "quickstart" / "deploymentTemplate.json"
)
#: How long a restarted worker may take to appear (a fork: milliseconds; margin for CI).
RESTART_TIMEOUT_S: Final = 10.0

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="finds the workers through /proc (Linux)"
)


def _children(pid: int) -> set[int]:
    """The live child processes of ``pid``."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry))
    return found


def _wait_for_children(
    pid: int, count: int, *, other_than: AbstractSet[int] = frozenset()
) -> set[int]:
    deadline = time.monotonic() + RESTART_TIMEOUT_S
    while time.monotonic() < deadline:
        children = _children(pid)
        if len(children) == count and not children & other_than:
            return children
        time.sleep(0.05)
    raise AssertionError(f"expected {count} workers of {pid}, found {_children(pid)}")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int]]:
    cwd = tmp_path_factory.mktemp("workers")
    init = run_to_exit(["certs", "init", "certs"], cwd=cwd)
    assert init.returncode == 0, init.stderr
    with started(["--port", "0"], cwd=cwd, module="backend_stub") as stub:
        yield cwd, int(stub.wait_for_stdout(STUB_LISTENING)["port"])


@pytest.fixture
def pool(workspace: tuple[Path, int]) -> Iterator[tuple[CliProcess, int]]:
    cwd, stub_port = workspace
    args = [
        "--log-level", "warning", "run",
        "--template-file", str(QUICKSTART),
        "--parameters", "@certs/deploymentParameters.json",
        "--backend", f"pool2=127.0.0.1:{stub_port}",
        "--listen", "444=0",
        "--workers", "2",
    ]  # fmt: skip
    with started(args, cwd=cwd) as process:
        ready = process.wait_for_stdout(READY_LISTENER)
        yield process, int(ready["port"])
        # SIGTERM, not the SIGKILL of `started`: the workers go with the parent either way
        # (test_killed_parent_takes_its_workers_with_it), but only SIGTERM drains them.
        process.stop(signal.SIGTERM)


def _get(cwd: Path, port: int) -> int:
    certs = cwd / "certs"
    reply = https_get(
        port,
        cafile=certs / "server-root-ca.pem",
        cert=certs / "client.pem",
        key=certs / "client.key",
    )
    return reply.status


def test_two_workers_serve_the_same_port(
    workspace: tuple[Path, int], pool: tuple[CliProcess, int]
) -> None:
    process, port = pool
    _wait_for_children(process.pid, 2)
    assert [_get(workspace[0], port) for _ in range(6)] == [200] * 6
    assert "serving from 2 worker processes" in process.stderr


def test_a_killed_worker_is_replaced_and_the_port_keeps_answering(
    workspace: tuple[Path, int], pool: tuple[CliProcess, int]
) -> None:
    process, port = pool
    first = _wait_for_children(process.pid, 2)
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    _wait_for_children(process.pid, 2, other_than={victim})
    assert [_get(workspace[0], port) for _ in range(4)] == [200] * 4
    assert "restarting it" in process.stderr


def test_sigterm_stops_every_worker_and_exits_zero(pool: tuple[CliProcess, int]) -> None:
    process, _port = pool
    workers = _wait_for_children(process.pid, 2)
    assert process.stop(signal.SIGTERM) == 0
    assert not any(_alive(pid) for pid in workers)
    assert_no_traceback(process.stderr)


def test_killed_parent_takes_its_workers_with_it(pool: tuple[CliProcess, int]) -> None:
    process, _port = pool
    workers = _wait_for_children(process.pid, 2)
    process.popen.kill()
    process.popen.wait()
    deadline = time.monotonic() + RESTART_TIMEOUT_S
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in workers)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_workers_must_be_a_sensible_count(workspace: tuple[Path, int]) -> None:
    cwd, _stub_port = workspace
    done = run_to_exit(["run", "--template-file", str(QUICKSTART), "--workers", "0"], cwd=cwd)
    assert done.returncode == 2
    assert "is not a worker count" in done.stderr
