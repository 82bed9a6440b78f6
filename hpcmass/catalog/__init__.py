"""The catalog stage: the cluster sample in the TNG file layout, synthetic or TNG300.

- ``physics``: the synthetic population and its gas profiles (pure functions).
- ``generate``: synthetic clusters written as TNG cutouts and group catalogue.
- ``tng``: the TNG layout, read and measured by one loader for both sources.
- ``stage``: ``run(workdir, params, comm=None)``; ``cli``: ``hpcmass catalog``.
- ``fetch`` / ``fetch_cli``: ``hpcmass fetch-tng``.

Later stages read the catalogue with :func:`hpcmass.store.readers.load_catalog`.
"""
