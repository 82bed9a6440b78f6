"""The observe stage: mock Chandra ACIS-I images of each cluster with pyXSIM and SOXS.

- :mod:`.simulate` -- one cluster: photons, projections, instrument, images (no MPI).
- :mod:`.imaging` -- the event list -> training image rule (also used by ``hpcmass predict``).
- :mod:`.xray` -- which data (SOXS's staged files or the approximations) and SOXS set up offline.
- :mod:`.approx` -- the suite's own labelled approximations of SOXS's data files.
- :mod:`.stage_data` -- fetching SOXS's real files on a machine with network.
- :mod:`.stage` -- ``run(workdir, params, comm=None)``: every cluster, as an MPI task farm.
- :mod:`.cli`, :mod:`.stage_data_cli` -- ``hpcmass observe`` and ``hpcmass stage-data``.
"""
