"""`python -m diffsolve ...` runs the `diffsolve` command (as `torchrun -m diffsolve` will)."""

import sys

from .cli import main

sys.exit(main())
