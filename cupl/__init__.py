"""cupl: completeness and uncertainty of pseudo labels for weakly supervised video anomaly detection.

An executable reproduction of Zhang et al., CVPR 2023, in layers that import only downward:
`cupl.method` (one module per idea of Sec. 3: pooling, models, losses, uncertainty, mining,
evaluate), `cupl.data` and `cupl.config` (feature banks, importers, the embedded benchmark,
configuration), `cupl.experiments` (Algorithm 1 and the runs around it), `cupl.book` (the
notebook chain) and `cupl.cli` (the `cupl` command). `cupl.pooling`, `cupl.models`, ... are
the public import paths of the method modules.
"""

__version__ = "0.1.0"
