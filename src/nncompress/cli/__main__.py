"""``python -m nncompress.cli``: the command line, as ``python -m nncompress``."""

import sys

from nncompress.cli import main

sys.exit(main())
