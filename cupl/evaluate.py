"""`cupl.evaluate` is `cupl.method.evaluate`: the import path of the public API contract."""

import sys

from cupl.method import evaluate

sys.modules[__name__] = evaluate
