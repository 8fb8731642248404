"""Feature banks (HDF5), the embedded synthetic benchmark and real-format importers.

`FeatureBank`, `Split` and `write_bank` are loaded on first use, so that importing a
submodule (as the `cupl` command does) stays light.
"""

_EXPORTS = {"FeatureBank": "cupl.data.bank", "write_bank": "cupl.data.bank", "Split": "cupl.data.split"}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'cupl.data' has no attribute {name!r}")
