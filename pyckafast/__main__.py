"""``python -m pyckafast``: the command line (see :mod:`pyckafast.cli`)."""

import sys

from .cli import main

sys.exit(main())
