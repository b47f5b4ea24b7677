"""``python -m querylog``: the same as the ``querylog`` command."""

import sys

from querylog.cli import main

sys.exit(main())
