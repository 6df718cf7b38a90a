"""``python -m emulator`` runs the ``appgw-emulator`` command."""

import sys

from emulator.cli.main import main

sys.exit(main())
