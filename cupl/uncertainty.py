"""`cupl.uncertainty` is `cupl.method.uncertainty`: the import path of the public API contract."""

import sys

from cupl.method import uncertainty

sys.modules[__name__] = uncertainty
