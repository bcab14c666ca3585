"""``python -m nncompress``: the command line."""

import sys

from nncompress.cli import main

sys.exit(main())
