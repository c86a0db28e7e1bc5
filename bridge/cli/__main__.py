"""``python -m maedaw.bridge.cli``: the ``maedaw`` command (the daemon and tests start it so)."""

import sys

from maedaw.bridge.cli import main

sys.exit(main())
