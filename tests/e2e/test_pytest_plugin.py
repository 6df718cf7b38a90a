"""The pytest plugin (issue #7), exercised the way a user meets it: generated test files run by
pytest's ``pytester`` in a fresh directory, where only the installed entry point provides the
fixtures. No ``trio_mode`` there, so async tests carry ``@pytest.mark.trio`` as a user's would.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib.metadata import entry_points

import pytest

pytest_plugins = ["pytester"]

EVERY_FIXTURE = """
    import threading

    import pytest


    def test_strict_forwards_a_valid_certificate(
        appgw_gateway, appgw_client, appgw_pki, appgw_backend
    ):
        gateway = appgw_gateway("strict")
        response = appgw_client(gateway, appgw_pki.client).get("/orders?id=7")
        assert response.status == 200
        assert response.json()["path"] == "/orders"
        seen = appgw_backend.last
        assert seen.certificate.subject == "CN=appgw-test-client"
        assert seen.header_values("X-Client-Cert-Verification") == ("SUCCESS",)
        gateway.wait_for_access()
        assert gateway.access_log[-1].sslClientVerify == "SUCCESS"


    def test_strict_answers_400_without_a_certificate(appgw_gateway, appgw_client, appgw_backend):
        response = appgw_client(appgw_gateway("strict")).get("/")
        assert response.status == 400
        assert b"No required SSL certificate was sent" in response.body
        assert appgw_backend.requests == ()


    def test_passthrough_forwards_an_expired_certificate(
        appgw_gateway, appgw_client, appgw_pki, appgw_backend
    ):
        response = appgw_client(appgw_gateway("passthrough"), appgw_pki.expired).get("/")
        assert response.status == 200
        assert appgw_backend.last.certificate.subject == "CN=appgw-test-expired"
        assert appgw_backend.last.header_values("X-Client-Cert-Verification") == (
            "PASSTHROUGH",
        )


    @pytest.mark.appgw_modes("strict", "passthrough")
    def test_each_mode_with_an_unrelated_certificate(
        appgw_gateway, appgw_client, appgw_pki, appgw_mode
    ):
        response = appgw_client(appgw_gateway(), appgw_pki.unrelated).get("/")
        assert response.status == {"strict": 400, "passthrough": 200}[appgw_mode]


    def test_a_template_dict_with_its_own_parameters(appgw_gateway, appgw_client, appgw_pki):
        from emulator.arm.demo_template import demo_template

        template = demo_template(
            strict_port=443, passthrough_port=444, backend_host="10.0.0.4", backend_port=8080
        )
        gateway = appgw_gateway(template=template, parameters=appgw_pki.demo_parameters())
        assert sorted(gateway.ports) == ["passthrough-listener", "strict-listener"]
        client = appgw_client(gateway, appgw_pki.client, listener="strict-listener")
        assert client.get("/").status == 200


    @pytest.mark.trio
    async def test_async_tests_use_the_same_fixtures(appgw_gateway, appgw_client, appgw_pki):
        gateway = appgw_gateway("strict")
        assert appgw_client(gateway, appgw_pki.client).get("/").status == 200


    def test_zz_runs_last_no_emulator_thread_survived_the_earlier_tests():
        alive = [t.name for t in threading.enumerate() if t.name.startswith("appgw-emulator")]
        assert alive == []
"""

WRONG_EXPECTATIONS = """
    def test_expects_200_without_a_certificate(appgw_gateway, appgw_client):
        response = appgw_client(appgw_gateway("strict")).get("/")
        assert response.status == 200


    def test_expects_the_backend_to_have_seen_it(appgw_gateway, appgw_client, appgw_backend):
        appgw_client(appgw_gateway("strict")).get("/")
        assert appgw_backend.last.certificate is None
"""


def test_the_plugin_is_registered_by_entry_point() -> None:
    plugins = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert plugins.get("appgw_emulator") == "emulator.testing"


def test_a_generated_suite_using_every_fixture_passes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_generated=textwrap.dedent(EVERY_FIXTURE))
    result = pytester.runpytest_subprocess("-v", "-p", "no:randomly")
    result.assert_outcomes(passed=8)
    result.stdout.fnmatch_lines(
        [
            "*test_each_mode_with_an_unrelated_certificate?strict? PASSED*",
            "*test_each_mode_with_an_unrelated_certificate?passthrough? PASSED*",
        ]
    )


def test_a_wrong_expectation_fails_with_a_readable_message(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_wrong=textwrap.dedent(WRONG_EXPECTATIONS))
    result = pytester.runpytest()
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*assert 400 == 200",
            "*<Response 400 Bad Request (400 No required SSL certificate was sent) for GET "
            "https://localhost:*/>.status",
            "*AssertionError: the backend received no request",
        ]
    )


def test_an_unknown_mode_in_the_marker_is_a_clear_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_marker="""
        import pytest

        @pytest.mark.appgw_modes("lenient")
        def test_x(appgw_mode):
            pass
        """
    )
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(
        ["*unknown SSL profile mode 'lenient'; use one of: strict, passthrough*"]
    )
    assert result.ret != 0


def test_the_marker_is_registered_for_strict_markers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_marker="""
        import pytest

        @pytest.mark.appgw_modes()
        def test_x(appgw_mode):
            assert appgw_mode in ("strict", "passthrough")

        def test_default_mode(appgw_mode):
            assert appgw_mode == "strict"
        """
    )
    result = pytester.runpytest("--strict-markers")
    result.assert_outcomes(passed=3)


def test_importing_the_plugin_imports_neither_trio_nor_crypto() -> None:
    script = (
        "import sys, emulator.testing\n"
        "heavy = ('trio', 'OpenSSL', 'cryptography', 'h11', 'backend_stub', 'emulator.sync')\n"
        "print(sorted(name for name in heavy if name in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"


def test_the_unrelated_certificate_comes_from_the_exposed_unrelated_root() -> None:
    from emulator.testing import AppgwPki

    pki = AppgwPki()

    assert pki.unrelated.cert.issuer == pki.unrelated_root.cert.subject
    assert pki.unrelated_root.cert.subject not in {
        pki.client_root.cert.subject,
        pki.client_ca.cert.subject,
    }
    assert pki.unrelated_root is pki.unrelated_root  # made once


HTTP2_CLIENT = """
    from dataclasses import replace


    def test_the_client_speaks_h2_when_the_gateway_offers_it(
        appgw_gateway, appgw_client, appgw_pki, appgw_backend
    ):
        config = replace(appgw_pki.mode_config("strict"), enable_http2=True)
        gateway = appgw_gateway(template=config)
        response = appgw_client(gateway, appgw_pki.client, http2=True).get("/h2")
        assert (response.status, response.http_version) == (200, "HTTP/2")
        assert appgw_backend.last.header_values("X-Client-Cert-Verification") == ("SUCCESS",)
        gateway.wait_for_access()
        assert gateway.access_log[-1].httpVersion == "HTTP/2.0"
        # The default client is the standard library's, over HTTP/1.1.
        assert appgw_client(gateway, appgw_pki.client).get("/").http_version == "HTTP/1.1"


    def test_without_enable_http2_the_h2_client_falls_back(appgw_gateway, appgw_client, appgw_pki):
        response = appgw_client(appgw_gateway("strict"), appgw_pki.client, http2=True).get("/")
        assert (response.status, response.http_version) == (200, "HTTP/1.1")
"""


def test_the_client_can_ask_for_h2(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_h2=textwrap.dedent(HTTP2_CLIENT))
    result = pytester.runpytest_subprocess("-v", "-p", "no:randomly")
    result.assert_outcomes(passed=2)
