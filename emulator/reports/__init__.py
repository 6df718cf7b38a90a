"""Pure reports: values in, text or JSON-ready data out; no sockets, no trio, no clock.

:mod:`.summary` describes what a gateway config will run (the startup screen, ``validate``,
the dashboard); :mod:`.check_ca` judges a trusted-client-CA upload (``check-ca`` and the
dashboard); :mod:`.header_decoding` shows what a backend parses from a forwarded certificate
header (``decode-header``, the test vectors). The CLI and the dashboard print them.
"""
