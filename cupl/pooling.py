"""`cupl.pooling` is `cupl.method.pooling`: the import path of the public API contract."""

import sys

from cupl.method import pooling

sys.modules[__name__] = pooling
