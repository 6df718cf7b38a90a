"""How long the pytest plugin's fixtures take per test: PKI + recording backend + gateway.

Issue #7 asks that 100 such tests run in well under ~20 s on a 2-core machine. Two measurements:

1. ``loop``: the fixtures' own work, timed directly: the session PKI once, then per test a
   backend start, a gateway start, one HTTPS request with a client certificate, and both stops
   (the teardown includes the leak checks the fixtures run).
2. ``pytest``: 100 generated tests, each using ``appgw_gateway`` + ``appgw_client`` for one
   request, run by pytest in a subprocess. The figure includes pytest's own start-up and
   collection, so it is what a user's CI would see.

Run: ``python bench/fixture_startup.py [--tests 100]``. Prints one line per measurement.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

GENERATED_TEST = """
    import pytest

    @pytest.mark.parametrize("n", range({count}))
    def test_strict_request(n, appgw_gateway, appgw_client, appgw_pki):
        response = appgw_client(appgw_gateway("strict"), appgw_pki.client).get("/")
        assert response.status == 200
"""


def measure_loop(count: int) -> None:
    from emulator.sync import Gateway
    from emulator.testing import AppgwClient, AppgwPki, RecordingBackend, assert_released

    started = time.perf_counter()
    pki = AppgwPki()
    pki.mode_config("strict")  # certificates, PFX and template: once per session
    client_cert = pki.client
    session_s = time.perf_counter() - started

    per_test: list[float] = []
    for _ in range(count):
        began = time.perf_counter()
        backend = RecordingBackend().start()
        config = pki.mode_config("strict")
        gateway = Gateway.from_config(
            config,
            backends={pool.name: backend.address for pool in config.pools},
            listen={rule.listener.frontend_port: 0 for rule in config.rules},
            server_ca=pki.server_ca,
        ).start()
        client = AppgwClient(gateway.url(), server_ca=gateway.server_ca, cert=client_cert)
        assert client.get("/").status == 200
        ports = list(gateway.ports.values())
        gateway.close()
        assert_released("gateway", gateway.thread, "127.0.0.1", ports)
        backend_port = backend.port
        backend.close()
        assert_released("backend", backend.thread, "127.0.0.1", [backend_port])
        per_test.append(time.perf_counter() - began)
    print(
        f"loop: session PKI + template {session_s * 1000:.1f} ms once; per test (backend + "
        f"gateway start, 1 mTLS request, stop + leak checks): "
        f"median {statistics.median(per_test) * 1000:.1f} ms, "
        f"max {max(per_test) * 1000:.1f} ms, total {sum(per_test):.2f} s for {count} tests"
    )


def measure_pytest(count: int) -> None:
    with tempfile.TemporaryDirectory(prefix="appgw-bench-") as tmp:
        Path(tmp, "test_generated.py").write_text(
            textwrap.dedent(GENERATED_TEST.format(count=count)), encoding="utf-8"
        )
        began = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", tmp],
            capture_output=True,
            text=True,
            cwd=tmp,
            check=False,
        )
        wall_s = time.perf_counter() - began
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-3000:], sep="\n")
        raise SystemExit(f"pytest failed: {summary}")
    print(
        f"pytest: {count} tests in {wall_s:.2f} s wall (incl. interpreter + pytest start-up), "
        f"{wall_s / count * 1000:.1f} ms per test; pytest says: {summary}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=100, help="tests per measurement")
    parser.add_argument(
        "--only", choices=["loop", "pytest"], help="run one of the two measurements"
    )
    args = parser.parse_args()
    if args.only != "pytest":
        measure_loop(args.tests)
    if args.only != "loop":
        measure_pytest(args.tests)


if __name__ == "__main__":
    main()
