"""Random streams keyed by the work unit, never by the rank: results do not depend on rank count.

``rng(seed, "observe", cluster, axis)`` gives the same generator wherever and whenever that
unit runs (first run, resume, 1 or 64 ranks).
"""

from __future__ import annotations

import hashlib

import numpy as np


def _key(part) -> int:
    if isinstance(part, (int, np.integer)):
        if part < 0:
            raise ValueError(f"seed key parts must be non-negative, got {part}")
        return int(part)
    return int.from_bytes(hashlib.sha256(str(part).encode()).digest()[:8], "little")


def seed_sequence(seed: int, *keys) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(seed), *(_key(k) for k in keys)])


def rng(seed: int, *keys) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(seed_sequence(seed, *keys)))


def int_seed(seed: int, *keys) -> int:
    """A 32-bit integer seed for libraries that want one (SOXS/pyXSIM prng=, TensorFlow)."""
    return int(seed_sequence(seed, *keys).generate_state(1, np.uint32)[0])
