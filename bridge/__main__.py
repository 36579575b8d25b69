"""`python -m bridge` is the same as the `clockin-bridge` console script."""

import sys

from bridge.cli import main

sys.exit(main())
