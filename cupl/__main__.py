"""`python -m cupl`: the `cupl` command."""

import sys

from cupl.cli import main

sys.exit(main())
