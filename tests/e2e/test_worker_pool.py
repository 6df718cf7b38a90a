"""The ``--workers`` supervisor's failure paths (:class:`emulator.runtime.workers.WorkerPool`).

The CLI checks a configuration in the supervisor before any worker sees it, so a new
generation whose workers die before they serve, or workers that die as soon as they start,
cannot be provoked through ``run``. Here a small program drives the pool with a serving
function that fails on purpose, in its own process (the pool forks and takes over signals):
the real gateway, real sockets and real TLS otherwise.
"""

from __future__ import annotations

import signal
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

from emulator.arm.demo_template import write_demo_template
from emulator.pki.demo import write_demo_pki
from tests.helpers.http import https_get
from tests.helpers.logs import assert_no_traceback
from tests.helpers.pki import write_demo_parameters
from tests.helpers.ports import free_ports
from tests.helpers.processes import (
    READY_LISTENER,
    STUB_LISTENING,
    CliProcess,
    started,
)

TIMEOUT_S: Final = 30.0

#: Serves generation 1 normally; MODE decides what later generations (or all) do.
PROGRAM: Final = textwrap.dedent(
    """
    import signal, sys
    import trio
    from emulator.runtime.health import bind_plain
    from emulator.runtime.plain_health import health_url
    from emulator.runtime.workers import WorkerGateway, WorkerPool

    template, parameters, mode = sys.argv[1:4]

    def load():
        return WorkerGateway.from_template(template, [f"@{parameters}"])

    first = load()
    sockets = first.bind_in_parent()

    def serve(gateway, index, ready):
        if mode == "crash" or (mode == "bad-reload" and gateway is not first):
            return 3  # dies before it serves
        async def main():
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async with trio.open_nursery() as nursery:
                    await nursery.start(gateway.serve)
                    ready()
                    async for _ in signals:
                        await gateway.drain(1.0)
                        nursery.cancel_scope.cancel()
                        break
        trio.run(main)
        return 0

    def on_ready(gateway, reloaded):
        for name in gateway.listener_names:
            print(f"ready: {name} (x) {gateway.url(name)} -> pool p", flush=True)

    def on_error(problem):
        print(f"error: {problem}", file=sys.stderr, flush=True)

    health = bind_plain("127.0.0.1", 0)
    print(f"health {health_url(health)}", flush=True)
    pool = WorkerPool(2, first, sockets, serve, load=load, on_ready=on_ready,
                      on_error=on_error, health=health)
    sys.exit(pool.run())
    """
)


@dataclass(frozen=True)
class Files:
    cwd: Path
    template: Path
    parameters: Path
    cafile: Path
    passthrough: int

    def pool(self, mode: str) -> list[str]:
        """``python -m pool_program ...`` (the program is a module in ``cwd``)."""
        return [str(self.template), str(self.parameters), mode]


@pytest.fixture
def files(tmp_path: Path) -> Iterator[Files]:
    pki = write_demo_pki(tmp_path / "certs")
    parameters = tmp_path / "parameters.json"
    write_demo_parameters(pki, parameters)
    (tmp_path / "pool_program.py").write_text(PROGRAM)
    strict, passthrough = free_ports(2)
    with started(["--port", "0"], cwd=tmp_path, module="backend_stub") as stub:
        stub_port = int(stub.wait_for_stdout(STUB_LISTENING)["port"])
        template = write_demo_template(
            tmp_path,
            strict_port=strict,
            passthrough_port=passthrough,
            backend_host="127.0.0.1",
            backend_port=stub_port,
        )
        yield Files(
            tmp_path, template, parameters, tmp_path / "certs" / "server-root-ca.pem", passthrough
        )


def _wait_for(process: CliProcess, text: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while text not in process.stderr:
        assert time.monotonic() < deadline, process.describe()
        time.sleep(0.05)


def test_a_new_generation_that_dies_before_serving_is_abandoned_and_the_old_one_serves(
    files: Files,
) -> None:
    with started(files.pool("bad-reload"), cwd=files.cwd, module="pool_program") as pool:
        pool.wait_for_stdout(READY_LISTENER)
        assert https_get(files.passthrough, cafile=files.cafile).status == 200
        pool.popen.send_signal(signal.SIGHUP)
        _wait_for(pool, "reload abandoned: worker")
        assert "[EmulatorReloadFailed]" in pool.stderr
        assert "the previous configuration keeps serving" in pool.stderr
        assert https_get(files.passthrough, cafile=files.cafile).status == 200  # generation 1
        assert pool.stop() == 0
        assert_no_traceback(pool.stderr)


def test_workers_that_die_as_they_start_stop_the_pool_with_status_1(files: Files) -> None:
    with started(files.pool("crash"), cwd=files.cwd, module="pool_program") as pool:
        assert pool.wait_exit(timeout=TIMEOUT_S) == 1
        assert "times right after starting (last exit status 3); stopping all workers" in (
            pool.stderr
        )
        assert not any(line.startswith("ready:") for line in pool.stdout_lines)
        assert_no_traceback(pool.stderr)
