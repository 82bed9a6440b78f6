"""The catalog stage: the cluster sample in the TNG file layout, synthetic or TNG300.

- ``physics``: the synthetic population and its gas profiles (pure functions).
- ``generate``: synthetic clusters written as TNG cutouts and group catalogue.
- ``tng``: the TNG layout, read and measured by one loader for both sources.
- ``stage`` / ``cli``: ``hpcmass catalog``; ``fetch`` / ``fetch_cli``: ``hpcmass fetch-tng``.
- ``table``: :func:`load_catalog`, what later stages read.
"""

from .table import Catalog, load_catalog

__all__ = ["Catalog", "load_catalog"]
