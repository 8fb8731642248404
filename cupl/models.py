"""`cupl.models` is `cupl.method.models`: the import path of the public API contract."""

import sys

from cupl.method import models

sys.modules[__name__] = models
