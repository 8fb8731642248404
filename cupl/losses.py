"""`cupl.losses` is `cupl.method.losses`: the import path of the public API contract."""

import sys

from cupl.method import losses

sys.modules[__name__] = losses
