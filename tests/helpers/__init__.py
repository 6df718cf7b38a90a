"""What the test modules share, so that no test module imports another.

- :mod:`tests.helpers.pki`: the suite's PKI, the pytest plugin's :class:`AppgwPki` plus files.
- :mod:`tests.helpers.http`: the replies, the stdlib clients and raw-socket helpers.
- :mod:`tests.helpers.logs`: what the gateway logged (internal errors, events).
- :mod:`tests.helpers.ports`: free and re-bindable ports on 127.0.0.1.
- :mod:`tests.helpers.stack`: a stub backend and a gateway in a nursery.
- :mod:`tests.helpers.backends`: backends that misbehave on purpose.
- :mod:`tests.helpers.processes`: the command line as subprocesses.
- :mod:`tests.helpers.routing`, :mod:`tests.helpers.verification`,
  :mod:`tests.helpers.dashboard`: the stacks several test modules drive.

The fixtures themselves are in ``tests/conftest.py`` and ``tests/e2e/conftest.py``.
"""
