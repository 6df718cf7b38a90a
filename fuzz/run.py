"""Run the gateway's fuzz properties for longer than CI does.

The properties live in ``tests/e2e/test_fuzz.py`` (hypothesis; see its docstring): the TLS
entry (bytes before or instead of a ClientHello) and the HTTP entry (almost-valid requests after
a good handshake); the HTTP/2 codec's in ``tests/unit/test_http2_fuzz.py``. CI runs 50 examples
of each (200 of the codec's); this runs as many as you ask, keeps hypothesis's example database
in ``fuzz/.hypothesis`` so a failure found once is tried first next time, and
stops after ``--max-minutes`` whatever happens::

    python fuzz/run.py                         # 2,000 examples per property
    python fuzz/run.py --examples 20000 --max-minutes 60
    python fuzz/run.py --seed 12345 -k tls     # reproduce a run; only the TLS property

Everything runs on 127.0.0.1 in one pytest process. Exit code: pytest's (0: no failure).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Final

HERE: Final = Path(__file__).resolve().parent
REPO: Final = HERE.parent
DEFAULT_EXAMPLES: Final = 2000
DEFAULT_MAX_MINUTES: Final = 30.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--examples",
        type=int,
        default=DEFAULT_EXAMPLES,
        help="examples per property (default %(default)s)",
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=DEFAULT_MAX_MINUTES,
        help="stop the run after this long (default %(default)s)",
    )
    parser.add_argument("--seed", type=int, help="hypothesis seed, to repeat a run")
    parser.add_argument("-k", dest="keyword", help="only properties matching (pytest -k)")
    args = parser.parse_args(argv)
    env = dict(
        os.environ,
        APPGW_FUZZ_EXAMPLES=str(args.examples),
        APPGW_FUZZ_DATABASE=str(HERE / ".hypothesis"),
    )
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        str(REPO / "tests" / "e2e" / "test_fuzz.py"),
        # The HTTP/2 codec's properties (sans-I/O, no gateway needed).
        str(REPO / "tests" / "unit" / "test_http2_fuzz.py"),
    ]
    if args.seed is not None:
        command.append(f"--hypothesis-seed={args.seed}")
    if args.keyword:
        command += ["-k", args.keyword]
    try:
        return subprocess.run(
            command, cwd=REPO, env=env, timeout=args.max_minutes * 60, check=False
        ).returncode
    except subprocess.TimeoutExpired:
        print(
            f"fuzz: stopped after {args.max_minutes:g} minutes without a failure so far",
            file=sys.stderr,
        )
        return 0


if __name__ == "__main__":
    sys.exit(main())
