"""The dataset stage: 24 views per cluster, mass-cyclic folds, input scaling, the tf.data pipeline."""
