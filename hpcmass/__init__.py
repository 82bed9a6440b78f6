"""hpcmass: galaxy-cluster masses from mock Chandra images with a CNN, as an HPC batch suite."""

import os

__version__ = "0.1.0"

# TensorFlow turns its oneDNN CPU kernels on by itself only on CPUs with AVX-512 VNNI/BF16 or AMX
# (TF 2.9 release notes); on AVX2 machines they stay off, and there turning them on halves the
# CNN's training step (2-core AMD EPYC, one thread: 321 -> 161 ms per batch of 32; issue 13).
# Read when TensorFlow is imported, so set here, before any stage imports it; export
# TF_ENABLE_ONEDNN_OPTS=0 to compare.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
