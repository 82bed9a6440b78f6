"""Batch-system orchestration: submitting the stage chain to SLURM."""
