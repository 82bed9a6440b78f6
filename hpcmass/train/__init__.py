"""The train stage: the paper's CNN trained once per cross-validation fold.

- :mod:`.model`: the CNN (raw counts in, log10 M500c out), ``load_fold_model``, ``predict_log_m500c``;
- :mod:`.fold`: ``train_fold`` (one fold, single process or Horovod group) and ``FoldRun`` (a fold's record);
- :mod:`.stack`: ``train_stack``, several folds side by side as one model of towers (``train.stack_folds``);
- :mod:`.stopping`: the stopping rules (the paper's, plateau); :mod:`.checkpoint`: per-epoch atomic checkpoints;
- :mod:`.distributed`: Horovod inside a fold; :mod:`.results`: fold results and the store;
- :mod:`.pipeline`: the views made on the fly by tf.data; :mod:`.scaling`: the input scaling (first layer);
- :mod:`.files`: where a fold's files live;
- :mod:`.stage`: ``run(workdir, params, comm=None)``; :mod:`.cli`: ``hpcmass train``.
"""
