"""The ``appgw-emulator`` command line: :mod:`.main` and one module per command.

Nothing outside this package imports it (``tests/unit/test_layering.py``); the entry points are
``emulator.cli.main:main`` (the console script) and ``python -m emulator``. The ``verify``
command's scenario runner (:mod:`.verify_matrix`, a trio program that starts the gateway and
the clients) and its report (:mod:`.verify_report`) live here as well, since only it uses them.
"""
