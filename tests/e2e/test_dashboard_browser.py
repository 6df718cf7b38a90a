"""The dashboard in a real headless Chromium (issue #11), driven over the Chrome DevTools Protocol.

``appgw-emulator up`` runs as a subprocess (PKI, stub backend, both listeners, dashboard on a free
port); Chromium loads the page; the test clicks "Try expired" with real mouse events, waits for
the two result cells and checks them (Strict 400, Passthrough 200 with PASSTHROUGH), presses Enter
on another Try button to show the controls work from the keyboard, then saves a screenshot: to
the test's temporary directory by default (a test run must not change tracked files), or where
``APPGW_DASHBOARD_SCREENSHOT`` says — ``APPGW_DASHBOARD_SCREENSHOT=docs/dashboard.png`` refreshes
the one the README shows.

The CDP client is the standard library only: ``http.client`` for the target list and a minimal
RFC 6455 websocket client over ``socket``. Skipped, with the reason, when Chromium is missing
(``.ci/run`` installs Debian's ``chromium`` package).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import pytest

from tests.helpers.processes import started

CHROMIUM: Final = os.environ.get("APPGW_CHROMIUM", "/usr/bin/chromium")
#: Where the screenshot goes; unset: the test's own temporary directory.
SCREENSHOT_ENV: Final = "APPGW_DASHBOARD_SCREENSHOT"
#: Chromium starts in about a second; the margin is for a loaded CI runner.
BROWSER_START_S: Final = 15.0
#: Bound of one CDP call and of one wait for the page.
CDP_TIMEOUT_S: Final = 10.0
#: The page's size in the screenshot (CSS pixels).
WINDOW: Final = (1280, 1900)
READY_DASHBOARD: Final = re.compile(r"^ready: dashboard (?P<url>http://\S+/)$")
_WS_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3

pytestmark = pytest.mark.skipif(
    not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)),
    reason=f"no Chromium at {CHROMIUM}: install Debian's chromium package (.ci/run does) or set "
    "APPGW_CHROMIUM",
)


# -- a minimal websocket client (RFC 6455), client side only ---------------------------------------


class WebSocket:
    """Text messages over one websocket; enough for CDP (no extensions, no compression)."""

    def __init__(self, url: str, *, timeout: float) -> None:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        self._sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16))
        self._sock.sendall(
            b"GET " + parts.path.encode() + b" HTTP/1.1\r\n"
            b"Host: " + f"{host}:{port}".encode() + b"\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self._sock.recv(4096)
            if not chunk:
                raise ConnectionError("the browser closed the websocket during the handshake")
            head += chunk
        head, self._buffer = head.split(b"\r\n\r\n", 1)
        accept = base64.b64encode(hashlib.sha1(key + _WS_GUID).digest())
        if not head.startswith(b"HTTP/1.1 101") or accept not in head:
            raise ConnectionError(f"websocket upgrade refused: {head[:200]!r}")

    def _exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionError("the browser closed the websocket")
            self._buffer += chunk
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        header = bytes([0x80 | opcode])
        size = len(payload)
        if size < 126:
            header += bytes([0x80 | size])
        elif size < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack("!H", size)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", size)
        mask = os.urandom(4)  # a client must mask every frame
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self._sock.sendall(header + mask + masked)

    def send(self, text: str) -> None:
        self._send_frame(0x1, text.encode("utf-8"))

    def receive(self) -> str:
        message = b""
        while True:
            first, second = self._exactly(2)
            size = second & 0x7F
            if size == 126:
                size = struct.unpack("!H", self._exactly(2))[0]
            elif size == 127:
                size = struct.unpack("!Q", self._exactly(8))[0]
            mask = self._exactly(4) if second & 0x80 else b""
            payload = self._exactly(size)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            opcode = first & 0x0F
            if opcode == 0x8:
                raise ConnectionError("the browser closed the websocket")
            if opcode == 0x9:
                self._send_frame(0xA, payload)
                continue
            if opcode in (0x0, 0x1):
                message += payload
                if first & 0x80:
                    return message.decode("utf-8")

    def close(self) -> None:
        self._sock.close()


class Cdp:
    """Commands to one page target; events that arrive in between are ignored."""

    def __init__(self, socket_: WebSocket) -> None:
        self._ws = socket_
        self._next_id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        self._ws.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.receive())
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message["result"]
                return result

    def evaluate(self, expression: str) -> Any:
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, *, timeout: float = CDP_TIMEOUT_S) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"still false after {timeout} s: {expression}")
            time.sleep(0.05)

    def click(self, selector: str) -> None:
        """A real mouse click (press and release) at the centre of the element."""
        box = self.wait_for(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " if (!e) return null; e.scrollIntoView({block: 'center'});"
            " const r = e.getBoundingClientRect();"
            " return {x: r.x + r.width / 2, y: r.y + r.height / 2}; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.call(
                "Input.dispatchMouseEvent",
                type=kind,
                x=box["x"],
                y=box["y"],
                button="left",
                clickCount=1,
            )

    def press_enter(self) -> None:
        for kind in ("keyDown", "keyUp"):
            self.call(
                "Input.dispatchKeyEvent",
                type=kind,
                key="Enter",
                code="Enter",
                windowsVirtualKeyCode=13,
                text="\r" if kind == "keyDown" else "",
            )


# -- the browser -----------------------------------------------------------------------------------


def _debugging_port(profile: Path, browser: subprocess.Popen[bytes]) -> int:
    """Chromium writes its DevTools port to ``DevToolsActivePort`` once it listens."""
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + BROWSER_START_S
    while time.monotonic() < deadline:
        if browser.poll() is not None:
            raise AssertionError(f"chromium exited with {browser.returncode}")
        if marker.is_file():
            lines = marker.read_text().splitlines()
            if lines and lines[0].isdigit():
                return int(lines[0])
        time.sleep(0.05)
    raise AssertionError(f"chromium did not start within {BROWSER_START_S} s")


def _page_socket(port: int) -> str:
    deadline = time.monotonic() + BROWSER_START_S
    while True:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CDP_TIMEOUT_S)
        with closing(conn):
            conn.request("GET", "/json/list")
            targets = json.loads(conn.getresponse().read())
        pages = [t for t in targets if t.get("type") == "page" and "webSocketDebuggerUrl" in t]
        if pages:
            url: str = pages[0]["webSocketDebuggerUrl"]
            return url
        if time.monotonic() > deadline:
            raise AssertionError(f"no page target in {targets}")
        time.sleep(0.05)


@contextmanager
def chromium(profile: Path) -> Iterator[Cdp]:
    """Headless Chromium with a throw-away profile; killed by its PID when the block ends."""
    browser = subprocess.Popen(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
            "about:blank",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        ws = WebSocket(_page_socket(_debugging_port(profile, browser)), timeout=CDP_TIMEOUT_S)
        try:
            yield Cdp(ws)
        finally:
            ws.close()
    finally:
        browser.terminate()
        try:
            browser.wait(timeout=5)
        except subprocess.TimeoutExpired:
            browser.kill()
            browser.wait(timeout=5)
        shutil.rmtree(profile, ignore_errors=True)


def _cell_text(mode: str) -> str:
    return (
        "(() => { const c = document.querySelector("
        f'\'#try-results tbody tr[data-identity="expired"] td[data-mode="{mode}"]\');'
        " return c ? c.innerText : ''; })()"
    )


def test_clicking_try_expired_shows_strict_400_beside_passthrough_200(tmp_path: Path) -> None:
    up = [
        "up",
        "--strict-port",
        "0",
        "--passthrough-port",
        "0",
        "--backend-port",
        "0",
        "--dashboard-port",
        "0",
    ]
    with started(up, cwd=tmp_path) as process:
        url = process.wait_for_stdout(READY_DASHBOARD)["url"]
        with chromium(tmp_path / "chromium-profile") as page:
            page.call("Page.enable")
            width, height = WINDOW
            page.call(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=height,
                deviceScaleFactor=1,
                mobile=False,
            )
            page.call("Page.navigate", url=url)
            page.wait_for("document.body && document.body.dataset.ready === 'true'")
            page.wait_for("document.querySelectorAll('#identities tbody button').length === 6")

            page.click('#identities button[data-identity="expired"]')
            strict = page.wait_for(_cell_text("Strict"))
            passthrough = page.wait_for(_cell_text("Passthrough"))

            assert "400 Bad Request" in strict
            assert "The SSL certificate error" in strict
            assert "FAILED:certificate has expired" in strict
            assert "not contacted" in strict
            assert "200 OK" in passthrough
            assert "PASSTHROUGH" in passthrough
            assert "X-Client-Cert-Verification: PASSTHROUGH" in passthrough
            page.wait_for("document.querySelectorAll('#request-table tbody tr').length >= 2")
            page.evaluate("window.scrollTo(0, 0)")
            shot = page.call("Page.captureScreenshot", format="png")

            # The controls are native buttons: focus and Enter work like a click.
            page.evaluate(
                "document.querySelector('#identities button[data-identity=\"none\"]').focus()"
            )
            page.press_enter()
            page.wait_for(
                "!!document.querySelector('#try-results tbody tr[data-identity=\"none\"]')"
            )
            # The live table shows the four requests the two tries made, newest first.
            page.wait_for("document.querySelectorAll('#request-table tbody tr').length >= 4")
            rows = page.evaluate(
                "[...document.querySelectorAll('#request-table tbody tr')].map((r) => r.innerText)"
            )
            assert any("CN=demo-client-expired" in row and "expired" in row for row in rows)
            assert (
                page.evaluate("document.querySelectorAll('#request-table th[scope=col]').length")
                == 9
            )

    screenshot = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "dashboard.png")
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    screenshot.write_bytes(base64.b64decode(shot["data"]))
    assert screenshot.read_bytes().startswith(b"\x89PNG")
