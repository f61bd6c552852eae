"""``python -m anyprune``: the command line (see :mod:`anyprune.cli`)."""

import sys

from .cli import main

sys.exit(main())
