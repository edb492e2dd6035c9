"""`python -m vaeserve` runs the CLI."""

import sys

from vaeserve.cli import main

sys.exit(main())
