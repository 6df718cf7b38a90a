"""``decode-header`` and ``vectors``: what a backend parses from a forwarded certificate header,
and test vectors for anyone's decoder."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from emulator.cli.console import say


def add_header_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    decode = sub.add_parser(
        "decode-header",
        help="what a backend parses from a forwarded certificate header value, and the "
        "classic decoding mistakes to avoid",
    )
    decode.add_argument(
        "value", metavar="VALUE|-", help="the header value as received (- reads it from stdin)"
    )
    decode.add_argument("--output", "-o", choices=["text", "json"], default="text")
    decode.set_defaults(handler=_cmd_decode_header)
    vectors = sub.add_parser(
        "vectors",
        help="write test vectors (header values + expected parse results) for your decoder",
    )
    vectors.add_argument("directory", type=Path, metavar="DIR")
    vectors.set_defaults(handler=_cmd_vectors)


#: Read from stdin at most this much: a certificate header is a few KB.
_STDIN_LIMIT = 1024 * 1024


def _cmd_decode_header(args: argparse.Namespace) -> int:
    from emulator.reports.header_decoding import decode_header, render_text

    value = sys.stdin.read(_STDIN_LIMIT) if args.value == "-" else args.value
    if args.value == "-":
        # A shell pipeline adds a final newline (echo, a file); a header value never has one.
        value = value.rstrip("\r\n")
    decoded = decode_header(value)
    if args.output == "json":
        say(json.dumps(decoded.to_json(), indent=2, ensure_ascii=False))
    else:
        say(render_text(decoded))
    return 1 if decoded.error else 0


def _cmd_vectors(args: argparse.Namespace) -> int:
    from emulator.cli.header_vectors import VECTORS_FILE, write_vectors

    written = write_vectors(args.directory)
    target = args.directory / VECTORS_FILE
    say(f"wrote {len(written)} files to {args.directory}; the vectors: {target}")
    return 0
