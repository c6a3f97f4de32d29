"""`python -m diffsolve.cli ...` runs the `diffsolve` command."""

import sys

from . import main

sys.exit(main())
