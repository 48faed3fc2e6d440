"""``python -m engram_interp ...`` is the command line (also under ``torchrun ... -m engram_interp``)."""

import sys

from engram_interp.cli import main

sys.exit(main())
