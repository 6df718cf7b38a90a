import trio
from tests.e2e.stack import Stack, PkiBundle, client_context, parse_responses, https_request
from tests.e2e.test_proxy_http import raw_exchange
from emulator.demo import PASSTHROUGH_LISTENER

async def test_http10(demo_stack: Stack, pki: PkiBundle) -> None:
    port = demo_stack.port(PASSTHROUGH_LISTENER)
    for req in [b"GET /ten HTTP/1.0\r\n\r\n", b"GET /ten HTTP/1.0\r\nHost: localhost\r\n\r\n",
                b"GET /te HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nabcde"]:
        data = await trio.to_thread.run_sync(raw_exchange, port, client_context(pki), req)
        print(repr(data[:300]))
    print((await https_request(port, client_context(pki))).status)
