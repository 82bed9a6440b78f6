"""The dataset stage: mass-cyclic cross-validation folds.

- :mod:`.folds`: the fold rule (pure); :mod:`.stage`: ``run(workdir, params, comm=None)``; :mod:`.cli`: ``hpcmass dataset``.

The 24 views per cluster are made on the fly in training (:mod:`hpcmass.images`, :mod:`hpcmass.train.pipeline`).
"""
