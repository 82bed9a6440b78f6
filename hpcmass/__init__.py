"""hpcmass: galaxy-cluster masses from mock Chandra images with a CNN, as an HPC batch suite."""

__version__ = "0.1.0"
