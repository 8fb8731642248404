"""`cupl.mining` is `cupl.method.mining`: the import path of the public API contract."""

import sys

from cupl.method import mining

sys.modules[__name__] = mining
