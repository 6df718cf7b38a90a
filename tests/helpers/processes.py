"""Helpers for the command-line end-to-end tests: real subprocesses, real ports, real clients.

Every long-running process is started through :func:`started`, which kills it in a ``finally``
by the PID it started (never by name), so a failing assertion cannot leave a listener behind.
Ports are never guessed: processes bind port 0 and the tests read the port from the ready
lines the commands print, exactly as a script driving the emulator would.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

#: How long a command may take to print its ready line. Start-up is well under 2 s on a laptop;
#: the margin is for a loaded CI runner, and a hung process still fails the test in bounded time.
READY_TIMEOUT_S: Final = 20.0
#: How long a command may take to exit after a signal or on a start-up error.
EXIT_TIMEOUT_S: Final = 10.0

READY_LISTENER: Final = re.compile(
    r"^ready: (?P<listener>\S+) \((?P<mode>[^)]+)\) "
    r"https://localhost:(?P<port>\d+)/ -> pool (?P<pool>\S+)$"
)
READY_STUB: Final = re.compile(r"^ready: stub backend http://127\.0\.0\.1:(?P<port>\d+)/$")
STUB_LISTENING: Final = re.compile(r"^backend_stub listening on http://127\.0\.0\.1:(?P<port>\d+)$")

NO_CERT_TEXT: Final = "No required SSL certificate was sent"
BAD_CERT_TEXT: Final = "The SSL certificate error"


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    # The commands flush their ready lines themselves; this also unbuffers anything else they
    # print, so a failure message shows everything that was written before it.
    env["PYTHONUNBUFFERED"] = "1"
    return env


def command(module: str, *args: str) -> list[str]:
    """``python -m MODULE ARGS`` with this interpreter (``appgw-emulator`` is ``-m emulator``)."""
    return [sys.executable, "-m", module, *args]


def run_to_exit(
    args: Sequence[str], *, cwd: Path, module: str = "emulator", timeout: float = READY_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """Run a command that is expected to exit by itself; output captured as text."""
    return subprocess.run(
        command(module, *args),
        cwd=cwd,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class CliProcess:
    """A running command whose stdout and stderr are drained by threads into line lists.

    Draining in threads keeps a chatty process from blocking on a full pipe while a test waits
    for one particular line.
    """

    def __init__(self, args: Sequence[str], *, cwd: Path, module: str = "emulator") -> None:
        self.args = list(args)
        self.cwd = cwd
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self._changed = threading.Condition()
        self.popen = subprocess.Popen(
            command(module, *args),
            cwd=cwd,
            env=_environment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self._readers = [
            threading.Thread(target=self._drain, args=(stream, lines), daemon=True)
            for stream, lines in (
                (self.popen.stdout, self.stdout_lines),
                (self.popen.stderr, self.stderr_lines),
            )
        ]
        for reader in self._readers:
            reader.start()

    def _drain(self, stream: Any, lines: list[str]) -> None:
        for line in stream:
            with self._changed:
                lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def stdout(self) -> str:
        return "\n".join(self.stdout_lines)

    @property
    def stderr(self) -> str:
        return "\n".join(self.stderr_lines)

    def describe(self) -> str:
        """What the process printed so far, for assertion messages."""
        return (
            f"command: {' '.join(self.args)}\nexit code: {self.popen.poll()}\n"
            f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
        )

    def wait_for_stdout(
        self, pattern: re.Pattern[str], *, timeout: float = READY_TIMEOUT_S
    ) -> re.Match[str]:
        """The first stdout line matching ``pattern``; fails if the process exits or times out."""
        return self._wait_for(self.stdout_lines, "stdout", pattern, timeout)

    def wait_for_stderr(
        self, pattern: re.Pattern[str], *, timeout: float = READY_TIMEOUT_S
    ) -> re.Match[str]:
        """The first stderr line matching ``pattern`` (stdout and stderr are read by separate
        threads, so a line on one stream says nothing about the other having been read)."""
        return self._wait_for(self.stderr_lines, "stderr", pattern, timeout)

    def _wait_for(
        self, lines: list[str], name: str, pattern: re.Pattern[str], timeout: float
    ) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in lines[seen:]:
                    match = pattern.search(line)
                    if match is not None:
                        return match
                seen = len(lines)
                if self.popen.poll() is not None and not any(r.is_alive() for r in self._readers):
                    raise AssertionError(
                        f"process exited before printing {pattern.pattern!r} on {name}\n"
                        + self.describe()
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"no {name} line matching {pattern.pattern!r} within {timeout} s\n"
                        + self.describe()
                    )
                self._changed.wait(min(remaining, 0.2))

    def wait_exit(self, *, timeout: float = EXIT_TIMEOUT_S) -> int:
        """Wait for the exit code, then for the readers to collect the last output."""
        code = self.popen.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=timeout)
        return code

    def stop(
        self, signum: signal.Signals = signal.SIGTERM, *, timeout: float = EXIT_TIMEOUT_S
    ) -> int:
        """Send ``signum`` to this process and return its exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signum)
        return self.wait_exit(timeout=timeout)

    def kill(self) -> None:
        """Last resort in ``finally``: SIGKILL by PID if still running, then reap."""
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(timeout=EXIT_TIMEOUT_S)
        for stream in (self.popen.stdout, self.popen.stderr):
            if stream is not None:
                stream.close()


@contextmanager
def started(args: Sequence[str], *, cwd: Path, module: str = "emulator") -> Iterator[CliProcess]:
    """Start a command; it is always killed when the block ends, whatever happened inside."""
    process = CliProcess(args, cwd=cwd, module=module)
    try:
        yield process
    finally:
        process.kill()


# -- ready lines --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReadyListener:
    """One ``ready: <listener> (<mode>) https://localhost:PORT/ -> pool P`` line."""

    name: str
    mode: str
    port: int
    pool: str


def ready_listeners(lines: Sequence[str]) -> dict[str, ReadyListener]:
    """Every listener ready line in ``lines``, by listener name."""
    found: dict[str, ReadyListener] = {}
    for line in lines:
        match = READY_LISTENER.match(line)
        if match is not None:
            found[match["listener"]] = ReadyListener(
                match["listener"], match["mode"], int(match["port"]), match["pool"]
            )
    return found


def sha1_fingerprint(pem_file: Path) -> str:
    """SHA-1 of the certificate's DER, lowercase hex: how the stub reports what it received."""
    certificate = x509.load_pem_x509_certificate(pem_file.read_bytes())
    return hashlib.sha1(certificate.public_bytes(Encoding.DER)).hexdigest()
