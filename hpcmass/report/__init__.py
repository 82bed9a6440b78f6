"""The report stage: scatter statistics, the core-excised L_X baseline, the paper's figures, HTML.

- :mod:`.stats`, :mod:`.lx`, :mod:`.response`: the statistics and the L_X baseline (pure functions);
- :mod:`.build`, :mod:`.figures`, :mod:`.html`: the report from the store's products;
- :mod:`.stage`: ``run(workdir, params, comm=None)``; :mod:`.cli`: ``hpcmass report``.
"""
