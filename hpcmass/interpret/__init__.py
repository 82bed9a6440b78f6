"""The interpret stage: DeepDream-style input gradients of the mass CNN, radial ΔN/N profiles.

- :mod:`.dream`: the procedure as pure functions; :mod:`.stage`: ``run(workdir, params, comm=None)``;
  :mod:`.cli`: ``hpcmass interpret``.
"""
