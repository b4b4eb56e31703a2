"""``python -m mmusim``: the ``mmusim`` command, for when the console script is not on PATH."""

import sys

from mmusim.cli import main

sys.exit(main())
