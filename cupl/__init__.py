"""cupl: completeness and uncertainty of pseudo labels for weakly supervised video anomaly detection.

An executable reproduction of Zhang et al., CVPR 2023. One idea per module:
`pooling` (Sec. 3.1), `models` and `losses` (Sec. 3.2), `uncertainty` and `mining`
(Sec. 3.3), `train` (Algorithm 1), `evaluate` (Sec. 4.1), `data` (feature banks).
"""

__version__ = "0.1.0"
