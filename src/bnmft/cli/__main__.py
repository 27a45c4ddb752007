"""``python -m bnmft.cli``: the same as the ``bnmft`` command."""

import sys

from .app import main

sys.exit(main())
